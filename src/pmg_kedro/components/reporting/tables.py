"""Markdown tables and the number formats of the reports.

A table is a DataFrame of formatted cells written by `DataFrame.to_markdown` (GitHub pipe tables;
`tabulate` underneath, with its number parsing off so every cell reads as it was formatted).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def markdown_table(rows: Sequence[Sequence[object]] | pd.DataFrame, columns=None) -> str:
    """A Markdown table (no trailing newline) of `rows` (a DataFrame, or row sequences with the
    header `columns`); every cell is written as str() gives it."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=columns)
    return frame.astype(str).to_markdown(index=False, tablefmt="github", disable_numparse=True)


def fmt(value, digits: int = 4, sign: bool = False) -> str:
    """A number with `digits` decimals ("+" for positive ones with `sign`); "n/a" for None/NaN."""
    if value is None or pd.isna(value):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def fmt_p(value) -> str:
    """A p-value with three significant digits; "n/a" for None/NaN."""
    return "n/a" if value is None or pd.isna(value) else f"{value:.3g}"


def fmt_interval(mean, low, high, digits: int = 4) -> str:
    """ "mean [low, high]"; the interval is left out where there is none (None)."""
    if low is None or high is None:
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} [{fmt(low, digits)}, {fmt(high, digits)}]"


def fmt_verdict(verdict, mde=None, mde_note: str = "", digits: int = 4) -> str:
    """A verdict cell: "neither" carries its minimum detectable effect, "neither (MDE 0.0410)"
    (or why there is none); any other verdict is written as it is."""
    if verdict != "neither":
        return str(verdict)
    if mde is None or pd.isna(mde):
        return f"neither (MDE n/a: {mde_note})" if mde_note else "neither (MDE n/a)"
    return f"neither (MDE {fmt(mde, digits)})"


class Footnotes:
    """Cells that cannot hold a number say why in a numbered footnote: "n/a [k]", each distinct
    reason once."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def cell(self, text: str) -> str:
        """'n/a [k]', with `text` as footnote k."""
        if text not in self.texts:
            self.texts.append(text)
        return f"n/a [{self.texts.index(text) + 1}]"

    def lines(self) -> list[str]:
        """The footnotes as Markdown lines (two trailing spaces: one line each)."""
        return [f"[{k}] {text}  " for k, text in enumerate(self.texts, start=1)]
