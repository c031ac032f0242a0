"""`kedro run --env paper_random_tiny` in a child process, beside the rest of the suite.

The run is about two minutes of one core (tests/pipelines/test_paper_random.py reads it), and the
test process leaves the second core of a 2-core machine mostly idle: the root conftest starts this
child as soon as pytest has collected a test that reads the run, and the module's `run` fixture
waits for it. The run is the one the fixture made in its own process before (the same session, env
and one torch thread), so the tests check the same outputs; what the in-process run showed only
in memory, which models the swap group parked, the child writes to a JSON file beside its log.

    python -m tests.pipelines.paper_random_background ENV RESULT.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
STASH_KEY = pytest.StashKey()  # the session's BackgroundRun, in pytest's config.stash


class BackgroundRun:
    """One child process running `env`'s `__default__` pipeline; `wait()` gives its result."""

    def __init__(self, env: str, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.env, self.log, self.result = env, folder / "run.log", folder / "result.json"
        self.result.unlink(missing_ok=True)
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.pipelines.paper_random_background", env, self.result],
                cwd=PROJECT_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "OMP_NUM_THREADS": "1"},
            )

    def wait(self, timeout: float) -> dict:
        """The child's result once it has finished; its log's last lines if it failed."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as late:
            self.stop()
            what = f"`kedro run --env {self.env}` ran past {timeout} s; {self._tail()}"
            raise RuntimeError(what) from late
        if code != 0 or not self.result.is_file():
            raise RuntimeError(f"`kedro run --env {self.env}` exited with {code}; {self._tail()}")
        return json.loads(self.result.read_text())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return f"the last {len(text)} lines of {self.log}:\n" + "\n".join(text)


def parked_models() -> list[str]:
    """The models this process's swap group parked (conf/paper_random_tiny puts all in one)."""
    from pmg_kedro.components.models.gpu_residency import swap_group

    return [key for key, action in swap_group("models", "cpu").moves if action == "park"]


def main(env: str, result: str) -> None:
    import torch
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    torch.set_num_threads(1)  # as the test module's `one_thread` fixture
    bootstrap_project(PROJECT_ROOT)
    with KedroSession.create(project_path=PROJECT_ROOT, env=env) as session:
        session.run()
    Path(result).write_text(json.dumps({"parked": parked_models()}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
