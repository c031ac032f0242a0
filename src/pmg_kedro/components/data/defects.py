"""What is wrong with scene input: `Defect` (one thing, where) and `IngestionError` (all of a run's
defects in one error). Readers (`components.data.sources`) record defects and keep going; validation
raises them together."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

MAX_REPORTED = 20  # defects listed in an error message; the total is always given


@dataclass(frozen=True)
class Defect:
    """One thing wrong with the input: where (file or table), which row, which field, what was
    expected and what was found."""

    where: str
    row: str  # "line 3" (a file), "row 12" (a table), "" (the whole file or table)
    field: str
    expected: str
    got: str

    def __str__(self) -> str:
        at = f"{self.where} {self.row}" if self.row else self.where
        return f"{at}, field '{self.field}': expected {self.expected}, got {self.got}"


class IngestionError(ValueError):
    """Bad scene input. The message starts with the count of defects per file or table, then
    lists the first `MAX_REPORTED` of them; `defects` holds them all."""

    def __init__(self, source: str, defects: list[Defect]):
        # grouped by file or table (in order of first appearance), then by line or row number
        first = {where: k for k, where in reversed(list(enumerate(d.where for d in defects)))}
        defects = sorted(defects, key=lambda d: (first[d.where], _row_number(d.row)))
        self.source, self.defects = source, defects
        tally = ", ".join(f"{where}: {n}" for where, n in Counter(d.where for d in defects).items())
        shown = min(len(defects), MAX_REPORTED)
        lines = [
            f"{len(defects)} defect{'s' * (len(defects) != 1)} in {source} ({tally}); "
            f"the first {shown} follow{'s' * (shown == 1)}.",
            *(f"  {d}" for d in defects[:MAX_REPORTED]),
        ]
        if len(defects) > MAX_REPORTED:
            lines.append(f"  ... and {len(defects) - MAX_REPORTED} more")
        super().__init__("\n".join(lines))

    def __reduce__(self):  # picklable (parallel runners) with its defects
        return type(self), (self.source, self.defects)


def _row_number(row: str) -> int:
    number = re.search(r"\d+", row)
    return int(number.group()) if number else -1
