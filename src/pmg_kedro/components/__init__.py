"""Models, metrics, prompts and data sources. No Kedro imports here."""
