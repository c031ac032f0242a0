"""Item metadata as keyword strings: the references of the keyword-quality checks, the no-LLM
baseline and the keyword extraction's fallback rule (§3.2.2) read items through these."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from pmg_kedro.components.data.prompts import content_words, field_text, most_frequent, render


def item_values(item: pd.Series, columns: Sequence[str]) -> list[str]:
    """Metadata values of one item as lower-case keyword strings (list columns give each element)."""
    values: list[str] = []
    for column in columns:
        value = item[column]
        if isinstance(value, str):
            values.append(value)
        elif value is not None and hasattr(value, "__iter__"):
            values.extend(str(v) for v in value)
        elif value is not None and value == value:  # not NaN
            values.append(str(value))
    return [v.lower() for v in values if v]


def decade(value) -> str | None:
    """A year as its decade, "1995" -> "1990s" (None for a missing or unreadable year)."""
    try:
        year = int(float(value))
    except (TypeError, ValueError):
        return None
    return f"{year // 10 * 10}s"


# Terms a metadata value stands for, where the value itself is not a keyword (a year).
TRANSFORMS = {"decade": decade}


def item_terms(item: pd.Series, column: str, transform: str | None = None) -> list[str]:
    """`item_values` of one column, through a named transform (`decade`) when one is given."""
    if transform is None:
        return item_values(item, [column])
    if transform not in TRANSFORMS:
        raise ValueError(
            f"unknown transform {transform!r} for column {column!r}; expected one of {sorted(TRANSFORMS)}"
        )
    terms = [TRANSFORMS[transform](v) for v in item_values(item, [column])]
    return [t for t in terms if t]


def history_values(history, by_id: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """`item_values` of every history item, oldest first (repeats kept: they are counted)."""
    return [v for item_id in history for v in item_values(by_id.loc[str(item_id)], columns)]


def history_terms(history, by_id: pd.DataFrame, column: str, transform: str | None) -> list[str]:
    """`item_terms` of every history item, oldest first (repeats kept: they are counted)."""
    return [
        t for item_id in history for t in item_terms(by_id.loc[str(item_id)], column, transform)
    ]


def items_by_id(items: pd.DataFrame) -> pd.DataFrame:
    """Items indexed by their item_id as a string."""
    by_id = items.drop_duplicates("item_id").copy()
    by_id.index = by_id["item_id"].astype(str)
    return by_id


def present_columns(columns: Sequence[str], table: pd.DataFrame) -> list[str]:
    """The `columns` the table has: a scene's metadata differs by source (POG items have no
    class_name), so rules configured for one source read only what the data has."""
    return [c for c in columns if c in table.columns]


def fallback_keywords(
    history, history_texts: Sequence[str], by_id: pd.DataFrame, columns: Sequence[str], k: int
) -> list[str]:
    """The rule for a user whose answers parse to nothing: the `k` most frequent values of the
    `columns` the items have over the history; without such columns, the content words of the
    history texts, else (texts without Latin words) the most frequent history titles."""
    if columns:
        return most_frequent(history_values(history, by_id, columns), k)
    words = content_words(" ".join(history_texts), k)
    return words or most_frequent(history_values(history, by_id, ["title"]), k)


def item_texts(items: pd.DataFrame, template: str, item_ids) -> pd.Series:
    """item_id -> the item's text from `template` (any item column; lists joined by commas)."""
    by_id = items.drop_duplicates("item_id")
    by_id.index = by_id["item_id"].astype(str)
    wanted = list(dict.fromkeys(str(i) for i in item_ids))
    missing = [i for i in wanted if i not in by_id.index]
    if missing:
        raise ValueError(f"items: no row for item ids {missing[:5]} ({len(missing)} in all)")

    def field(value) -> str:
        scalar = isinstance(value, str) or not hasattr(value, "__iter__")
        return "" if scalar and pd.isna(value) else field_text(value)

    rows = by_id.loc[wanted].to_dict(orient="records")
    texts = [render(template, **{k: field(v) for k, v in row.items()}) for row in rows]
    return pd.Series(texts, index=wanted, dtype=object)
