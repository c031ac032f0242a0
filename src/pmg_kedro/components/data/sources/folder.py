"""A scene from a folder of files: the one generic source (`kedro pmg add-scene`, DESIGN.md §11).

The folder (docs/your-own-data.md):
  items.csv | items.parquet                 item_id, title; optional description; optional image
                                            (a path relative to the folder); every further column
                                            is an item attribute (category, colour, brand, ...)
  images/<item_id>.<png|jpg|jpeg|webp>      the items' images, when items have no `image` column
  interactions.csv | interactions.parquet   user_id, item_id, timestamp (integer or ISO 8601);
                                            optional rating (positive: rating >= the scene's
                                            `positive_min_rating`); optional text (what the user
                                            wrote with the interaction)
  users.csv | users.parquet (optional)      user_id plus columns kept for reporting only
CSV files are UTF-8 (a byte-order mark is fine), comma-separated, with a header line; a value
holding a comma or a line break is quoted. An attribute value holding the list separator (`|`) is
a list ("Action|Comedy").

Files are read in chunks of rows (`folder_files`), so memory grows with what the tables keep, not
with the files' text. Reading never stops at a bad row: every one becomes a `Defect` (file, line,
field, what was expected, what was found) and is left out of the tables; `validation` raises them
all in one `IngestionError` with the rest (schema, references, images that do not decode).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pmg_kedro.components.data.images import STANDALONE
from pmg_kedro.components.data.sources import (
    IMAGE_SUFFIXES,
    SceneTables,
    empty_image_index,
    image_files,
)
from pmg_kedro.components.data.sources.folder_files import (
    DefectLog,
    TableFile,
    checked_header,
    find_table,
    iter_chunks,
    read_header,
)

logger = logging.getLogger(__name__)

REQUIRED = {
    "items": ("item_id", "title"),
    "interactions": ("user_id", "item_id", "timestamp"),
    "users": ("user_id",),
}
# Columns the project writes into the tables itself (or reads with a meaning of its own): a folder
# column of that name would be overwritten or misread.
RESERVED = {
    "items": {"caption", "simulated", "image_path", "image_offset", "_row"},
    "interactions": {"positive", "simulated", "file_order", "_row"},
    "users": {
        "simulated",
        "n_interactions",
        "n_positives",
        "taste_classes",
        "taste_brightness",
        "taste_texture",
        "_row",
    },
}
ITEM_FIELDS = ("item_id", "title", "description", "image")  # every other column is an attribute
_INTEGER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class FolderSettings:
    """How a folder scene is read (the scene's `ingestion` parameters, written by add-scene).

    positive_min_rating: a rating at or above it is a positive (None: every interaction is);
    attribute_columns: the item columns that are attributes (None: every further column);
    list_separator: splits an attribute value into a list; chunk_rows: rows read at a time."""

    positive_min_rating: float | None = None
    attribute_columns: tuple[str, ...] | None = None
    list_separator: str = "|"
    chunk_rows: int = 200_000

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> FolderSettings:
        attributes = params.get("attribute_columns")
        minimum = params.get("positive_min_rating")
        return cls(
            positive_min_rating=None if minimum is None else float(minimum),
            attribute_columns=None if attributes is None else tuple(attributes),
            list_separator=str(params.get("list_separator", "|")),
            chunk_rows=int(params.get("chunk_rows", 200_000)),
        )


def is_folder_scene(folder: str | Path) -> bool:
    """True when `folder` holds an items and an interactions table."""
    root = Path(folder)
    tables = ("items", "interactions")  # users.csv is optional
    return all(any((root / f"{t}{s}").is_file() for s in (".csv", ".parquet")) for t in tables)


def image_layout(folder: str | Path) -> str | None:
    """Where the items' images are: "image column", "images/ folder" or None (no images)."""
    root = Path(folder)
    table = find_table(root, "items", DefectLog(), required=False)
    if table is not None and "image" in read_header(table):
        return "image column"
    return "images/ folder" if image_files(root / "images") else None


def build_tables(folder: str | Path, params: dict[str, Any], source: str = "") -> SceneTables:
    """The scene tables of a folder (module docstring) and the defects of every file.

    items: item_id, title, description, the attribute columns (lists where a value holds the
    separator), any other column, caption ("title: attribute values. description"); interactions:
    user_id, item_id, timestamp (int64; ISO 8601 as seconds since 1970 UTC), rating and positive
    (with ratings), text, file_order, simulated; users: user_id, n_interactions, n_positives,
    simulated and the users file's columns. Rows with a defect are left out.
    """
    root, settings, log = Path(folder), FolderSettings.from_params(params), DefectLog()
    source = source or f"folder {root}"
    tables = {t: find_table(root, t, log, required=t != "users") for t in REQUIRED}
    tables = {
        t: checked_header(f, REQUIRED[t], RESERVED[t], log) if f else None
        for t, f in tables.items()
    }
    # A file that cannot be read leaves its table empty; the others are still checked row by row.
    items, interactions, image_index, users = _empty_tables()
    named_items, image_counts, user_counts = None, {}, {}
    if tables["items"] is not None:
        items, named_items = _read_items(tables["items"], settings, log)
        image_index, image_counts = _image_index(root, items, tables["items"], log)
        items = items.drop(columns=["_row", "image"], errors="ignore")
    if tables["interactions"] is not None:
        interactions = _read_interactions(
            tables["interactions"], named_items, set(items["item_id"]), settings, log
        )
        users, user_counts = _users(interactions, tables["users"], log)
    counts = {
        "items": len(items),
        "interactions": len(interactions),
        "positive_interactions": int(interactions["positive"].sum())
        if "positive" in interactions
        else len(interactions),
        "users": len(users),
        **image_counts,
        **user_counts,
    }
    return SceneTables(items, interactions, image_index, users, source, counts, defects=log.defects)


def _empty_tables() -> tuple[pd.DataFrame, ...]:
    """Tables with no row but the columns and types of the schemas (a folder whose files cannot be
    read has its own defects, not one more per missing column)."""
    text = pd.Series(dtype=object)
    items = pd.DataFrame({"item_id": text, "title": text, "caption": text})
    interactions = pd.DataFrame(
        {
            "user_id": text,
            "item_id": text,
            "timestamp": pd.Series(dtype="int64"),
            "simulated": pd.Series(dtype=bool),
        }
    )
    users = pd.DataFrame({"user_id": text, "simulated": pd.Series(dtype=bool)})
    return items, interactions, empty_image_index(), users


def _read_items(
    table: TableFile, settings: FolderSettings, log: DefectLog
) -> tuple[pd.DataFrame, set[str]]:
    """The items table (rows without a defect) and every item id the file names (an interaction
    with an id of a defective row is that row's problem, not one more defect)."""
    chunks, first_row = [], {}
    for chunk in iter_chunks(table, log, settings.chunk_rows):
        ok = _required_values(chunk, table, REQUIRED["items"], log)
        for k, (item_id, row) in enumerate(zip(chunk["item_id"], chunk["_row"], strict=True)):
            if not item_id:
                continue
            if item_id in first_row:
                log.add(
                    table.name,
                    table.at(row),
                    "item_id",
                    "an id no other row has",
                    f"{item_id!r} (first at {table.at(first_row[item_id])})",
                )
                ok[k] = False
            else:
                first_row[item_id] = int(row)
        chunks.append(chunk[ok])
    items = pd.concat(chunks, ignore_index=True) if chunks else pd.DataFrame(columns=["item_id"])
    if not first_row:
        log.add(table.name, "", "(file)", "at least one item", "no row")
    items = _attribute_columns(items, settings)
    return items, set(first_row)


def _required_values(
    chunk: pd.DataFrame, table: TableFile, columns: tuple[str, ...], log: DefectLog
) -> np.ndarray:
    """True for the rows whose required columns all have a value; a defect per empty one."""
    ok = np.ones(len(chunk), dtype=bool)
    for column in columns:
        empty = (chunk[column] == "").to_numpy()
        log.add_rows(table, chunk["_row"].to_numpy()[empty], column, "a value", [""] * empty.sum())
        ok &= ~empty
    return ok


def attribute_names(columns, settings: FolderSettings | None = None) -> list[str]:
    """The attribute columns among an items table's `columns` (all but the fields of ITEM_FIELDS
    and the reserved ones, or the settings' list where it gives one)."""
    if settings is not None and settings.attribute_columns is not None:
        return [c for c in settings.attribute_columns if c in columns]
    return [c for c in columns if c not in ITEM_FIELDS and c not in RESERVED["items"]]


def _attribute_columns(items: pd.DataFrame, settings: FolderSettings) -> pd.DataFrame:
    """Attribute values as lists where any value of the column holds the separator; the caption
    ("title: values. description") every later stage reads as the item's text."""
    items = items.copy()
    attributes = attribute_names(items.columns, settings)
    sep = settings.list_separator
    for column in attributes:
        if sep and items[column].str.contains(sep, regex=False).any():
            items[column] = items[column].map(
                lambda v: [p.strip() for p in v.split(sep) if p.strip()]
            )
    columns = [items[c].map(_words).tolist() for c in attributes]
    values = zip(*columns, strict=True) if columns else [()] * len(items)
    descriptions = items["description"].tolist() if "description" in items else [""] * len(items)
    captions = []
    for title, words, description in zip(
        items["title"].tolist(), values, descriptions, strict=True
    ):
        parts = [w for column in words for w in column]
        text = f"{title}: {', '.join(parts)}" if parts else title
        captions.append(f"{text}. {description}" if description else text)
    items["caption"] = pd.Series(captions, index=items.index, dtype=object)
    return _text_columns(items)


def _text_columns(table: pd.DataFrame) -> pd.DataFrame:
    """Text columns as pandas' string dtype (as the other sources' tables; Arrow-backed, a
    fraction of the memory of Python strings); list columns stay lists."""
    for column in table.columns:
        values = table[column]
        if values.dtype == object and not values.map(lambda v: isinstance(v, list)).any():
            table[column] = values.astype(str)
    return table


def _words(value) -> list[str]:
    if isinstance(value, list):
        return value
    return [value] if value else []


def _image_index(
    root: Path, items: pd.DataFrame, table: TableFile, log: DefectLog
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The items' images: from the `image` column (paths relative to the folder) or else
    `images/<item_id>.<ext>`; every item needs one once the folder has images (a defect where it
    has none, several, or a path outside the folder). Decoding is `validation`'s check."""
    if "image" in items.columns:
        paths = [
            _image_path(root, v, table, row, log)
            for v, row in zip(items["image"], items["_row"], strict=True)
        ]
        layout = "image column"
        extra = 0
    else:
        files = image_files(root / "images")
        if not files:
            return empty_image_index(), {"items_with_image": 0}
        paths = []
        for item_id, row in zip(items["item_id"], items["_row"], strict=True):
            found = files.get(item_id, [])
            if len(found) != 1:
                log.add(
                    table.name,
                    table.at(row),
                    "item_id",
                    f"one image file images/{item_id}.<{'|'.join(s[1:] for s in IMAGE_SUFFIXES)}>",
                    ", ".join(Path(p).name for p in found) or "none",
                )
            paths.append(found[0] if len(found) == 1 else None)
        layout = "images/ folder"
        extra = len(set(files) - set(items["item_id"]))
    keep = [p is not None for p in paths]
    index = pd.DataFrame(
        {
            "item_id": items.loc[keep, "item_id"].astype(str).to_numpy(),
            "image_path": [p for p in paths if p is not None],
            "image_offset": np.full(sum(keep), STANDALONE, dtype=np.int64),
        }
    )
    logger.info(
        "%s: %d of %d items have an image (%s)", table.path.parent, len(index), len(items), layout
    )
    return index, {"items_with_image": len(index), "image_files_without_item": extra}


def _image_path(root: Path, value: str, table: TableFile, row: int, log: DefectLog) -> str | None:
    """The file an `image` value names (a path relative to the folder), or None and a defect."""
    expected = "a path of an image file relative to the folder (every item needs one)"
    if not value:
        log.add(table.name, table.at(row), "image", expected, "''")
        return None
    path = (root / value).resolve()
    if Path(value).is_absolute() or not path.is_relative_to(root.resolve()):
        log.add(table.name, table.at(row), "image", expected, f"{value!r} (outside the folder)")
        return None
    if not path.is_file():
        log.add(table.name, table.at(row), "image", expected, f"{value!r} (no such file)")
        return None
    return str(path)


class _TimestampKind:
    """The kind of a file's timestamps (integer or ISO 8601), fixed by its first value: a file
    that mixes them has no one order."""

    def __init__(self):
        self.kind: str | None = None
        self.first: str = ""

    def parse(
        self, values: pd.Series, rows: np.ndarray, table: TableFile
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """(seconds or integers as int64, which rows failed, what was expected of them)."""
        is_int = values.str.fullmatch(_INTEGER.pattern).to_numpy(dtype=bool)
        if self.kind is None and len(values):
            self.kind, self.first = ("integer" if is_int[0] else "iso"), table.at(int(rows[0]))
        out = np.zeros(len(values), dtype=np.int64)
        if self.kind == "integer":
            numbers = pd.to_numeric(values.where(is_int), errors="coerce")
            ok = (
                is_int
                & numbers.notna().to_numpy()
                & (numbers.to_numpy() >= 0)
                & (numbers.to_numpy() < 2**62)
            )
            out[ok] = numbers.to_numpy()[ok].astype(np.int64)
            expected = f"an integer >= 0, as the file's first timestamp ({self.first})"
        else:
            times = pd.to_datetime(
                values.where(~is_int), format="ISO8601", utc=True, errors="coerce"
            )
            ok = times.notna().to_numpy().copy()
            seconds = (times[ok] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
            out[ok] = np.asarray(seconds, dtype=np.int64)
            ok &= out >= 0
            expected = (
                "an ISO 8601 date-time from 1970 on (e.g. 2024-03-01T12:30:00Z), as the file's "
                f"first timestamp ({self.first})"
            )
        return out, ~ok, expected


def _read_interactions(
    table: TableFile,
    named_items: set[str] | None,
    items: set[str],
    settings: FolderSettings,
    log: DefectLog,
) -> pd.DataFrame:
    """The interactions (module docstring) without the rows that have a defect. An interaction
    with an item of a defective items row is left out without a defect of its own (counted);
    `named_items` None (an items file that cannot be read): items are not checked, no row kept."""
    timestamps, parts, of_bad_items = _TimestampKind(), [], 0
    for chunk in iter_chunks(table, log, settings.chunk_rows):
        rows = chunk["_row"].to_numpy()
        ok = _required_values(chunk, table, REQUIRED["interactions"], log)
        unknown = ok & ~chunk["item_id"].isin(named_items or items).to_numpy()
        if named_items is None:
            unknown[:] = False
        log.add_rows(
            table,
            rows[unknown],
            "item_id",
            "an item_id listed in the items file",
            chunk["item_id"].to_numpy()[unknown],
        )
        of_bad_items += int((ok & ~unknown & ~chunk["item_id"].isin(items).to_numpy()).sum())
        ok &= chunk["item_id"].isin(items).to_numpy()
        stamp_ok = chunk["timestamp"] != ""
        seconds, bad, expected = timestamps.parse(chunk["timestamp"], rows, table)
        bad &= stamp_ok.to_numpy()
        log.add_rows(table, rows[bad], "timestamp", expected, chunk["timestamp"].to_numpy()[bad])
        ok &= ~bad
        part = chunk.drop(columns=["timestamp", "_row"]).assign(timestamp=seconds)
        if "rating" in chunk.columns:
            rating = pd.to_numeric(chunk["rating"].where(chunk["rating"] != ""), errors="coerce")
            bad = ~np.isfinite(rating.to_numpy(dtype=float))
            log.add_rows(table, rows[bad], "rating", "a number", chunk["rating"].to_numpy()[bad])
            ok &= ~bad
            part["rating"] = rating.to_numpy(dtype=float)
        part["file_order"] = rows
        parts.append(part[ok])
    if of_bad_items:
        logger.info(
            "%s: %d interactions with items of defective rows left out", table.name, of_bad_items
        )
    interactions = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=list(REQUIRED["interactions"]))
    )
    if interactions.empty and named_items is not None:
        log.add(table.name, "", "(file)", "at least one interaction with a known item", "none")
    if "rating" in interactions.columns:
        minimum = settings.positive_min_rating
        interactions["positive"] = interactions["rating"] >= (
            minimum if minimum is not None else -np.inf
        )
    interactions["simulated"] = False
    first = ["user_id", "item_id", "timestamp"]
    return _text_columns(interactions[first + [c for c in interactions.columns if c not in first]])


def _users(
    interactions: pd.DataFrame, table: TableFile | None, log: DefectLog
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per user of the interactions: counts, `simulated` False and the users file's
    columns (reporting only); the counts of users in one table and not the other."""
    positive = (
        interactions["positive"]
        if "positive" in interactions
        else pd.Series(True, index=interactions.index)
    )
    users = (
        interactions.assign(_positive=positive)
        .groupby("user_id", sort=True)
        .agg(n_interactions=("item_id", "size"), n_positives=("_positive", "sum"))
        .reset_index()
    )
    users["n_positives"] = users["n_positives"].astype("int64")
    users["simulated"] = False
    if table is None:
        return users, {}
    rows, seen = [], {}
    for chunk in iter_chunks(table, log, 200_000):
        ok = _required_values(chunk, table, REQUIRED["users"], log)
        for k, (user_id, row) in enumerate(zip(chunk["user_id"], chunk["_row"], strict=True)):
            if user_id and user_id in seen:
                log.add(
                    table.name,
                    table.at(row),
                    "user_id",
                    "an id no other row has",
                    f"{user_id!r} (first at {table.at(seen[user_id])})",
                )
                ok[k] = False
            elif user_id:
                seen[user_id] = int(row)
        rows.append(chunk[ok].drop(columns="_row"))
    listed = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["user_id"])
    counts = {
        "users_file_rows_without_interactions": int(
            (~listed["user_id"].isin(set(users["user_id"]))).sum()
        ),
        "users_without_users_file_row": int((~users["user_id"].isin(set(listed["user_id"]))).sum()),
    }
    return _text_columns(users.merge(listed, on="user_id", how="left")), counts
