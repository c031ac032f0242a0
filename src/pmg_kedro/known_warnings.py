"""The warnings this project hides, each by category, message and the module that issues it.

Without these, the first screen of every `kedro` command (`run`, `viz`, `catalog`, `registry`) is
about 60 lines of other packages' deprecation notices that nothing in this project can act on.
`filter_known_warnings()` runs when `pmg_kedro` is first imported: Kedro imports the project's
settings or its `cli` module (and so this package) before any command runs. Every other warning
still shows, including one of these messages issued from any other module (the project's own
code, say).

The one list is applied in three places:
  - `warnings` filters, for this process;
  - a filter on the `py.warnings` logger, which Kedro's logging shows warnings through: mlflow
    checks its model classes under its own `simplefilter("once", UserWarning)`, which comes before
    every other filter;
  - `PYTHONWARNINGS`, for Python processes started from this one before they import the project:
    `kedro viz run` serves from a spawned process that imports Kedro-Viz's web app first.
    (`-W` syntax: only warnings issued from named modules, not from a whole package.)
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from pathlib import Path
from typing import NamedTuple


class KnownWarning(NamedTuple):
    category: type[Warning]  # the warning's class or a base class of it
    message: str  # how the message starts (colour codes before it are allowed)
    modules: tuple[str, ...]  # the issuing modules' names; "package.*": any module under package
    why: str

    @property
    def message_pattern(self) -> str:
        return r"(\x1b\[[\d;]*m)?" + re.escape(self.message)

    @property
    def module_pattern(self) -> str:
        names = (
            re.escape(m.removesuffix("*")) + (".*" if m.endswith("*") else "") for m in self.modules
        )
        return "|".join(names)

    def matches(self, message: str, module: str) -> bool:
        """Whether a warning with `message` issued from `module` is this one."""
        return (
            re.match(self.message_pattern, message, re.IGNORECASE) is not None
            and re.fullmatch(self.module_pattern, module) is not None
        )


KNOWN_WARNINGS = (
    KnownWarning(
        UserWarning,
        "register_new_resolver() is deprecated",
        ("kedro.config.omegaconf_config", "kedro_mlflow.framework.hooks.mlflow_hook"),
        "omegaconf 2.4 deprecates the resolver API that Kedro's config loader and kedro-mlflow's "
        "hook call in every session",
    ),
    KnownWarning(
        UserWarning,
        "Add type hints to the `predict` method",
        ("mlflow.pyfunc.utils.data_validation",),
        "mlflow checks kedro-mlflow's model class when kedro-mlflow is imported",
    ),
    KnownWarning(
        FutureWarning,
        "`torch.jit.script` is deprecated",
        ("torch.jit._script",),
        "torch_geometric scripts its helpers when it is imported (MMGCN)",
    ),
    KnownWarning(
        UserWarning,  # fastapi.exceptions.FastAPIDeprecationWarning
        "ORJSONResponse is deprecated",
        ("kedro_viz.api.apps",),
        "Kedro-Viz's web app still subclasses FastAPI's ORJSONResponse",
    ),
    KnownWarning(
        UserWarning,
        "One or more dataset names contain '.' characters",
        ("pmg_kedro.pipelines.*", "kedro.pipeline.*"),
        "Kedro's notice on dotted dataset names: nodes outside a scene namespace read scene and "
        "variant outputs by their namespaced names (`movie.keyword_adapter_examples`, "
        "`pmg.selections`), which is what namespacing produces",
    ),
)

# How `logging.captureWarnings` writes a warning: "<file>:<line>: <Category>: <message>\n  <code>"
_FORMATTED = re.compile(r"(?P<file>.+?):(?P<line>\d+): (?P<category>[\w.]+): (?P<message>.*)", re.S)


def module_of(filename: str) -> str:
    """The dotted name of the module in `filename`, from the longest `sys.path` entry holding it."""
    path = Path(filename)
    roots = sorted((Path(p) for p in sys.path if p), key=lambda p: len(p.parts), reverse=True)
    for root in roots:
        if path.is_relative_to(root):
            parts = path.relative_to(root).with_suffix("").parts
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    return path.stem


def is_known(message: str, module: str) -> bool:
    """Whether a warning with `message` issued from `module` is one of `KNOWN_WARNINGS`."""
    return any(known.matches(message, module) for known in KNOWN_WARNINGS)


class KnownWarningsLogFilter(logging.Filter):
    """Drops the `py.warnings` records of known warnings (others, and unparsed records, pass)."""

    def filter(self, record: logging.LogRecord) -> bool:
        parsed = _FORMATTED.match(record.getMessage())
        return parsed is None or not is_known(parsed["message"], module_of(parsed["file"]))


_LOG_FILTER = KnownWarningsLogFilter()


def warning_options() -> list[str]:
    """The known warnings as `-W` / `PYTHONWARNINGS` options: one per module named in full."""
    return [
        f"ignore:{known.message}:{known.category.__name__}:{module}"
        for known in KNOWN_WARNINGS
        if known.category.__module__ == "builtins"
        for module in known.modules
        if not module.endswith("*")
    ]


def filter_known_warnings() -> None:
    """Hide the `KNOWN_WARNINGS` here and in Python processes started from here (idempotent)."""
    for known in KNOWN_WARNINGS:
        warnings.filterwarnings(
            "ignore",
            message=known.message_pattern,
            category=known.category,
            module=rf"({known.module_pattern})\Z",
        )
    logging.getLogger("py.warnings").addFilter(_LOG_FILTER)
    # The user's own options come last, so they take precedence.
    user = [o for o in os.environ.get("PYTHONWARNINGS", "").split(",") if o]
    os.environ["PYTHONWARNINGS"] = ",".join([o for o in warning_options() if o not in user] + user)
