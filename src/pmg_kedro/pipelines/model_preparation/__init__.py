"""Prepares the models: the icon corpus, and the embedded tiny scorer and generator (DESIGN §4)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
