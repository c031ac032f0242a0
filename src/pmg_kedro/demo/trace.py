"""The trace of one request: everything one response shows, from the behavior texts to the chosen
image and the one-image baseline (paper Figures 2, 3 and 7); `render` turns it into HTML and JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from PIL import Image

from ..components.method.pmg import PMGSettings, Variant
from .requests import DemoRequest


@dataclass
class Trace:
    """Everything one response shows (paper Figures 2, 3 and 7 for this request)."""

    trace_id: str
    request: DemoRequest
    source: dict[str, Any]  # kind, user_id, simulated
    history: list[dict[str, Any]]  # item_id, text (x_i), image (PIL or None)
    target: dict[str, Any]  # item_id, text (x^t), image, note
    behavior: dict[str, Any]  # history_texts, target_text, conversation, conversation_summary
    preference_keywords: dict[str, Any]  # one row of the k^p table
    target_keywords: dict[str, Any]  # one row of the k^t table
    stored_keywords: dict[str, Any] | None  # what the last run wrote for this user
    soft: dict[str, Any]  # used, source, why, shape
    settings: PMGSettings
    variant: Variant
    baseline_variant: Variant
    selections: pd.DataFrame  # SELECTION_COLUMNS, one row per candidate
    images: dict[str, Image.Image]  # candidates by image_key
    baseline: pd.DataFrame  # the baseline's one row
    baseline_image: Image.Image
    seconds: dict[str, float]
    provenance: dict[str, Any]

    @property
    def chosen(self) -> pd.Series:
        return self.selections[self.selections["chosen"]].iloc[0]
