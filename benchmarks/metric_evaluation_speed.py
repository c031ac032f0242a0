"""Time of the metric_evaluation nodes at the embedded default's size (issue bar: the whole
pipeline under 3 minutes on this 2-core CPU), on synthetic data in the pipeline's contract and the
`conf/base` parameters.

Scenes as in conf/base: costume (64 evaluation users, 2,000 items of 10 classes, SIMULATED hidden
tastes), emoticon (44 users, 20 emoji), movie (64 users, no item images). Every scene: 6 variants
(movie: 3 run, 3 not applicable), 2 noise seeds, 10 history items; Table 2 images for every
soft-embedding sweep variant (base: 1; `--table2-variants 8` for the paper's sweep).

    .venv/bin/python benchmarks/metric_evaluation_speed.py [--users 64] [--seeds 2]
        [--table2-variants 1] [--threads 2] [--feature-input-size N] [--kedro-run]

Prints one JSON line: machine, sizes, parameters and seconds per node and scene. With
`--kedro-run` it also writes the synthetic inputs through a copy of `conf/` whose data_root is a
temporary folder and times the metric_evaluation pipeline on that catalog with Kedro's SequentialRunner (catalog I/O
included, as `kedro run --pipeline metric_evaluation`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

# Idle OpenMP threads must sleep, not spin, before torch starts (as in the Makefile).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from kedro.io import DataCatalog, MemoryDataset  # noqa: E402
from kedro.runner import SequentialRunner  # noqa: E402
from PIL import Image  # noqa: E402

from pmg_kedro.config_loader import project_config_loader  # noqa: E402
from pmg_kedro.pipelines.metric_evaluation import create_pipeline, nodes  # noqa: E402
from pmg_kedro.scenes import generation_variants, scene_conf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCENES = {  # users, items, classes; 0 items = no item images (movie)
    "costume": (64, 2000, 10),
    "emoticon": (44, 20, 20),
    "movie": (64, 0, 0),
}
NO_EMBEDDINGS = ("pmg", "without_keywords", "pmg_unweighted")  # not applicable without images


def base_parameters() -> dict:
    return project_config_loader("base", ROOT / "conf")["parameters"]


def synthetic_scene(name, users, n_items, n_classes, seeds, table2_variants, folder, rng):
    """Inputs of the metric_evaluation nodes for one scene (random 32 px images)."""
    item_ids = [f"i{j:05d}" for j in range(max(n_items, 200))]
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "class_name": [f"c{j % max(n_classes, 1)}" for j in range(len(item_ids))],
        }
    )
    if name == "emoticon":
        items["class_name"] = items["item_id"]
    paths = []
    for item in item_ids[:n_items]:
        path = folder / f"{name}_{item}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    image_index = pd.DataFrame(
        {"item_id": item_ids[:n_items], "image_path": paths, "image_offset": -1}
    )
    pool = item_ids[:n_items] if n_items else item_ids  # histories of items with images
    user_ids = [f"u{k:03d}" for k in range(users)]
    histories = pd.DataFrame(
        {
            "user_id": user_ids,
            "history": [list(rng.choice(pool, 10)) for _ in user_ids],
            "target": [str(rng.choice(pool)) for _ in user_ids],
            "simulated": name == "costume",
        }
    )
    data = {
        "histories": histories,
        "user_split": pd.DataFrame({"user_id": user_ids, "split": "evaluation", "seed": 0}),
        "items": items,
        "image_index": image_index,
        "users": pd.DataFrame({"user_id": user_ids, "simulated": name == "costume"}),
        "personalization_report": {"not_applicable": {}},
    }
    if name == "costume":
        data["users"]["taste_classes"] = [[f"c{k % 10}", f"c{(k + 3) % 10}"] for k in range(users)]
    for variant in generation_variants():
        rows, chosen = [], {}
        if not (n_items == 0 and variant in NO_EMBEDDINGS):
            for user in user_ids:
                for seed in seeds:
                    for j in range(5):
                        d_p, d_t = rng.uniform(0.01, 0.4, 2)
                        key = f"{user}/s{seed}/c{j}"
                        rows.append((user, seed, d_p, d_t, 0.5 * np.log(d_p * d_t), j == 2, key))
                    chosen[f"{user}/s{seed}"] = _noise(rng)
        else:
            data["personalization_report"]["not_applicable"][variant] = "not applicable: no images"
        columns = ["user_id", "seed", "d_p", "d_t", "z", "chosen", "image_key"]
        data[f"{variant}_selections"] = pd.DataFrame(rows, columns=columns)
        data[f"{variant}_chosen_images"] = chosen
    sweep = [(n, p) for n in (4, 2, 8, 16) for p in (True, False)][:table2_variants]
    table2 = [
        (u, s, f"L{n}_{'ptuning' if p else 'no_ptuning'}", n, p)
        for n, p in (sweep if n_items else [])
        for u in user_ids
        for s in seeds
    ]
    t2 = pd.DataFrame(table2, columns=["user_id", "seed", "sweep_entry", "n_tokens", "p_tuning"])
    t2["image_key"] = t2["sweep_entry"] + "/" + t2["user_id"] + "/s" + t2["seed"].astype(str)
    data["table2_selections"] = t2
    data["table2_images"] = {k: _noise(rng) for k in t2["image_key"]}
    return data


def _noise(rng) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))


def timed(record: dict, name: str, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    record[name] = round(time.perf_counter() - start, 2)
    return out


def run_scene(name, data, params, weighted_generation, ablations) -> dict:
    t: dict[str, float] = {}
    probe = timed(
        t,
        "fit_semantic_probe",
        nodes.fit_semantic_probe,
        data["items"],
        data["image_index"],
        params,
    )
    variant_inputs = {
        k: v
        for k, v in data.items()
        if k.endswith(("_selections", "_chosen_images")) and not k.startswith("table2")
    }
    common = {k: data[k] for k in ("histories", "user_split", "items", "image_index", "users")}
    image_metrics, notes = timed(
        t,
        "evaluate_chosen_images",
        nodes.evaluate_chosen_images,
        **common,
        personalization_report=data["personalization_report"],
        semantic_probe=probe,
        params=params,
        **variant_inputs,
    )
    t2_metrics, t2_notes = timed(
        t,
        "evaluate_table2_images",
        nodes.evaluate_table2_images,
        *common.values(),
        probe,
        data["table2_selections"],
        data["table2_images"],
        params,
    )
    table1, comparisons, _ = timed(
        t, "build_table1", nodes.build_table1, image_metrics, notes, params
    )
    table2, _ = timed(t, "build_table2", nodes.build_table2, t2_metrics, t2_notes, params)
    timed(
        t,
        "summarize",
        nodes.summarize_metric_evaluation,
        table1,
        comparisons,
        table2,
        notes,
        t2_notes,
        probe,
    )
    figure_args = [data[k] for k in ("histories", "user_split", "users", "image_index")]
    chosen = {v: data[f"{v}_chosen_images"] for v in ("without_both", "pmg")}
    fig = timed(
        t,
        "comparison_figure",
        nodes.plot_comparison_figure,
        *figure_args,
        weighted_generation,
        params,
        **chosen,
    )
    plt.close(fig)
    chosen = {v: data[f"{v}_chosen_images"] for v in ("without_embeddings", "pmg")}
    fig = timed(
        t,
        "embedding_figure",
        nodes.plot_embedding_figure,
        *figure_args,
        weighted_generation,
        params,
        **chosen,
    )
    plt.close(fig)
    grid = {v: data[f"{v}_selections"] for v, a in ablations.items() if a["grid"]}
    fig = timed(
        t,
        "selection_scatter",
        nodes.plot_selection_scatter,
        ablations,
        weighted_generation,
        params,
        **grid,
    )
    plt.close(fig)
    t["total"] = round(sum(t.values()), 2)
    t["chosen_images"] = int(len(image_metrics))
    t["table2_images"] = int(len(t2_metrics))
    return t


def kedro_run(inputs: dict[str, dict], folder: Path) -> float:
    """Seconds of the metric_evaluation pipeline on `inputs`, saved through the project's catalog
    (a copy of conf/ whose data_root is `folder`/data) and run there with Kedro's SequentialRunner:
    what `kedro run --pipeline metric_evaluation` does, without hooks and without building the
    other registered pipelines."""
    conf = folder / "conf"
    shutil.copytree(ROOT / "conf", conf)
    globals_file = conf / "base" / "globals.yml"
    settings = yaml.safe_load(globals_file.read_text())
    globals_file.write_text(yaml.safe_dump({**settings, "data_root": str(folder / "data")}))
    loader = project_config_loader("base", conf)
    catalog = DataCatalog.from_config(loader["catalog"])
    _add_parameters(catalog, loader["parameters"], "params:")
    for scene, data in inputs.items():
        for key, value in data.items():
            name = key
            for suffix in ("selections", "chosen_images"):
                variant = key.removesuffix(f"_{suffix}")
                if variant in generation_variants():
                    name = f"{variant}.{suffix}"
            catalog.save(f"{scene}.{name}", value)
    start = time.perf_counter()
    SequentialRunner().run(create_pipeline(), catalog)
    return round(time.perf_counter() - start, 1)


def _add_parameters(catalog: DataCatalog, parameters: dict, prefix: str) -> None:
    """`params:a`, `params:a.b`, ... as Kedro's context adds them."""
    for key, value in parameters.items():
        catalog[f"{prefix}{key}"] = MemoryDataset(value, copy_mode="assign")
        if isinstance(value, dict):
            _add_parameters(catalog, value, f"{prefix}{key}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=None, help="override every scene's users")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--table2-variants", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--feature-input-size", type=int, default=None, help="override MobileNetV2's input size"
    )
    parser.add_argument("--kedro-run", action="store_true", help="also time `kedro run`")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parameters = base_parameters()
    ablations = scene_conf()["ablations"]
    seeds = list(range(2024, 2024 + args.seeds))
    rng = np.random.default_rng(0)
    results, inputs, kedro_seconds = {}, {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for name, (users, n_items, n_classes) in SCENES.items():
            users = args.users or users
            data = synthetic_scene(
                name, users, n_items, n_classes, seeds, args.table2_variants, Path(tmp), rng
            )
            params = parameters[name]["metric_evaluation"]
            if args.feature_input_size:
                params["feature_distance"]["input_size"] = args.feature_input_size
            weighted_generation = {**parameters[name]["weighted_generation"], "seeds": seeds}
            results[name] = run_scene(name, data, params, weighted_generation, ablations)
            inputs[name] = data
        if args.kedro_run:
            kedro_seconds = kedro_run(inputs, Path(tmp))
    report = {
        "what": "metric_evaluation nodes on synthetic scenes (random 32 px images) with the "
        "conf/base parameters",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "torch_threads": args.threads,
        "seeds": seeds,
        "table2_variants": args.table2_variants,
        "feature_input_size": params["feature_distance"]["input_size"],
        "n_boot": parameters["costume"]["metric_evaluation"]["bootstrap"]["n_boot"],
        "seconds": results,
        "total_seconds": round(sum(r["total"] for r in results.values()), 1),
        "kedro_run_seconds": kedro_seconds,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
