"""The sharded per-user stages on a local Dask cluster of 1 worker, then 2 (issue 20; not a test).

    .venv/bin/python benchmarks/sharding_speed.py [--scene movie] [--users 96]
        [--generation-users 48] [--shard-size 16] [--workers 1 2] [--repeats 1]

`--workers 0 1 2` adds the same shards run one after the other in this process (`cluster: none`):
what the cluster gains over no cluster, not only two workers over one.

Base environment, one scene. Once: `ingestion` for the scene into a scratch data root (a copy of
conf with base's `data_root` moved) and the recommendation split. Then per worker count, one after
the other: a local cluster of single-threaded workers, the models loaded on every worker (timed
apart: a run pays it once), and the nodes' own sharded code, timed per stage:
  - recommendation user keywords (LLM_g, `extract_recommendation_keywords`) of `--users` users;
  - their user images (`generate_recommendation_user_images`, `PMG.render`);
  - candidates and scores of the `without_embeddings` variant (`generate_candidates`,
    `score_candidates`: the weight grid, both seeds, 12 DPM-Solver++ steps) for the first
    `--generation-users` users, k^p = their keywords, k^t = their last training item's title.
Shard results are not kept (no folder), so every configuration computes everything; with
`--repeats N` the configurations alternate N times and each stage's fastest time is kept (on a
shared machine another job's burst then spoils one repeat, not the figure). Checks that
both worker counts give the same keywords, candidates and images, and prints seconds per stage,
the speed-up, the 1-minute load average before and after each configuration, each worker's
resident memory with the models loaded, and the peak resident memory of all processes together.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from local_env import prepare

ROOT = prepare(OMP_WAIT_POLICY="PASSIVE")


class PeakMemory:
    """Peak resident memory of this process and its children (the workers), sampled."""

    def __init__(self, every: float = 0.2):
        import psutil

        self.me, self.every, self.peak = psutil.Process(), every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.is_set():
            processes = [self.me, *self.me.children(recursive=True)]
            total = 0
            for p in processes:
                try:
                    total += p.memory_info().rss
                except Exception:  # a process that ended between listing and reading
                    continue
            self.peak = max(self.peak, total)
            time.sleep(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def scratch_project(scene: str):
    """A conf copy whose base data root is a scratch folder, with `ingestion` run for `scene`."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    scratch = Path(tempfile.mkdtemp(prefix="pmg-sharding-bench-"))
    conf = scratch / "conf"
    shutil.copytree(ROOT / "conf", conf, symlinks=True)
    globals_file = conf / "base" / "globals.yml"
    text = globals_file.read_text().replace("data_root: data\n", f"data_root: {scratch / 'data'}\n")
    globals_file.write_text(text)
    bootstrap_project(ROOT)

    def session():
        return KedroSession.create(project_path=ROOT, env="base", conf_source=str(conf))

    start = time.perf_counter()
    with session() as s:
        s.run(pipeline_names=["ingestion"], namespaces=[scene])
    print(f"ingestion ({scene}): {time.perf_counter() - start:.0f} s", flush=True)
    return scratch, session


def inputs(session, scene: str, users: int, generation_users: int):
    from pmg_kedro.pipelines.recommendation import nodes as recommendation

    with session() as s:
        context = s.load_context()
        catalog, params = context.catalog, context.params
        interactions = catalog.load(f"{scene}.interactions")
        items = catalog.load(f"{scene}.items")
        models = {name: catalog.load(name) for name in ("llm", "generator", "scorer")}
    p = params[scene]
    split, _ = recommendation.split_recommendation_interactions(interactions, p["recommendation"])
    chosen = sorted(split["user_id"].unique())[:users]
    return split[split["user_id"].isin(chosen)], items, models, p, params["ablations"]


def requests_of(keywords, split, items, n):
    import pandas as pd

    train = split[split["split"] == "train"].sort_values(["user_id", "position"])
    last = train.groupby("user_id")["item_id"].last()
    titles = items.drop_duplicates("item_id").set_index(items["item_id"].astype(str))["title"]
    rows = keywords.head(n)
    return pd.DataFrame(
        {
            "user_id": rows["user_id"],
            "target": [str(last[u]) for u in rows["user_id"]],
            "preference_text": [", ".join(k) for k in rows["keywords"]],
            "target_text": [str(titles[str(last[u])]) for u in rows["user_id"]],
        }
    ).reset_index(drop=True)


