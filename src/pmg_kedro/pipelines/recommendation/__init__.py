"""Recommendation (paper §4.5, Table 3): MMGCN with item and user image features."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
