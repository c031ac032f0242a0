"""POG (Alibaba iFashion, Chen et al. KDD 2019) files placed by the user in data/01_raw/costume/pog/.

Three files (comma-separated, ids separated by ';'):
  user_data.txt    user_id,item_id;item_id;...,outfit_id   (clicks in order)
  item_data.txt    item_id,cate_id,pic_url,title
  outfit_data.txt  outfit_id,item_id;item_id;...
Images are `images/<item_id>.<ext>` beside them (the pic_url addresses cannot be fetched here).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..images import STANDALONE
from . import SceneTables

FILES = ("user_data.txt", "item_data.txt", "outfit_data.txt")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


class POGFormatError(ValueError):
    """A POG line that does not have the documented shape; names file, line and field."""


def is_present(folder: str | None) -> bool:
    """True when all three POG files are in `folder`."""
    return bool(folder) and all((Path(folder) / f).is_file() for f in FILES)


def _lines(path: Path):
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            line = line.rstrip("\n\r")
            if line.strip():
                yield number, line


def _ids(value: str, path: Path, number: int, field: str) -> list[str]:
    ids = [v.strip() for v in value.split(";")]
    if not ids or any(not v for v in ids):
        raise POGFormatError(
            f"{path}:{number} field '{field}': expected item ids separated by ';', got {value!r}"
        )
    return ids


def _split(line: str, path: Path, number: int, fields: tuple[str, ...]) -> list[str]:
    parts = line.split(",", len(fields) - 1)
    if len(parts) != len(fields):
        raise POGFormatError(
            f"{path}:{number}: expected {len(fields)} comma-separated fields "
            f"({', '.join(fields)}), got {len(parts)}: {line!r}"
        )
    for name, value in zip(fields, parts, strict=True):
        if not value.strip() and name != "pic_url":
            raise POGFormatError(f"{path}:{number} field '{name}': expected a value, got ''")
    return [p.strip() for p in parts]


def read_files(folder: str) -> dict[str, pd.DataFrame]:
    """Parse the three files; raise POGFormatError naming the file, line and field of a bad row."""
    root = Path(folder)
    users, items, outfits = [], [], []
    for number, line in _lines(root / "user_data.txt"):
        user_id, item_ids, outfit_id = _split(
            line, root / "user_data.txt", number, ("user_id", "item_ids", "outfit_id")
        )
        ids = _ids(item_ids, root / "user_data.txt", number, "item_ids")
        users += [(user_id, item_id, pos, outfit_id, number) for pos, item_id in enumerate(ids)]
    for number, line in _lines(root / "item_data.txt"):
        # title may contain commas: the first three fields are split off, the rest is the title
        item_id, cate_id, pic_url, title = _split(
            line, root / "item_data.txt", number, ("item_id", "cate_id", "pic_url", "title")
        )
        items.append((item_id, cate_id, pic_url, title, number))
    for number, line in _lines(root / "outfit_data.txt"):
        outfit_id, item_ids = _split(
            line, root / "outfit_data.txt", number, ("outfit_id", "item_ids")
        )
        outfits.append((outfit_id, _ids(item_ids, root / "outfit_data.txt", number, "item_ids")))
    return {
        "clicks": pd.DataFrame(
            users, columns=["user_id", "item_id", "position", "outfit_id", "line"]
        ),
        "items": pd.DataFrame(items, columns=["item_id", "cate_id", "pic_url", "title", "line"]),
        "outfits": pd.DataFrame(outfits, columns=["outfit_id", "item_ids"]),
    }


def find_images(folder: str) -> dict[str, str]:
    """`images/<item_id>.<ext>` files keyed by item_id."""
    images = Path(folder) / "images"
    if not images.is_dir():
        return {}
    return {p.stem: str(p) for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def build_tables(raw: dict[str, pd.DataFrame], images: dict[str, str], folder: str) -> SceneTables:
    """POG clicks, items and image index; every item must have an image file."""
    items_raw = raw["items"]
    dup = items_raw[items_raw["item_id"].duplicated(keep=False)]
    if len(dup):
        lines = ", ".join(
            f"line {n} ({i!r})" for i, n in zip(dup["item_id"], dup["line"], strict=True)
        )
        raise POGFormatError(f"{folder}/item_data.txt field 'item_id': duplicated ids at {lines}")
    items = items_raw.drop(columns="line").reset_index(drop=True)
    items["caption"] = items["title"]

    clicks = raw["clicks"]
    interactions = pd.DataFrame(
        {
            "user_id": clicks["user_id"],
            "item_id": clicks["item_id"],
            # POG has no click times: the order inside a user's line is the order of clicks
            "timestamp": clicks["position"].astype("int64"),
            "outfit_id": clicks["outfit_id"],
            "simulated": False,
        }
    )
    users = interactions.groupby("user_id").size().rename("n_clicks").reset_index()
    users["simulated"] = False

    without = [i for i in items["item_id"] if i not in images]
    if without:
        shown = ", ".join(f"images/{i}.*" for i in without[:20])
        raise POGFormatError(
            f"{folder}: {len(without)} items of item_data.txt have no image file: {shown}"
        )
    image_index = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "image_path": items["item_id"].map(images),
            "image_offset": STANDALONE,
        }
    )
    counts = {
        "pog_click_lines": int(clicks["line"].nunique()),
        "clicks": len(interactions),
        "users": len(users),
        "items": len(items),
        "outfits": len(raw["outfits"]),
    }
    return SceneTables(items, interactions, image_index, users, f"POG files in {folder}", counts)
