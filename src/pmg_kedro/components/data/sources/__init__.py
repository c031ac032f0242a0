"""Readers of the raw scene data (registry packages and user-provided folders).

Each scene module turns its raw input into the same four tables (`SceneTables`), so one
ingestion pipeline serves every scene.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pmg_kedro.components.data.defects import Defect

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")

logger = logging.getLogger(__name__)


@dataclass
class SceneTables:
    """The tables of one scene, the counts of what was read and filtered, and the defects the
    reader found (rows it could not use: `validation.validate_scene` raises them with the rest)."""

    items: pd.DataFrame
    interactions: pd.DataFrame
    image_index: pd.DataFrame
    users: pd.DataFrame
    source: str
    counts: dict[str, int] = field(default_factory=dict)
    simulated: bool = False
    defects: list[Defect] = field(default_factory=list)


def empty_image_index() -> pd.DataFrame:
    """An image index with no rows (a scene without item images)."""
    return pd.DataFrame(
        {
            "item_id": pd.Series(dtype=str),
            "image_path": pd.Series(dtype=str),
            "image_offset": pd.Series(dtype="int64"),
        }
    )


def image_files(folder: str | Path | None) -> dict[str, list[str]]:
    """Image files of a folder by stem (`<item_id>.<ext>`, ext in IMAGE_SUFFIXES), paths sorted.

    Files with another suffix are not images of the scene: they are counted and logged, not read.
    A stem with several files is returned with all of them (the reader reports it as a defect).
    """
    found: dict[str, list[str]] = defaultdict(list)
    if not folder or not Path(folder).is_dir():
        return {}
    ignored = []
    for path in sorted(Path(folder).iterdir()):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            found[path.stem].append(str(path))
        else:
            ignored.append(path.name)
    if ignored:
        logger.warning(
            "%s: %d files ignored (not %s): %s",
            folder,
            len(ignored),
            "/".join(IMAGE_SUFFIXES),
            ", ".join(ignored[:10]),
        )
    return dict(found)
