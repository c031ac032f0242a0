"""Settings objects from parameter blocks: the one way every `from_params` reads its block.

A key the settings class has no field for is an error that names it and the allowed keys (a
misspelt or renamed parameter never goes silently unused); a missing key takes the field's
default, and a missing key without one is an error that names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from typing import Any, TypeVar

T = TypeVar("T")


class ParameterError(ValueError):
    """A parameter block that does not fit its settings class (an unknown or missing key)."""


def settings_from_params(
    cls: type[T], params: Mapping[str, Any] | None, what: str, **convert: Callable[[Any], Any]
) -> T:
    """`cls(**params)` for dataclass `cls`, checked first; `what` names the parameter block in
    errors (e.g. "recommendation model"), `convert` maps a field to the function its value
    goes through (YAML lists to tuples, say)."""
    values = dict(params or {})
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ParameterError(
            f"{what} parameters: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(allowed)}"
        )
    required = [
        f.name
        for f in fields(cls)
        if f.default is MISSING and f.default_factory is MISSING and f.name not in values
    ]
    if required:
        raise ParameterError(
            f"{what} parameters: missing key(s) {', '.join(map(repr, required))} (no default)"
        )
    for name, function in convert.items():
        if name in values:
            values[name] = function(values[name])
    return cls(**values)
