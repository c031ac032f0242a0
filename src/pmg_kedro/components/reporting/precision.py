"""The compute precision of a model, chosen by the hardware (`dtype: auto`).

bfloat16 halves the memory of the LLM and, on CPUs that compute it natively, speeds its matmuls up
(AMX on Sapphire Rapids and later Xeons, AVX512-BF16 on Cooper Lake and AMD Zen 4). Elsewhere
(AVX2-only CPUs: AMD Zen 2/3, Intel before Cooper Lake) oneDNN emulates it: measured on a 2-core
Zen 3, 300 matmuls of 256x576 by 576x576 took 38.0 s in bfloat16 and 0.9 s in float32 (issue 28).
So `auto` answers bfloat16 only where the CPU has the instructions *and* torch's oneDNN reports
bfloat16 support, float32 elsewhere; on CUDA, bfloat16 where the GPU supports it (the paper
configuration's choice), else float16. An explicit dtype in conf always wins. The environment
variable PMG_AUTO_DTYPE (e.g. `float32`) replaces what `auto` answers on the CPU: the path of CPUs
without native bfloat16, measured on one that has it.

One function decides (`resolve_dtype`); it logs its choice and the reason once per process and
keeps it for the run's provenance (`decisions`, read by `reporting.environment`).
"""

from __future__ import annotations

import logging
import os
import platform
import threading
from dataclasses import asdict, dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)

AUTO = "auto"
AUTO_OVERRIDE_VARIABLE = "PMG_AUTO_DTYPE"
# /proc/cpuinfo flags of native bfloat16 arithmetic (x86).
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")

_LOCK = threading.Lock()
_DECISIONS: dict[tuple[str, str], Precision] = {}


@dataclass(frozen=True)
class Precision:
    """A dtype decision: what was asked, what was chosen, and why."""

    requested: str  # "auto" or the explicit dtype of conf
    device: str  # "cpu", "cuda", "cuda:1", ...
    dtype: str  # the chosen one: "bfloat16", "float32", "float16"
    reason: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class CpuBf16:
    """Whether this CPU computes bfloat16 natively, with the evidence."""

    native: bool
    reason: str
    capability: str  # torch's CPU kernel level ("AVX2", "AVX512", ...)


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (Linux), None where they cannot be read."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def torch_bf16_supported() -> bool:
    """torch's own answer: oneDNN (mkldnn) has bfloat16 kernels for this CPU. On x86 it is also
    True on AVX-512 CPUs without bfloat16 instructions (emulated), so it is not enough alone."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_bf16() -> CpuBf16:
    """Native bfloat16 on this CPU: on x86, torch's oneDNN support and an AMX-BF16 or AVX512-BF16
    flag; elsewhere (ARM) torch's check, which tests the BF16 extension itself."""
    capability = torch.backends.cpu.get_cpu_capability()
    torch_says = torch_bf16_supported()
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return CpuBf16(
            torch_says,
            f"{platform.machine()}: torch reports bfloat16 "
            f"{'supported' if torch_says else 'unsupported'}",
            capability,
        )
    flags = cpu_flags()
    native = sorted(set(NATIVE_BF16_FLAGS) & (flags or set()))
    if not torch_says:
        return CpuBf16(
            False, f"torch's oneDNN has no bfloat16 kernels here ({capability})", capability
        )
    if flags is None:
        return CpuBf16(False, "CPU flags unreadable: native bfloat16 not confirmed", capability)
    if not native:
        return CpuBf16(
            False,
            f"no AMX-BF16 / AVX512-BF16 instructions ({capability}): bfloat16 would be emulated",
            capability,
        )
    return CpuBf16(True, f"native bfloat16: {', '.join(native)} ({capability})", capability)


def _decide(requested: str, device: str) -> Precision:
    if requested != AUTO:
        getattr(torch, requested)  # an unknown name fails here, with torch's message
        return Precision(requested, device, requested, "set explicitly in conf")
    if device.startswith("cuda"):
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return Precision(AUTO, device, "bfloat16", "CUDA device with bfloat16 support")
        return Precision(AUTO, device, "float16", "CUDA device without bfloat16 support")
    if device != "cpu":
        return Precision(AUTO, device, "float32", f"device {device!r}: float32 by default")
    forced = os.environ.get(AUTO_OVERRIDE_VARIABLE)
    if forced:
        getattr(torch, forced)
        return Precision(
            AUTO, device, forced, f"{AUTO_OVERRIDE_VARIABLE}={forced} in the environment"
        )
    cpu = cpu_bf16()
    return Precision(AUTO, device, "bfloat16" if cpu.native else "float32", cpu.reason)


def resolve_dtype(requested: str | None, device: str = "cpu") -> Precision:
    """The dtype to compute in on `device` for a conf value (`auto`, None = `auto`, or a torch dtype
    name). Logged once per process for each (requested, device); kept in `decisions()`."""
    requested = str(requested or AUTO)
    device = str(device)
    choice = _decide(requested, device)
    with _LOCK:
        known = _DECISIONS.get((requested, device))
        _DECISIONS[(requested, device)] = choice
    if known != choice:
        logger.info(
            "precision: %s on %s (asked: %s) - %s", choice.dtype, device, requested, choice.reason
        )
    return choice


def decisions() -> list[dict[str, str]]:
    """Every dtype decision this process has made, for a report's provenance."""
    with _LOCK:
        return [d.as_dict() for d in _DECISIONS.values()]


def provenance() -> dict[str, Any]:
    """The precision part of a report's machine block: this CPU's bfloat16 support, what `auto`
    chooses on it, and the decisions this process made (empty when no model was loaded here)."""
    cpu = cpu_bf16()
    return {
        "cpu_capability": cpu.capability,
        "bf16_native": cpu.native,
        "bf16_reason": cpu.reason,
        "auto_cpu_dtype": _decide(AUTO, "cpu").dtype,
        "decisions": decisions(),
    }
