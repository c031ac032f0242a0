"""Project-specific Kedro datasets for the raw scene sources."""
