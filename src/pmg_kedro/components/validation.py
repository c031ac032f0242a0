"""Table validation with pandera: every failure names the source, the row, the field and what was expected."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from .images import STANDALONE, missing_files

MAX_REPORTED = 20


class DataValidationError(ValueError):
    """Raised when an ingested table breaks its schema; the message lists the failing rows."""


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


def _describe(failures: pd.DataFrame, table: str, source: str) -> str:
    lines = []
    for row in failures.head(MAX_REPORTED).itertuples(index=False):
        where = "table" if pd.isna(row.index) else f"row {row.index}"
        field = row.column if isinstance(row.column, str) else "(table)"
        lines.append(
            f"  {table} ({source}) {where}, field '{field}': expected {row.check}, "
            f"got {row.failure_case!r}"
        )
    more = len(failures) - MAX_REPORTED
    if more > 0:
        lines.append(f"  ... and {more} more failures")
    return "\n".join(lines)


def validate(df: pd.DataFrame, schema: pa.DataFrameSchema, source: str) -> pd.DataFrame:
    """Validate `df` against `schema` (all failures collected) or raise DataValidationError."""
    try:
        return schema.validate(df, lazy=True)
    except SchemaErrors as err:
        failures = err.failure_cases
        raise DataValidationError(
            f"{schema.name} from {source} failed validation ({len(failures)} failures):\n"
            + _describe(failures, schema.name, source)
        ) from None


def check_references(
    df: pd.DataFrame, field: str, known: pd.Series, table: str, source: str, known_name: str
) -> None:
    """Raise when values of `df[field]` are not in `known` (e.g. interactions naming unknown items)."""
    bad = df.loc[~df[field].isin(set(known)), field]
    if len(bad):
        rows = ", ".join(f"row {i} ({v!r})" for i, v in bad.head(MAX_REPORTED).items())
        raise DataValidationError(
            f"{table} from {source}: {len(bad)} rows name a {field} not in {known_name}: {rows}"
        )


def check_image_files(image_index: pd.DataFrame, source: str) -> None:
    """Raise listing every image file of the index that does not exist."""
    missing = missing_files(image_index["image_path"])
    if missing:
        listed = "\n".join(f"  {p}" for p in missing[:MAX_REPORTED])
        more = (
            f"\n  ... and {len(missing) - MAX_REPORTED} more" if len(missing) > MAX_REPORTED else ""
        )
        raise DataValidationError(
            f"image_index from {source}: {len(missing)} image files are missing:\n{listed}{more}"
        )
