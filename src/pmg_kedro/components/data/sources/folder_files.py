"""The files of a scene folder (`folder.py`) read in chunks of rows, every value as text, each row
with the line (CSV) or row (Parquet) it came from; and the defect log the folder's checks write to.

CSV is read with Python's `csv` module: quoted commas and line breaks inside quotes, CRLF line ends
and a UTF-8 byte-order mark read correctly, and every record keeps the physical line it starts on
(an error names the line an editor shows). Bytes that are not UTF-8 become one defect per line
(read with `surrogateescape`, so the rest of the file is still read). Parquet is read one record
batch at a time (pyarrow), its values turned into the same text form as a CSV's.
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pmg_kedro.components.data.defects import Defect

TABLE_SUFFIXES = (".csv", ".parquet")
_NOT_UTF8 = re.compile(
    "[\udc80-\udcff]"
)  # what `surrogateescape` makes of a byte that is not UTF-8


class DefectLog:
    """The defects of a folder, every one counted; at most `per_kind` listed per (file, field,
    expected), the rest summed up in one closing defect of that kind (a file with a wrong column
    everywhere gives one readable error, not a million lines)."""

    def __init__(self, per_kind: int = 50):
        self.per_kind = per_kind
        self._listed: dict[tuple[str, str, str], list[Defect]] = defaultdict(list)
        self._more: dict[tuple[str, str, str], int] = defaultdict(int)

    def add(self, where: str, row: str, field: str, expected: str, got: str) -> None:
        key = (where, field, expected)
        if len(self._listed[key]) < self.per_kind:
            self._listed[key].append(Defect(where, row, field, expected, got))
        else:
            self._more[key] += 1

    def add_rows(self, table: TableFile, rows, field: str, expected: str, got) -> None:
        """One defect per row number of `rows` (those of `table`), `got` the values found."""
        rows, got = np.asarray(rows), np.asarray(got, dtype=object)
        for row, value in zip(rows[: self.per_kind], got[: self.per_kind], strict=True):
            self.add(table.name, table.at(int(row)), field, expected, repr(value))
        self._more[(table.name, field, expected)] += max(0, len(rows) - self.per_kind)

    @property
    def defects(self) -> list[Defect]:
        out = [d for listed in self._listed.values() for d in listed]
        for (where, field, expected), n in self._more.items():
            if n:
                out.append(Defect(where, "", field, expected, f"{n:,} more rows like the above"))
        return out

    def __len__(self) -> int:
        return sum(map(len, self._listed.values())) + sum(self._more.values())


@dataclass(frozen=True)
class TableFile:
    """One table of the folder: `items.csv`, `interactions.parquet`, ...; `drop`: its columns
    that are not read (a reserved or repeated name: a defect of their own)."""

    path: Path
    drop: frozenset[str] = frozenset()

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def is_csv(self) -> bool:
        return self.path.suffix.lower() == ".csv"

    def at(self, row: int) -> str:
        """Where row `row` is: `line N` of a CSV (its first physical line), `row N` of a Parquet
        file (0 = the first row)."""
        return f"{'line' if self.is_csv else 'row'} {row}"


def find_table(folder: Path, stem: str, log: DefectLog, required: bool) -> TableFile | None:
    """`<stem>.csv` or `<stem>.parquet` in `folder` (a defect when both, or when a required one is
    missing)."""
    found = [folder / f"{stem}{s}" for s in TABLE_SUFFIXES if (folder / f"{stem}{s}").is_file()]
    if len(found) > 1:
        log.add(stem, "", "(file)", f"one of {stem}.csv or {stem}.parquet", "both")
    elif not found and required:
        log.add(f"{stem}.csv", "", "(file)", f"a file {stem}.csv (or {stem}.parquet)", "none")
    return TableFile(found[0]) if found else None


def read_header(table: TableFile) -> list[str]:
    """The column names of `table` (stripped), or [] for an empty file."""
    if not table.is_csv:
        import pyarrow.parquet as pq

        return [str(c).strip() for c in pq.ParquetFile(table.path).schema_arrow.names]
    with open(table.path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        header = next(csv.reader(fh), [])
    return [c.strip() for c in header]


def checked_header(
    table: TableFile, required: tuple[str, ...], reserved: set[str], log: DefectLog
) -> TableFile | None:
    """`table` with the columns not to read (a repeated name, a name this project writes itself,
    an empty name: one defect each), or None when it cannot be read at all (no header, a missing
    required column, not a CSV or Parquet file)."""
    where = "line 1" if table.is_csv else ""
    try:
        header = read_header(table)
    except (OSError, ValueError) as err:  # pyarrow raises ArrowInvalid, a ValueError
        log.add(table.name, "", "(file)", "a readable CSV or Parquet file", str(err)[:120])
        return None
    if not header:
        expected = f"a header line naming the columns ({', '.join(required)})"
        log.add(table.name, where, "(file)", expected, "none")
        return None
    names = ", ".join(header)
    missing = [c for c in required if c not in header]
    for column in missing:
        log.add(table.name, where, column, "the column to exist", f"columns {names}")
    drop = set()
    for column in sorted({c for c in header if header.count(c) > 1}):
        log.add(
            table.name, where, column, "each column name once", f"{header.count(column)} so named"
        )
        drop.add(column)
    for column in header:
        if column.lower() in reserved:
            expected = f"a name other than the reserved {', '.join(sorted(reserved - {'_row'}))}"
            log.add(table.name, where, column, expected, repr(column))
            drop.add(column)
        if not column:
            log.add(
                table.name,
                where,
                "(header)",
                "a name for every column",
                f"an empty name in {names}",
            )
            drop.add(column)
    return None if missing else TableFile(table.path, frozenset(drop))


def iter_chunks(table: TableFile, log: DefectLog, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The rows of `table` as text (missing values ""), stripped, `chunk_rows` at a time, each
    chunk with a `_row` column (line or row number). Rows that cannot be read are defects."""
    chunks = (
        _csv_chunks(table, log, chunk_rows) if table.is_csv else _parquet_chunks(table, chunk_rows)
    )
    for chunk in chunks:
        if table.drop:
            chunk = chunk.loc[:, ~chunk.columns.duplicated()]
            chunk = chunk.drop(columns=[c for c in table.drop if c != "_row"], errors="ignore")
        yield chunk


