"""Settings dataclasses from Kedro parameter mappings: one check of the keys for all of them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any


def known_params(cls, params: Mapping | None, what: str) -> dict[str, Any]:
    """`params` as keyword arguments of the dataclass `cls` (missing keys take its defaults);
    a key that is no field of `cls` is an error naming `what` and the fields it has."""
    params = dict(params or {})
    known = {f.name for f in fields(cls)}
    unknown = set(params) - known
    if unknown:
        raise ValueError(
            f"unknown {what} parameters {sorted(unknown)}; expected some of {sorted(known)}"
        )
    return params