def configuration(workers, args, split, items, models, p, ablations):
    from pmg_kedro.components.models import sharding
    from pmg_kedro.pipelines.recommendation import nodes as recommendation
    from pmg_kedro.pipelines.weighted_generation import nodes as generation

    params = {  # workers 0: the same shards one after the other in this process
        "cluster": "local" if workers else "none",
        "workers": workers or None,
        "shard_size": args.shard_size,
        "threads_per_worker": 1,
        "folder": None,
    }
    settings = sharding.ShardSettings.from_params(params)
    load_before = os.getloadavg()[0]
    times, out = {}, {}
    with PeakMemory() as memory:
        start = time.perf_counter()
        worker_rss = {}
        if workers:
            client = sharding.cluster_client(settings)
            for model in models.values():
                client.run(sharding.worker_model, getattr(model, sharding.DEFINITION_ATTRIBUTE))
            worker_rss = {
                w: info["metrics"]["memory"] / 1e9
                for w, info in client.scheduler_info()["workers"].items()
            }
        times["cluster start + models on every worker"] = time.perf_counter() - start
        start = time.perf_counter()
        keywords = recommendation.extract_recommendation_keywords(
            split, items, models["llm"], p["recommendation"], params
        )
        times["user keywords (LLM)"] = time.perf_counter() - start
        start = time.perf_counter()
        images, _ = recommendation.generate_recommendation_user_images(
            keywords, models["generator"], p["recommendation"], params
        )
        times["user images (render)"] = time.perf_counter() - start
        requests = requests_of(keywords, split, items, args.generation_users)
        ablation = ablations["without_embeddings"]
        start = time.perf_counter()
        candidates, candidate_images = generation.generate_candidates(
            requests, models["generator"], {}, p["weighted_generation"], ablation, params
        )
        times["candidates (generate)"] = time.perf_counter() - start
        start = time.perf_counter()
        selections, _ = generation.score_candidates(
            candidates,
            candidate_images,
            requests,
            models["scorer"],
            p["weighted_generation"],
            ablation,
            params,
        )
        times["scores and selection"] = time.perf_counter() - start
        sharding.close_clusters()
    out = {
        "keywords": keywords,
        "images": images,
        "candidates": candidates,
        "candidate_images": candidate_images,
        "selections": selections,
    }
    return times, out, load_before, os.getloadavg()[0], memory.peak / 1e9, worker_rss


def same(a, b) -> bool:
    import numpy as np

    tables = all(a[k].equals(b[k]) for k in ("keywords", "candidates", "selections"))
    images = all(
        a[k].keys() == b[k].keys()
        and all(np.array_equal(np.asarray(a[k][i]), np.asarray(b[k][i])) for i in a[k])
        for k in ("images", "candidate_images")
    )
    return tables and images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scene", default="movie")
    parser.add_argument("--users", type=int, default=96)
    parser.add_argument("--generation-users", type=int, default=48)
    parser.add_argument("--shard-size", type=int, default=16)
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2], help="0: in this process, same shards"
    )
    parser.add_argument("--repeats", type=int, default=1, help="the fastest per stage is kept")
    args = parser.parse_args()
    os.chdir(ROOT)  # catalog paths (the LLM folder, models/embedded) are relative to the project
    scratch, session = scratch_project(args.scene)
    try:
        split, items, models, p, ablations = inputs(
            session, args.scene, args.users, args.generation_users
        )
        results = {}
        for repeat in range(args.repeats):
            for workers in args.workers:
                times, out, before, after, peak, worker_rss = configuration(
                    workers, args, split, items, models, p, ablations
                )
                if workers in results:  # the fastest of the repeats, stage by stage
                    best = results[workers][0]
                    times_all = {k: min(v, best[k]) for k, v in times.items()}
                    results[workers] = (times_all, out)
                else:
                    results[workers] = (times, out)
                print(f"\nrepeat {repeat + 1} of {args.repeats}:", end="")
                work = sum(v for k, v in times.items() if not k.startswith("cluster"))
                print(
                    f"\n{workers} worker(s), {args.scene}, {split['user_id'].nunique()} users "
                    f"({args.generation_users} for candidates), shard size {args.shard_size}, load "
                    f"average {before:.2f} before / {after:.2f} after, peak RSS of all processes "
                    f"{peak:.2f} GB, each worker with the models loaded "
                    f"{', '.join(f'{v:.2f}' for v in worker_rss.values()) or '-'} GB"
                )
                for name, seconds in times.items():
                    print(f"  {name:40s} {seconds:7.1f} s")
                print(f"  {'sharded stages':40s} {work:7.1f} s", flush=True)
        if len(results) > 1:
            (one, base), *rest = results.items()
            for n, (times, out) in rest:
                print(
                    f"\nsame keywords, candidates, scores and images as {one} worker(s): "
                    f"{same(base[1], out)}"
                )
                for name in times:
                    if not name.startswith("cluster"):
                        print(f"  {name:40s} {base[0][name] / times[name]:5.2f}x")
                work_one = sum(v for k, v in base[0].items() if not k.startswith("cluster"))
                work_n = sum(v for k, v in times.items() if not k.startswith("cluster"))
                print(f"  {'sharded stages':40s} {work_one / work_n:5.2f}x ({n} vs {one} workers)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
