"""Behavior summarization (paper §3.2.1): histories, item images and conversations -> texts x, y."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
