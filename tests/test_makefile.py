"""`make run` preloads the allocator that `make setup` installs, and the preload takes effect."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _dry_run(*args: str) -> str:
    done = subprocess.run(
        ["make", "-n", "run", *args], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return [line for line in done.stdout.splitlines() if "kedro run" in line][-1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_run_preloads_the_installed_tcmalloc_into_kedro_and_its_children():
    line = _dry_run()
    preload = re.search(r"LD_PRELOAD=(\S+)", line)
    assert preload, f"`make run` does not preload an allocator: {line}"
    library = Path(preload.group(1))
    database = subprocess.run(
        ["make", "-pn", "setup"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    installed = re.search(r"^DEBIAN_FILES := (.*)$", database, re.M).group(1).split()
    assert str(library) in installed, "the preloaded library is not one `make setup` installs"
    assert library.exists(), f"{library} missing: `make setup` installs libtcmalloc-minimal4"
    # a child process (as Dask's workers are) of a preloaded process maps it too
    child = "print(open('/proc/self/maps').read().count('tcmalloc'))"
    code = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={"LD_PRELOAD": str(library), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(out.stdout.strip()) > 0 and "cannot be preloaded" not in out.stderr
    # and `TCMALLOC=` switches it off
    assert "LD_PRELOAD" not in _dry_run("TCMALLOC=")
