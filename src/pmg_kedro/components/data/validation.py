"""Validation of ingested scene data: every defect of a run is collected and raised as ONE error.

Readers (`components.data.sources`) record what they could not parse as `Defect`s and keep going;
`validate_scene` adds the schema failures (pandera, lazy), references to unknown ids and image
files that are missing or do not decode, then raises one `IngestionError` that lists them all.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors
from PIL import Image
from tqdm.auto import tqdm

from pmg_kedro.components.data.defects import Defect, IngestionError
from pmg_kedro.components.data.images import STANDALONE, read_idx_images

if TYPE_CHECKING:
    from pmg_kedro.components.data.sources import SceneTables

logger = logging.getLogger(__name__)


def _str_column(**kwargs) -> pa.Column:
    return pa.Column(str, checks=pa.Check.str_length(min_value=1), nullable=False, **kwargs)


ITEMS = pa.DataFrameSchema(
    {"item_id": _str_column(unique=True), "title": _str_column(), "caption": _str_column()},
    name="items",
    strict=False,
)

INTERACTIONS = pa.DataFrameSchema(
    {
        "user_id": _str_column(),
        "item_id": _str_column(),
        "timestamp": pa.Column("int64", checks=pa.Check.ge(0), nullable=False),
        "simulated": pa.Column(bool, nullable=False),
    },
    name="interactions",
    strict=False,
)

IMAGE_INDEX = pa.DataFrameSchema(
    {
        "item_id": _str_column(unique=True),
        "image_path": _str_column(),
        "image_offset": pa.Column("int64", checks=pa.Check.ge(STANDALONE), nullable=False),
    },
    name="image_index",
    strict=False,
)

USERS = pa.DataFrameSchema(
    {"user_id": _str_column(unique=True), "simulated": pa.Column(bool, nullable=False)},
    name="users",
    strict=False,
)

HISTORIES = pa.DataFrameSchema(
    {
        "user_id": _str_column(unique=True),
        "history": pa.Column(
            object,
            checks=pa.Check(
                lambda s: s.map(lambda h: len(h) > 0), element_wise=False, name="non-empty history"
            ),
            nullable=False,
        ),
        "target": _str_column(),
    },
    name="histories",
    strict=False,
)

# pandera check names in words; the check's own name follows in brackets.
_CHECK_WORDS = {
    "column_in_dataframe": "the column to exist",
    "not_nullable": "a value (not null)",
    "field_uniqueness": "a value no other row has",
    "str_length(1, None)": "a non-empty string",
}


def schema_defects(df: pd.DataFrame, schema: pa.DataFrameSchema) -> list[Defect]:
    """Every failure of `df` against `schema` (pandera, lazy), one Defect per failing cell."""
    try:
        schema.validate(df, lazy=True)
    except SchemaErrors as err:
        defects = []
        for case in err.failure_cases.itertuples(index=False):
            check = str(case.check)
            words = _CHECK_WORDS.get(check)
            defects.append(
                Defect(
                    where=schema.name,
                    row="" if pd.isna(case.index) else f"row {case.index}",
                    field=case.column if case.column != schema.name else str(case.failure_case),
                    expected=f"{words} ({check})" if words else check,
                    got=repr(case.failure_case),
                )
            )
        return defects
    return []


def validate(df: pd.DataFrame, schema: pa.DataFrameSchema, source: str) -> pd.DataFrame:
    """Validate `df` against `schema` (all failures collected) or raise IngestionError."""
    defects = schema_defects(df, schema)
    if defects:
        raise IngestionError(source, defects)
    return df


def reference_defects(
    df: pd.DataFrame, field: str, known: pd.Series, table: str, known_name: str
) -> list[Defect]:
    """One Defect per row whose `field` is not in `known` (e.g. interactions naming unknown items)."""
    if field not in df.columns:  # reported by the schema check
        return []
    bad = df.loc[~df[field].isin(set(known)), field]
    return [
        Defect(table, f"row {i}", field, f"an id listed in {known_name}", repr(value))
        for i, value in bad.items()
    ]


def _decode_error(path: str) -> str | None:
    """Why the image file at `path` cannot be used (missing, not an image, truncated), or None."""
    try:
        with Image.open(path) as image:
            image.load()  # a full decode: verify() passes truncated JPEGs
    except FileNotFoundError:
        return "no such file"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f"{type(err).__name__}: {err}"
    return None


def _idx_error(path: str, offset: int) -> str | None:
    """Why image `offset` of the IDX archive at `path` cannot be used, or None."""
    try:
        n_images = read_idx_images(path).shape[0]
    except (OSError, ValueError, EOFError) as err:
        return f"{type(err).__name__}: {err}"
    return None if offset < n_images else f"offset {offset} of an archive of {n_images} images"


def image_defects(image_index: pd.DataFrame) -> list[Defect]:
    """One Defect per image-index row whose image is missing or does not decode.

    Plain files are decoded in full with PIL; IDX archives are read once and each offset is
    checked against the archive's image count.
    """
    if not {"image_path", "image_offset"} <= set(image_index.columns):  # the schema says so
        return []
    rows = list(image_index[["image_path", "image_offset"]].itertuples())
    item_ids = image_index["item_id"] if "item_id" in image_index.columns else image_index.index
    files = sorted({r.image_path for r in rows if r.image_offset == STANDALONE})
    started = time.perf_counter()
    errors = {p: _decode_error(p) for p in tqdm(files, desc="decoding item images", unit="img")}
    if files:
        seconds = time.perf_counter() - started
        logger.info(
            "decoded %d image files in %.1f s (%.0f images/s)",
            len(files),
            seconds,
            len(files) / max(seconds, 1e-9),
        )
    defects = []
    for row in rows:
        if row.image_offset == STANDALONE:
            error = errors[row.image_path]
            expected = "a readable image file (decoded with PIL)"
        else:
            error = _idx_error(row.image_path, int(row.image_offset))
            expected = "an image inside the IDX archive"
        if error:
            defects.append(
                Defect(
                    "image_index",
                    f"row {row.Index} (item {item_ids[row.Index]}: {row.image_path})",
                    "image_path",
                    expected,
                    error,
                )
            )
    return defects


def scene_defects(tables: SceneTables) -> list[Defect]:
    """The reader's defects, every schema failure, every reference to an unknown item or user and
    every image that is missing or does not decode."""
    defects = list(tables.defects)
    for table, schema in (
        (tables.items, ITEMS),
        (tables.interactions, INTERACTIONS),
        (tables.image_index, IMAGE_INDEX),
        (tables.users, USERS),
    ):
        defects += schema_defects(table, schema)
    if "item_id" in tables.items.columns:
        items = tables.items["item_id"]
        defects += reference_defects(tables.interactions, "item_id", items, "interactions", "items")
        defects += reference_defects(tables.image_index, "item_id", items, "image_index", "items")
    if "user_id" in tables.users.columns:
        users = tables.users["user_id"]
        defects += reference_defects(tables.interactions, "user_id", users, "interactions", "users")
    return defects + image_defects(tables.image_index)


def validate_scene(
    tables: SceneTables,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Check every row and image of a scene; return (items, interactions, image_index, users).

    Raises one IngestionError with every defect of `scene_defects`.
    """
    defects = scene_defects(tables)
    if defects:
        raise IngestionError(tables.source, defects)
    return tuple(
        t.reset_index(drop=True)
        for t in (tables.items, tables.interactions, tables.image_index, tables.users)
    )
