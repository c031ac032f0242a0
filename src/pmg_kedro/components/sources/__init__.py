"""Readers of the raw scene data (registry packages and user-provided folders).

Each scene module turns its raw input into the same four tables (`SceneTables`), so one
ingestion pipeline serves every scene.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd


@dataclass
class SceneTables:
    """The validated tables of one scene and the counts of what was read and filtered."""

    items: pd.DataFrame
    interactions: pd.DataFrame
    image_index: pd.DataFrame
    users: pd.DataFrame
    source: str
    counts: dict[str, int] = field(default_factory=dict)
    simulated: bool = False


def empty_image_index() -> pd.DataFrame:
    """An image index with no rows (a scene without item images)."""
    return pd.DataFrame(
        {
            "item_id": pd.Series(dtype=str),
            "image_path": pd.Series(dtype=str),
            "image_offset": pd.Series(dtype="int64"),
        }
    )
