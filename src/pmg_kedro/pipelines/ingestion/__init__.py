"""Ingestion: raw scene data to validated items, interactions, image index, users and splits."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
