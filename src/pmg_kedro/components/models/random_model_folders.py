"""Random models (`paper_models`) written as folders laid out exactly as the downloaded models
are, so they load through the same code as real weights; a marker file beside the weights says
which random architecture a folder holds, and a folder without it is never touched.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pmg_kedro.components.models.paper_models import (
    ARCHITECTURES,
    CLIP_MEAN,
    CLIP_STD,
    NAMES,
    OPEN_CLIP,
    SIZES,
    _check,
    clip_tokenizer_files,
    llm_tokenizer,
    random_llama,
    random_open_clip,
    random_stable_diffusion,
)

logger = logging.getLogger(__name__)

# Written beside the weights: which random architecture the folder holds (a folder without it,
# e.g. real downloaded weights, is never rebuilt or overwritten).
MARKER = "pmg_random_init.json"


def spec_of(kind: str, size: str, seed: int = 0) -> dict[str, Any]:
    """What a random folder holds; stored in its MARKER and compared before it is reused."""
    _check(kind, size)
    arch = json.dumps(ARCHITECTURES[kind][size], sort_keys=True)
    return {
        "kind": kind,
        "architecture": NAMES[kind],
        "size": size,
        "seed": int(seed),
        "config_sha1": hashlib.sha1(arch.encode()).hexdigest()[:12],
        "weights": "random initialisation (no pretrained weights): for timing and code paths only",
    }


def _write_llm(folder: Path, size: str, seed: int, device, dtype) -> None:
    tokenizer = llm_tokenizer()
    model = random_llama(size, tokenizer, seed, device, dtype)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _write_generator(folder: Path, size: str, seed: int, device, dtype) -> None:
    from diffusers import StableDiffusionPipeline

    parts = random_stable_diffusion(size, seed, device)
    parts["unet"].to(dtype)
    parts["vae"].to(dtype)
    pipe = StableDiffusionPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(folder)  # model_index.json, unet/, vae/, text_encoder/, tokenizer/, ...
    # the tokenizer files as SD 1.5 ships them (vocab.json, merges.txt), not a tokenizer.json
    shutil.rmtree(folder / "tokenizer")
    clip_tokenizer_files(folder / "tokenizer")


def _write_scorer(folder: Path, size: str, seed: int, device, dtype) -> None:
    from safetensors.torch import save_file

    model = random_open_clip(size, seed, device)
    config = {"model_cfg": OPEN_CLIP[size], "preprocess_cfg": {"mean": CLIP_MEAN, "std": CLIP_STD}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "open_clip_model.safetensors")


WRITERS: dict[str, Callable] = {
    "llm": _write_llm,
    "generator": _write_generator,
    "scorer": _write_scorer,
}


def random_init_args(random_init: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """A catalog entry's `random_init: {size: full | tiny, seed: int}`, checked; {} when absent."""
    random_init = dict(random_init or {})
    unknown = set(random_init) - {"size", "seed"}
    if unknown or (random_init and random_init.get("size") not in SIZES):
        raise ValueError(
            f"{where}: random_init takes `size` ({' or '.join(SIZES)}) and optionally `seed`, "
            f"got {random_init}"
        )
    return random_init


def random_folder_state(folder: str | Path, spec: dict) -> str:
    """`missing`, `current` (holds `spec`), `stale` (another random spec) or `foreign` (a folder
    this module did not write, e.g. real weights)."""
    folder = Path(folder)
    if not folder.exists():
        return "missing"
    marker = folder / MARKER
    if not marker.is_file():
        return "foreign"
    return "current" if json.loads(marker.read_text()) == spec else "stale"


def materialise_random_model(
    kind: str,
    folder: str | Path,
    size: str,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
) -> Path:
    """Write the random `kind` model at `folder` unless it already holds the same spec.

    A stale random folder (another size or seed) is rebuilt; a folder without the marker is never
    touched (an error names it). Written beside the destination and renamed, so an interrupted
    build leaves nothing behind.
    """
    folder = Path(folder)
    spec = spec_of(kind, size, seed)
    state = random_folder_state(folder, spec)
    if state == "current":
        return folder
    if state == "foreign":
        raise FileExistsError(
            f"{folder}: exists without {MARKER}, so it is not a random {kind} folder written by "
            "pmg_kedro; remove it or point the catalog entry's path elsewhere"
        )
    start = time.perf_counter()
    logger.info(
        "writing a random %s (%s, %s size, seed %d) to %s", kind, NAMES[kind], size, seed, folder
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    staging.chmod(0o755)
    try:
        with torch.no_grad():
            WRITERS[kind](staging, size, int(seed), device, getattr(torch, dtype))
        (staging / MARKER).write_text(json.dumps(spec, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("random %s written in %.1f s", kind, time.perf_counter() - start)
    return folder
