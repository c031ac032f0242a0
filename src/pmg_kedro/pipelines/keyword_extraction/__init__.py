"""Keyword extraction (paper §3.2.2): behavior texts -> preference keywords k^p, target keywords k^t."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
