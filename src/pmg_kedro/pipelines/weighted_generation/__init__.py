"""Weighted generation and z-score selection (paper §3.4) with the Table 1 ablation variants."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
