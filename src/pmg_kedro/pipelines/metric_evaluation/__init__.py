"""Metric evaluation (paper §4.1.3, §4.2–4.4): Table 1/2-shaped tables and Figure 4–8 shapes."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
