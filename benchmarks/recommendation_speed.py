"""Cost of the `recommendation` pipeline on this machine (paper §4.5; not a test).

    # the experiment with the images already generated (bar: under 10 minutes in base)
    .venv/bin/python benchmarks/recommendation_speed.py run [--env base] [--tags recommendation_experiment]
    # the image stages per unit: LLM keywords per user, images and MobileNetV2 features per image
    .venv/bin/python benchmarks/recommendation_speed.py stages [--env base] [--scene movie] [--users 64]

`run` times `kedro run --pipeline recommendation` (all scenes, settings and seeds of the env) and
prints each setting's mean epochs and seconds from the saved results. `stages` runs the nodes'
own code on the first `--users` users / items of the latest saved split and projects the cost for
all of them. Needs `kedro run --pipeline ingestion` first (and, for `run` with the experiment tag,
`--tags recommendation_images`). Prints figures with model, env, sizes and threads.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time

from local_env import prepare, session_catalog

ROOT = prepare(OMP_WAIT_POLICY="PASSIVE")


def _machine() -> str:
    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def run(args) -> None:
    from pmg_kedro.scenes import scenes_where

    command = [
        str(ROOT / ".venv/bin/kedro"),
        "run",
        "--pipeline",
        "recommendation",
        "--env",
        args.env,
    ]
    for tag in args.tags:
        command += ["--tags", tag]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        print(done.stdout[-3000:], done.stderr[-3000:])
        raise SystemExit(f"kedro run failed ({done.returncode})")
    print(
        f"`{' '.join(command[1:])}`: {seconds:.1f} s wall ({seconds / 60:.2f} min) on {_machine()}"
    )
    catalog, params = session_catalog(args.env)
    for scene in scenes_where("recommendation"):
        results = catalog.load(f"{scene}.recommendation_results")
        split = catalog.load(f"{scene}.recommendation_split")
        summary = results.groupby("setting", sort=False)[["epochs", "seconds"]].agg(["mean", "sum"])
        print(
            f"\n{scene}: {split['user_id'].nunique()} users, {split['item_id'].nunique()} items, "
            f"{(split['split'] == 'train').sum()} training pairs, seeds "
            f"{params[scene]['recommendation']['seeds']}; MMGCN training time "
            f"{results['seconds'].sum():.1f} s in all"
        )
        print(summary.round(1).to_string())


def stages(args) -> None:
    import torch

    from pmg_kedro.components.evaluation.features import MobileNetFeatures
    from pmg_kedro.components.method.pmg import render_in_shards
    from pmg_kedro.pipelines.recommendation import nodes

    catalog, params = session_catalog(args.env)
    p = params[args.scene]["recommendation"]
    split = catalog.load(f"{args.scene}.recommendation_split")
    items = catalog.load(f"{args.scene}.items")
    users = sorted(split["user_id"].unique())
    few = split[split["user_id"].isin(users[: args.users])]
    llm = catalog.load("llm")
    start = time.perf_counter()
    keywords = nodes.extract_recommendation_keywords(few, items, llm, p)
    llm_s = (time.perf_counter() - start) / len(keywords)
    tokens = llm.count_tokens(keywords["prompt"].tolist())
    print(
        f"{args.scene} user keywords: {llm_s:.3f} s/user ({llm.name}, batch "
        f"{p['user_images']['generation']['batch_size']}, {p['user_images']['generation']['max_new_tokens']} "
        f"new tokens, mean prompt {sum(tokens) / len(tokens):.0f} tokens, {len(keywords)} users, "
        f"{int(keywords['fallback'].sum())} fallbacks) -> {llm_s * len(users) / 60:.1f} min for all "
        f"{len(users)} users"
    )
    generator = catalog.load("generator")
    texts = [", ".join(k) for k in keywords["keywords"]][: args.users]
    texts = (texts * (1 + args.images // max(len(texts), 1)))[: args.images]
    start = time.perf_counter()
    keys = [str(i) for i in range(len(texts))]
    images = render_in_shards(generator, keys, texts, p["image_generation"], "benchmark")
    gen_s = (time.perf_counter() - start) / len(images)
    features = p["features"]
    extractor = MobileNetFeatures(int(features["input_size"]))
    start = time.perf_counter()
    extractor.pooled_images(images, int(features["image_size"]), int(features["batch_size"]))
    feat_s = (time.perf_counter() - start) / len(images)
    n_items = split["item_id"].nunique()
    g = p["image_generation"]
    print(
        f"images: {gen_s:.4f} s/image ({g['steps']} {g['sampler']} steps, batch {g['batch_size']}, "
        f"{len(images)} images) -> users {gen_s * len(users):.0f} s, items without an image at most "
        f"{gen_s * n_items:.0f} s ({n_items} items)"
    )
    print(
        f"MobileNetV2 features: {feat_s:.4f} s/image at {p['features']['input_size']} px "
        f"-> {feat_s * (len(users) + n_items):.0f} s for users + items"
    )
    print(f"machine: {_machine()}; torch threads during the run: {torch.get_num_threads()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run")
    r.add_argument("--env", default="base")
    r.add_argument("--tags", nargs="*", default=["recommendation_experiment"])
    s = sub.add_parser("stages")
    s.add_argument("--env", default="base")
    s.add_argument("--scene", default="movie")
    s.add_argument("--users", type=int, default=64)
    s.add_argument("--images", type=int, default=128)
    args = parser.parse_args()
    {"run": run, "stages": stages}[args.what](args)


if __name__ == "__main__":
    main()
