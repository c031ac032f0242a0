"""Keyword quality and cost with and without the keyword adapter (issue 12), in one environment.

1. Runs the given pipelines (default: ingestion, behavior_summarization, keyword_extraction) as
   `kedro run --pipelines ...` would, with the environment's catalog and parameters, and prints
   each scene's keyword-quality report (zero-shot LLM, LoRA LLM and the no-LLM baseline at an
   equal keyword budget) and every node's wall time.
2. `--timing N`: on each scene's evaluation users, times `extract_preference_keywords` with
   `llm_adapter: none` and `lora` (merge included), alternating N times, and prints the ratio.
Usage:
    python benchmarks/keyword_adapter_quality.py --env base --timing 1 --out /tmp/quality.json
"""

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

from kedro.framework.hooks import hook_impl
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from keyword_adapter_train import project_catalog  # noqa: E402

from pmg_kedro.pipelines.keyword_extraction.nodes import extract_preference_keywords  # noqa: E402
from pmg_kedro.scenes import SCENES  # noqa: E402


class NodeTimes:
    """Wall time of every node run (seconds)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._start: dict[str, float] = {}

    @hook_impl
    def before_node_run(self, node):
        self._start[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node):
        self.seconds[node.name] = round(time.perf_counter() - self._start[node.name], 1)


def run_pipelines(env: str, names: list[str]) -> tuple[dict, dict]:
    import importlib

    pipeline = Pipeline([])
    for name in names:
        pipeline += importlib.import_module(f"pmg_kedro.pipelines.{name}").create_pipeline()
    catalog = project_catalog(env)
    times = NodeTimes()
    hooks = _create_hook_manager()
    hooks.register(times)
    SequentialRunner().run(pipeline, catalog, hook_manager=hooks)
    catalog = project_catalog(env)  # fresh: load what the run saved
    reports = {scene: catalog.load(f"{scene}.keyword_quality") for scene in SCENES}
    for scene in SCENES:
        print(catalog.load(f"{scene}.keyword_quality_report"))
    return reports, times.seconds


def time_adapter(env: str, repeats: int) -> dict:
    catalog = project_catalog(env)
    llm, adapter = catalog.load("llm"), catalog.load("keyword_adapter")
    result = {}
    for scene in SCENES:
        behavior = catalog.load(f"{scene}.behavior_texts")
        behavior = behavior[behavior["purpose"] == "evaluation"]
        items = catalog.load(f"{scene}.items")
        params = catalog.load(f"params:{scene}.keyword_extraction")
        seconds = {"none": [], "lora": []}
        tokens = {}
        for _ in range(repeats):
            for setting in ("none", "lora"):
                start = time.perf_counter()
                table = extract_preference_keywords(
                    behavior, items, llm, adapter, {**params, "llm_adapter": setting}
                )
                seconds[setting].append(time.perf_counter() - start)
                tokens[setting] = int(sum(len(" ".join(a)) for a in table["raw_answers"]))
        none, lora = statistics.mean(seconds["none"]), statistics.mean(seconds["lora"])
        result[scene] = {
            "evaluation_users": len(behavior),
            "prompts": len(behavior) * len(params["attributes"]),
            "seconds_none": [round(s, 1) for s in seconds["none"]],
            "seconds_lora": [round(s, 1) for s in seconds["lora"]],
            "ratio_lora_to_none": round(lora / none, 3),
            "answer_characters": tokens,
        }
        print(scene, result[scene], flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="base")
    parser.add_argument(
        "--pipelines", default="ingestion,behavior_summarization,keyword_extraction"
    )
    parser.add_argument("--timing", type=int, default=0, help="alternating repeats (0: none)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out: dict = {"env": args.env}
    if args.pipelines:
        start = time.perf_counter()
        out["reports"], out["node_seconds"] = run_pipelines(args.env, args.pipelines.split(","))
        out["pipelines_seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(out["node_seconds"], indent=1))
    if args.timing:
        out["timing"] = time_adapter(args.env, args.timing)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
