"""Soft preference embeddings: the bias-correction LLM trained through the generator (§3.3)."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
