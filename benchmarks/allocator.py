"""glibc's malloc against tcmalloc for this project's CPU work (why `make run` preloads tcmalloc).

    .venv/bin/python benchmarks/allocator.py [--env base] [--repeats 2] [--users 32] [--images 64]

Three workloads of `make run`, each in its own process, one allocator after the other, `--repeats`
rounds: the recommendation pipeline's LLM keywords of `--users` movie users (batched greedy
decoding, the node's own code), `--images` images of movie captions from the generator
(`render_in_shards`, the env's steps, sampler and batch), and one MMGCN run of movie's Generated-user setting (seed 2024, the
recommendation node's own code: training to its early stop, then the test metrics). Every process runs at one torch thread with
`OMP_WAIT_POLICY=PASSIVE`, as `make run`'s workers do. Prints each run's seconds and minor page
faults, and whether the outputs (keywords, image bytes, the MMGCN run's metrics and epochs)
were the same under both allocators. Needs a `kedro run --env ENV` first (it reads the saved
recommendation split and features) and Debian's libtcmalloc-minimal4 (`make setup`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time

from local_env import prepare, session_catalog

ROOT = prepare(OMP_WAIT_POLICY="PASSIVE")
TCMALLOC = f"/usr/lib/{platform.machine()}-linux-gnu/libtcmalloc_minimal.so.4"
WORKLOADS = ("llm_keywords", "generator_images", "mmgcn_training")


def _digest(value) -> str:
    return hashlib.sha256(value).hexdigest()[:16]


def _llm_keywords(catalog, p, users: int):
    from pmg_kedro.pipelines.recommendation import nodes

    split = catalog.load("movie.recommendation_split")
    few = split[split["user_id"].isin(sorted(split["user_id"].unique())[:users])]
    items, llm = catalog.load("movie.items"), catalog.load("llm")
    start = time.perf_counter()
    keywords = nodes.extract_recommendation_keywords(few, items, llm, p)
    seconds = time.perf_counter() - start
    return seconds, _digest(json.dumps([list(k) for k in keywords["keywords"]]).encode())


def _generator_images(catalog, p, images: int):
    from pmg_kedro.components.method.pmg import render_in_shards

    generator = catalog.load("generator")
    items = catalog.load("movie.items")
    texts = items["caption"].astype(str).tolist()[:images]
    start = time.perf_counter()
    images = render_in_shards(
        generator, [str(i) for i in range(len(texts))], texts, p["image_generation"], "benchmark"
    )
    seconds = time.perf_counter() - start
    return seconds, _digest(b"".join(image.tobytes() for image in images))


def _mmgcn_training(catalog, p, _):
    from pmg_kedro.pipelines.recommendation import nodes

    one = {**p, "settings": {"generated_user": p["settings"]["generated_user"]}, "seeds": [2024]}
    inputs = [
        catalog.load(f"movie.recommendation_{name}")
        for name in ("split", "item_features", "user_features")
    ]
    start = time.perf_counter()
    rows = nodes.run_recommendation_experiment(*inputs, one)
    seconds = time.perf_counter() - start
    return seconds, _digest(rows.drop(columns="seconds").to_json().encode())


def worker(workload: str, env: str, size: int) -> None:
    """One workload in this process; prints one JSON line."""
    import torch

    torch.set_num_threads(1)
    catalog, params = session_catalog(env)
    p = params["movie"]["recommendation"]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    seconds, digest = globals()[f"_{workload}"](catalog, p, size)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({"seconds": seconds, "minor_faults": faults, "digest": digest}))


def _run(workload: str, allocator: str, args) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if allocator == "tcmalloc":
        env.update(LD_PRELOAD=TCMALLOC, TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD=str(1 << 40))
    size = args.images if workload == "generator_images" else args.users
    command = [sys.executable, __file__, "--worker", workload, "--env", args.env]
    done = subprocess.run(command + ["--size", str(size)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{workload} under {allocator} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="base")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--worker", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.env, args.size)
    if not os.path.exists(TCMALLOC):
        raise SystemExit(f"{TCMALLOC} is missing: `make setup` installs libtcmalloc-minimal4")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.2f}; env {args.env}, {args.users} movie users, {args.images} "
        f"images, one torch thread, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    )
    for workload in WORKLOADS:
        runs = {"glibc": [], "tcmalloc": []}
        for _ in range(args.repeats):
            for allocator in runs:
                runs[allocator].append(_run(workload, allocator, args))
        digests = {r["digest"] for rs in runs.values() for r in rs}
        for allocator, rs in runs.items():
            print(
                f"{workload:>17} {allocator:>8}: "
                + ", ".join(f"{r['seconds']:.1f} s ({r['minor_faults']:,} faults)" for r in rs)
            )
        best = {a: min(r["seconds"] for r in rs) for a, rs in runs.items()}
        print(
            f"{'':>17} best of {args.repeats}: tcmalloc {best['glibc'] / best['tcmalloc']:.2f}x "
            f"glibc; outputs {'identical' if len(digests) == 1 else 'DIFFERENT'}"
        )


if __name__ == "__main__":
    main()