def _csv_chunks(table: TableFile, log: DefectLog, chunk_rows: int) -> Iterator[pd.DataFrame]:
    with open(table.path, encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        header = [c.strip() for c in next(reader, [])]
        width = len(header)
        rows, lines, start = [], [], reader.line_num + 1
        for record in reader:
            line, start = start, reader.line_num + 1
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # a blank line
            bad = _NOT_UTF8.search(text := "\x1f".join(record))
            if bad is not None:
                got = text.encode("utf-8", "surrogateescape")[:60]
                log.add(table.name, f"line {line}", "(line)", "UTF-8 text", repr(got))
            elif len(record) != width:
                log.add(
                    table.name,
                    f"line {line}",
                    "(line)",
                    f"{width} comma-separated fields ({', '.join(header)}; quote a value "
                    "that holds a comma)",
                    f"{len(record)}: {','.join(record)[:80]!r}",
                )
            else:
                rows.append(record)
                lines.append(line)
            if len(rows) >= chunk_rows:
                yield _frame(rows, lines, header)
                rows, lines = [], []
        if rows:
            yield _frame(rows, lines, header)


def _frame(rows: list[list[str]], lines: list[int], header: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=header, dtype=object)
    for column in header:
        frame[column] = frame[column].str.strip()
    frame["_row"] = np.asarray(lines, dtype=np.int64)
    return frame


def _parquet_chunks(table: TableFile, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    offset = 0
    for batch in pq.ParquetFile(table.path).iter_batches(batch_size=chunk_rows):
        frame = batch.to_pandas()
        frame.columns = [str(c).strip() for c in frame.columns]
        for column in frame.columns:
            frame[column] = _as_text(frame[column])
        frame["_row"] = np.arange(offset, offset + len(frame), dtype=np.int64)
        offset += len(frame)
        yield frame


def _as_text(values: pd.Series) -> pd.Series:
    """A Parquet column as the text a CSV would hold: integers without a decimal point, times in
    ISO 8601, missing values ""."""
    missing = values.isna()
    if pd.api.types.is_datetime64_any_dtype(values):
        text = values.map(lambda t: t.isoformat() if pd.notna(t) else "")
    elif pd.api.types.is_float_dtype(values) and (values.dropna() % 1 == 0).all():
        text = values.map(lambda v: str(int(v)) if pd.notna(v) else "")
    else:
        text = values.map(str)
    return text.where(~missing, "").astype(object).str.strip()
