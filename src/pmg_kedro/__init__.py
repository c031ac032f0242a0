"""pmg-kedro: PMG (personalized multimodal generation with LLMs) as a Kedro project."""

__version__ = "0.1.0"
