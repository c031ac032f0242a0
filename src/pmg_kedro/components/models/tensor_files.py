"""Named tensors in one .safetensors file with a JSON header (config, seed, model names): the
format of the soft preference embedder's checkpoint and of every `TensorsDataset`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

METADATA_KEY = "pmg_metadata"


def write_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    from safetensors.torch import save_file

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(contiguous, str(path), metadata={METADATA_KEY: json.dumps(metadata)})


def read_tensors(path: str | Path) -> dict[str, Any]:
    """{"tensors": {name: Tensor}, "metadata": the header's dict}."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
        header = fh.metadata() or {}
    return {"tensors": tensors, "metadata": json.loads(header.get(METADATA_KEY, "{}"))}
