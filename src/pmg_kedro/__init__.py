"""pmg-kedro: PMG (personalized multimodal generation with LLMs) as a Kedro project."""

from .known_warnings import filter_known_warnings

__version__ = "0.1.0"

# Here, the first project module Kedro imports, so that every command's first screen is its own.
filter_known_warnings()
