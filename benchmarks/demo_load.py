"""Latency and throughput of the demo's HTTP API under load (issue 19; not a test).

1. One at a time: `--sequential` requests, each sent after the previous answer (the latency a
   person sees: keywords + weight grid + selection, plus the baseline image and HTTP).
2. Under load: `--concurrent` requests sent at once; all are queued by the server (bounded
   concurrency, one request's model work at a time). Per-request latency p50 / p95, throughput
   (answered requests per second of wall time) and errors.

    .venv/bin/python benchmarks/demo_load.py [--env base] [--concurrent 8] [--sequential 8]
    .venv/bin/python benchmarks/demo_load.py --url http://127.0.0.1:7860/   # a running `make demo`

Without `--url` the demo is served in this process on 127.0.0.1 (a free port), as `make demo`
serves it. Requests go round robin over the scenes `--scenes` (default: every scene with data) and their evaluation users
with noise seeds `--seed`, `--seed` + 1, ... Needs the env's `kedro run` outputs (the demo says
which are missing). Prints the figures with the environment, models and machine; `--out` writes
them as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from local_env import prepare

ROOT = prepare(GRADIO_ANALYTICS_ENABLED="False", OMP_WAIT_POLICY="PASSIVE")

STAGES = ("keywords", "soft_embeddings", "generation", "scoring_selection", "baseline", "total")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (linear interpolation between order statistics, as numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "n": len(latencies),
        "p50_s": round(percentile(latencies, 50), 3),
        "p95_s": round(percentile(latencies, 95), 3),
        "max_s": round(max(latencies), 3),
    }


def timed(client, request: dict) -> tuple[float, dict | None, str | None]:
    start = time.perf_counter()
    try:
        response = client.predict(request, api_name="/personalize")
    except Exception as err:  # noqa: BLE001 (any failure is counted and reported, never hidden)
        return time.perf_counter() - start, None, f"{type(err).__name__}: {err}"
    return time.perf_counter() - start, response, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="base")
    parser.add_argument("--url", default=None, help="a running demo (default: serve one here)")
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--sequential", type=int, default=8)
    parser.add_argument("--scenes", nargs="*", default=None)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--server-concurrency", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()

    from gradio_client import Client

    load_average = os.getloadavg()  # other work on the machine shares its cores
    app, url, started = None, args.url, time.perf_counter()
    if url is None:
        from pmg_kedro.demo.app import launch
        from pmg_kedro.demo.service import DemoService

        service = DemoService.from_env(args.env, ROOT)
        app, url = launch(service, concurrency=args.server_concurrency)
    load_seconds = time.perf_counter() - started
    client = Client(url, verbose=False)
    scenes = client.predict(api_name="/scenes")
    chosen = args.scenes or [s for s, info in scenes.items() if info["ready"]]
    # Round robin over the scenes (a scene's first user, the next scene's first, ...), so a few
    # requests already cover every scene (movie's 64 users first would make them all movie's).
    per_scene = [[(s, u) for u in scenes[s]["evaluation_users"]] for s in chosen]
    users = [pair for row in itertools.zip_longest(*per_scene) for pair in row if pair]
    if not users:
        raise SystemExit(f"no evaluation user in scenes {chosen}: {scenes}")
    n = max(args.sequential, args.concurrent)
    requests = [
        {"scene": s, "user_id": u, "seed": args.seed + i}
        for i, (s, u) in zip(range(n), users * (n // len(users) + 1), strict=False)
    ]

    timed(client, requests[0])  # warm-up: first-call costs (allocations, caches) not counted
    sequential = [timed(client, r) for r in requests[: args.sequential]]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=args.concurrent) as pool:
        concurrent = list(
            pool.map(lambda r: timed(Client(url, verbose=False), r), requests[: args.concurrent])
        )
    wall = time.perf_counter() - start

    answered = [r for _, r, e in sequential + concurrent if e is None]
    first = answered[0] if answered else {}
    timings = [r["seconds"] for _, r, e in sequential if e is None]
    stages = (
        {stage: round(statistics.median(t.get(stage, 0.0) for t in timings), 3) for stage in STAGES}
        if timings
        else {}
    )
    if timings:  # the bar: keywords + weight grid + selection, without the baseline image
        stages["keywords_grid_selection"] = round(
            statistics.median(
                t["keywords"] + t["generation"] + t["scoring_selection"] for t in timings
            ),
            3,
        )
    ok = [t for t, _, e in concurrent if e is None]
    figures = {
        "what": "demo HTTP API (/personalize), client-side latency per request",
        "environment": first.get("environment", args.env),
        "models": first.get("models", {}),
        "settings": {
            k: first.get("settings", {}).get(k)
            for k in ("sampler", "steps", "mode", "guidance_scale")
        },
        "grid": first.get("settings", {}).get("weight_grid"),
        "scenes": chosen,
        "requests": [f"{r['scene']}/{r['user_id']}" for r in requests],
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1_5_15_min_at_start": [round(x, 2) for x in load_average],
        },
        "server": url if args.url else f"in process, concurrency {args.server_concurrency}",
        "server_start_s": round(load_seconds, 1) if app is not None else None,
        "one_at_a_time": {
            **summary([t for t, _, e in sequential if e is None] or [float("nan")]),
            "errors": [e for _, _, e in sequential if e],
            "server_stage_medians_s": stages,
        },
        "concurrent": {
            **summary(ok or [float("nan")]),
            "sent": args.concurrent,
            "answered": len(ok),
            "errors": [e for _, _, e in concurrent if e],
            "wall_s": round(wall, 3),
            "throughput_requests_per_s": round(len(ok) / wall, 3),
        },
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")
    if app is not None:
        app.close()


if __name__ == "__main__":
    main()
