"""Known third-party warnings are hidden by message and issuing module, and nothing else is."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import subprocess
import sys
import warnings

import pytest

from pmg_kedro.known_warnings import (
    KNOWN_WARNINGS,
    KnownWarningsLogFilter,
    filter_known_warnings,
    module_of,
    warning_options,
)

KEDRO = os.path.join(os.path.dirname(sys.executable), "kedro")


def _shown(message: str, category: type[Warning], module: str) -> bool:
    """Whether `message`, issued from `module`, passes the project's filters."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        filter_known_warnings()
        warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module)
    return bool(caught)


def _issuer(known) -> str:
    """A module that issues `known` ("package.*": a module in package)."""
    return known.modules[0].replace("*", "some_module")


@pytest.mark.parametrize("known", KNOWN_WARNINGS, ids=lambda k: k.message[:30])
def test_a_known_warning_is_hidden_only_from_its_modules(known):
    message = known.message + " and the rest of the message"
    assert not _shown(message, known.category, _issuer(known))
    assert _shown(message, known.category, "pmg_kedro.components.models.llm")  # the project's own
    assert _shown("an unrelated notice", known.category, _issuer(known))


def test_package_modules_match_what_is_under_the_package_only():
    dotted = next(k for k in KNOWN_WARNINGS if "pmg_kedro.pipelines.*" in k.modules)
    assert not _shown(dotted.message, UserWarning, "pmg_kedro.pipelines.ingestion.pipeline")
    assert _shown(dotted.message, UserWarning, "pmg_kedro.components.data.prompts")


def _record(message: str, module: str) -> logging.LogRecord:
    """The `py.warnings` record `logging.captureWarnings` makes of a warning issued in `module`."""
    filename = importlib.util.find_spec(module).origin
    text = warnings.formatwarning(message, UserWarning, filename, 187, "color_warning(")
    return logging.LogRecord("py.warnings", logging.WARNING, filename, 187, "%s", (text,), None)


def test_the_log_filter_drops_known_warnings_that_bypassed_the_warnings_filters():
    """mlflow shows its check under its own "once" filter: the log record is the last stop."""
    log_filter = KnownWarningsLogFilter()
    coloured = "\x1b[33mAdd type hints to the `predict` method to enable data validation\x1b[0m"
    module = "mlflow.pyfunc.utils.data_validation"
    assert module_of(importlib.util.find_spec(module).origin) == module
    assert not log_filter.filter(_record(coloured, module))
    assert log_filter.filter(_record("Add type hints, says the project", "pmg_kedro.hooks"))
    assert log_filter.filter(_record("something else entirely", module))


def _clean_env(**extra) -> dict[str, str]:
    """This environment without the filters importing pmg_kedro exported, lines unwrapped."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    return {**env, "COLUMNS": "250", "KEDRO_DISABLE_TELEMETRY": "1", **extra}


def test_spawned_processes_get_the_known_warnings_as_options():
    """`kedro viz run` serves from a process that imports Kedro-Viz's web app before the
    project: the filters reach it through PYTHONWARNINGS."""
    probe = [sys.executable, "-c", "import kedro_viz.api.apps"]
    noisy = subprocess.run(probe, env=_clean_env(), capture_output=True, text=True, timeout=300)
    assert "ORJSONResponse is deprecated" in noisy.stderr  # what there is to hide
    env = _clean_env(PYTHONWARNINGS=",".join(warning_options()))
    quiet = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "Warning" not in quiet.stderr


def test_a_kedro_command_starts_with_the_projects_own_lines(project_root):
    """`kedro catalog list-patterns --env test` makes a session (config loader, kedro-mlflow's
    hook) and builds the pipelines (torch_geometric): no known warning reaches its output."""
    result = subprocess.run(
        [KEDRO, "catalog", "list-patterns", "--env", "test"],
        cwd=project_root,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "'{scene}.recommendation_report'" in output  # the command's own answer
    files = {m.removesuffix("*").replace(".", "/") for k in KNOWN_WARNINGS for m in k.modules}
    warning_lines = [line for line in output.splitlines() if re.search(r"\w+Warning\b", line)]
    for known in KNOWN_WARNINGS:
        assert known.message not in output, known.message
    assert [line for line in warning_lines if any(f in line for f in files)] == []
