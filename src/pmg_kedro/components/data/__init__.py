"""Data: scene sources and their validation, images, behavior texts and prompts, item terms, the protocol's splits. Imports only `reporting`."""
