"""What the CPU benchmarks set before they import the project: `src/` first on the path (they run
from a bare checkout too) and the Makefile's offline defaults, each only where the caller's
environment sets nothing. The paper_* benchmarks have theirs in `paper_common.setup`.

    from local_env import prepare

    ROOT = prepare(OMP_WAIT_POLICY="PASSIVE")  # the benchmark's own extra defaults
    catalog, params = session_catalog("base")  # after prepare: the project's catalog and params
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "KEDRO_DISABLE_TELEMETRY": "1"}


def prepare(**extra: str) -> Path:
    """Put `src/` first on `sys.path`, set OFFLINE and `extra` where unset; return the project root."""
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    for name, value in {**OFFLINE, **extra}.items():
        os.environ.setdefault(name, value)
    return ROOT


def session_catalog(env: str):
    """The catalog and parameters of the project's `env`, from a Kedro session (call `prepare`
    first)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT, env=env) as session:
        context = session.load_context()
        return context.catalog, context.params
