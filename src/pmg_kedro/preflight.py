"""A run that cannot work stops before its first node, with one error that lists why.

Before a pipeline runs, `PreflightHook` asks every dataset the run will load from the catalog
(the pipeline's free inputs) what it needs that is not there: a dataset says so through a
`preflight()` method that returns its problems, each sentence saying what is missing and how to
provide it (the LLM and model folders of `datasets/`, the raw scene sources). The checker knows
no dataset's internals; a dataset without the method has nothing to check. All problems come
back as one `PreflightError` naming each catalog entry and the conf file that defines it, so
`kedro run --env paper` without the paper's models fails in seconds instead of after ingestion.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from kedro.framework.hooks import hook_impl


class PreflightError(RuntimeError):
    """What a run needs and does not have, all of it; `problems` holds (entry, problem) pairs."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = [
            f"this run cannot start: {len(problems)} thing{'s' * (len(problems) != 1)} it needs "
            f"{'are' if len(problems) != 1 else 'is'} missing (no node has run):",
            *(f"  - {entry}: {problem}" for entry, problem in problems),
        ]
        super().__init__("\n".join(lines))

    def __reduce__(self):
        return type(self), (self.problems,)


def device_problem(device: Any) -> str | None:
    """Why `load_args.device` cannot be used here (a CUDA device without CUDA), else None."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    if torch.cuda.is_available():
        return None
    return (
        f"load_args.device is {str(device)!r} but torch sees no CUDA GPU on this machine: "
        "run on a GPU machine, or set `load_args: {device: cpu}` in this entry"
    )


def folder_hint(env_var: str | None, what: str) -> str:
    """How to provide a folder: its environment variable (when the entry has one) or its path."""
    if env_var:
        return f"set {env_var} to {what}, or set `path` of this entry"
    return f"set `path` of this entry to {what}"


def _dataset_problems(dataset: Any) -> list[str]:
    """The problems `dataset` reports (a `CachedDataset` answers for the dataset it wraps)."""
    if not hasattr(dataset, "preflight"):
        dataset = getattr(dataset, "_dataset", dataset)
    check = getattr(dataset, "preflight", None)
    return list(check()) if callable(check) else []


def preflight_problems(pipeline: Any, catalog: Any) -> list[tuple[str, str]]:
    """(entry, problem) for every free input of `pipeline` whose catalog dataset reports one."""
    found = []
    for name in sorted(pipeline.inputs()):
        if name.startswith("params:") or name == "parameters":
            continue
        dataset = catalog.get(name)
        if dataset is not None:
            found += [(name, problem) for problem in _dataset_problems(dataset)]
    return found


def defining_files(conf_source: Path, envs: Iterable[str], names: Iterable[str]) -> dict[str, str]:
    """{entry: the catalog file (relative to the conf folder's parent) that defines it}, the
    first environment of `envs` that defines an entry winning (pass the run's before base)."""
    wanted, found = set(names), {}
    for env in envs:
        for path in sorted((conf_source / env).glob("**/catalog*.yml")):
            keys = yaml.safe_load(path.read_text()) or {}
            for name in sorted(wanted & set(keys) - set(found)):
                found[name] = path.relative_to(conf_source.parent).as_posix()
    return found


class PreflightHook:
    """Raises `PreflightError` before the first node when the run's inputs report problems."""

    def __init__(self) -> None:
        self._conf_source: Path | None = None
        self._envs: tuple[str, ...] = ()

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        loader = context.config_loader
        self._conf_source = Path(str(loader.conf_source))
        run_env = loader.env or getattr(loader, "default_run_env", "")
        self._envs = tuple(e for e in (run_env, getattr(loader, "base_env", "")) if e)

    # First among the hooks: nothing else starts (an MLflow run, a Dask cluster) for a run that stops.
    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        problems = preflight_problems(pipeline, catalog)
        if not problems:
            return
        where = {}
        if self._conf_source is not None and self._conf_source.is_dir():
            where = defining_files(self._conf_source, self._envs, {n for n, _ in problems})
        raise PreflightError(
            [(f"{n} ({where[n]})" if n in where else n, problem) for n, problem in problems]
        )
