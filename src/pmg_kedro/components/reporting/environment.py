"""The run's environment in reports: the machine, its precision, the torch thread count, JSON-safe
values."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from pmg_kedro.components.reporting import precision


def machine_description(torch_threads: int | None = None) -> dict[str, Any]:
    """Where a run ran: CPU model, cores, torch threads (`torch_threads`, else the current
    setting), torch and Python versions, platform, the 1-minute load average (the machine
    may be shared with other work), and the precision: whether the CPU computes bfloat16 natively,
    what `dtype: auto` chooses on it, and the dtype decisions of this process
    (`precision.provenance`)."""
    return {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": int(torch_threads or torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "precision": precision.provenance(),
    }


def _cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with `n` torch CPU threads, then restore the process setting; with None or
    0 the setting is left as it is. Float reductions depend on the thread count, so a node that
    fixes it gives the same results for the same data and seeds."""
    if not n:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def json_safe(value: Any) -> Any:
    """`value` with plain JSON types only: mappings with string keys, lists for tuples, Python
    numbers for numpy scalars, None for NaN (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
