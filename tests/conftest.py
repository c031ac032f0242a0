"""Shared test setup: offline, no telemetry, the project root as working directory for sessions."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def run_pipeline():
    """Run registered pipelines in the `test` environment through a KedroSession.

    Returns a function (*pipeline_names, runtime_params=None, **run_kwargs) -> the run's output.
    """
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)

    def _run(*pipeline_names: str, runtime_params: dict | None = None, **kwargs):
        with KedroSession.create(
            project_path=PROJECT_ROOT, env="test", runtime_params=runtime_params
        ) as session:
            return session.run(pipeline_names=list(pipeline_names), **kwargs)

    return _run


@pytest.fixture(scope="session")
def test_catalog():
    """The `test` environment's catalog (fresh per call, to load what a run saved)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)

    def _catalog():
        with KedroSession.create(project_path=PROJECT_ROOT, env="test") as session:
            return session.load_context().catalog

    return _catalog
