"""Markdown tables: cells read as they were formatted, empty cells point to one footnote per why."""

import numpy as np
import pandas as pd

from pmg_kedro.components.reporting.tables import (
    Footnotes,
    fmt,
    fmt_interval,
    fmt_p,
    fmt_verdict,
    markdown_table,
)


def _cells(markdown: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines()]


def test_a_table_keeps_formatted_numbers_and_its_column_order():
    table = markdown_table([["pmg", "0.1000", "1e-03", 3]], ["variant", "mean", "p", "users"])
    header, rule, row = _cells(table)
    assert header == ["variant", "mean", "p", "users"]
    assert set("".join(rule)) == {"-"}  # a plain rule: no alignment colons
    assert row == ["pmg", "0.1000", "1e-03", "3"]  # not re-parsed to 0.1 or 0.001


def test_a_dataframe_is_written_without_its_index():
    frame = pd.DataFrame({"a": ["x", "y"], "b": ["1", "2"]}, index=[7, 8])
    assert _cells(markdown_table(frame))[2:] == [["x", "1"], ["y", "2"]]


def test_number_formats_say_n_a_for_missing_values():
    assert fmt(0.123456) == "0.1235" and fmt(0.5, 2, sign=True) == "+0.50"
    assert fmt(np.nan) == "n/a" and fmt(None) == "n/a"
    assert fmt_p(0.000123456) == "0.000123" and fmt_p(np.nan) == "n/a"
    assert fmt_interval(0.5, 0.25, 0.75) == "0.5000 [0.2500, 0.7500]"
    assert fmt_interval(0.5, np.nan, np.nan) == "0.5000 [n/a, n/a]"
    assert fmt_interval(0.5, None, None, digits=2) == "0.50"


def test_each_distinct_reason_is_one_numbered_footnote():
    notes = Footnotes()
    cells = [notes.cell("no images"), notes.cell("no LPIPS"), notes.cell("no images")]
    assert cells == ["n/a [1]", "n/a [2]", "n/a [1]"]
    assert notes.lines() == ["[1] no images  ", "[2] no LPIPS  "]


def test_only_neither_carries_its_mde():
    assert fmt_verdict("neither", 0.04123) == "neither (MDE 0.0412)"
    assert fmt_verdict("neither", 0.04123, digits=2) == "neither (MDE 0.04)"
    assert fmt_verdict("neither", np.nan, "no spread") == "neither (MDE n/a: no spread)"
    assert fmt_verdict("pmg", 0.04) == "pmg"
    assert fmt_verdict("tests disagree (x)", 0.04).startswith("tests disagree")
