"""Keyword quality and cost with and without the keyword adapter (issue 12), in one environment.

1. Runs the given pipelines (default: ingestion, behavior_summarization, keyword_extraction) as
   `kedro run --pipelines ...` would, with the environment's catalog and parameters, and prints
   each scene's keyword-quality report (zero-shot LLM, LoRA LLM and the no-LLM baseline at an
   equal keyword budget) and every node's wall time.
2. `--timing N`: on each scene's evaluation users, times `extract_preference_keywords` with
   `llm_adapter: none` and `lora` (merge included), alternating N times, and prints the ratio.
`--params KEY=VALUE ...` overrides parameters as `kedro run --params` does; `--data-root DIR`
copies the run's inputs (data/02_intermediate, 03_primary, 04_feature) to DIR once and writes
every output there, so a variant never overwrites the default run's datasets.
Usage:
    python benchmarks/keyword_adapter_quality.py --env base --timing 1 --out /tmp/quality.json
    # the zero-shot comparison decoded without repetition penalty, on the last run's behavior:
    python benchmarks/keyword_adapter_quality.py --pipelines keyword_extraction \
        --data-root /tmp/rp10 --params movie.keyword_extraction.generation.repetition_penalty=1.0 \
        emoticon.keyword_extraction.generation.repetition_penalty=1.0 \
        costume.keyword_extraction.generation.repetition_penalty=1.0
"""

import argparse
import functools
import json
import logging
import shutil
import statistics
import time
from pathlib import Path

import yaml
from kedro.framework.hooks import hook_impl
from kedro.framework.hooks.manager import _create_hook_manager
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner

from pmg_kedro.config_loader import project_config_loader
from pmg_kedro.pipelines.keyword_extraction.nodes import extract_preference_keywords
from pmg_kedro.scenes import scene_names

ROOT = Path(__file__).resolve().parents[1]
INPUT_LAYERS = ("02_intermediate", "03_primary", "04_feature")


def runtime_params(pairs: list[str]) -> dict:
    """`a.b.c=1.0` pairs -> a nested dict (values parsed as YAML), as `kedro run --params`."""
    params: dict = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return params


def project_catalog(
    env: str, params: dict | None = None, data_root: Path | None = None
) -> DataCatalog:
    """The environment's catalog with its parameters as `params:` entries, as a KedroSession
    builds it (without loading every registered pipeline); `params` override parameters and
    every file under the data root moves to `data_root`, where given."""
    loader = project_config_loader(env, ROOT / "conf", runtime_params=params or {})
    config = loader["catalog"]
    if data_root is not None:
        default = loader["globals"]["data_root"].rstrip("/") + "/"
        for entry in config.values():
            for key in ("filepath", "path"):
                if isinstance(entry, dict) and str(entry.get(key, "")).startswith(default):
                    entry[key] = str(data_root / entry[key][len(default) :])
    catalog = DataCatalog.from_config(config)

    def add(prefix: str, value) -> None:
        catalog[prefix] = value
        if isinstance(value, dict):
            for key, inner in value.items():
                add(f"{prefix}.{key}", inner)

    catalog["parameters"] = loader["parameters"]
    for key, value in loader["parameters"].items():
        add(f"params:{key}", value)
    return catalog


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


def run_pipelines(make_catalog, names: list[str]) -> tuple[dict, dict]:
    import importlib

    pipeline = Pipeline([])
    for name in names:
        pipeline += importlib.import_module(f"pmg_kedro.pipelines.{name}").create_pipeline()
    catalog = make_catalog()
    times = NodeTimes()
    hooks = _create_hook_manager()
    hooks.register(times)
    SequentialRunner().run(pipeline, catalog, hook_manager=hooks)
    catalog = make_catalog()  # fresh: load what the run saved
    scenes = scene_names()
    reports = {scene: catalog.load(f"{scene}.keyword_quality") for scene in scenes}
    for scene in scenes:
        print(catalog.load(f"{scene}.keyword_quality_report"))
    return reports, times.seconds


def time_adapter(make_catalog, repeats: int) -> dict:
    catalog = make_catalog()
    llm, adapter = catalog.load("llm"), catalog.load("keyword_adapter")
    result = {}
    for scene in scene_names():
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
    parser.add_argument("--params", nargs="*", default=[], help="KEY=VALUE overrides")
    parser.add_argument("--data-root", type=Path, help="copy the inputs here, write here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    make_catalog = functools.partial(
        project_catalog, args.env, runtime_params(args.params), args.data_root
    )
    if args.data_root is not None and not args.data_root.exists():
        for layer in INPUT_LAYERS:
            shutil.copytree(ROOT / "data" / layer, args.data_root / layer)
    out: dict = {"env": args.env, "params": args.params, "data_root": str(args.data_root)}
    if args.pipelines:
        start = time.perf_counter()
        out["reports"], out["node_seconds"] = run_pipelines(make_catalog, args.pipelines.split(","))
        out["pipelines_seconds"] = round(time.perf_counter() - start, 1)
        print(json.dumps(out["node_seconds"], indent=1))
    if args.timing:
        out["timing"] = time_adapter(make_catalog, args.timing)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1, default=str))


if __name__ == "__main__":
    main()
