"""Can Table 3's MMGCN setup reward a user image at all, and does the free preference vector's
weight decide it? (issue 29, point 4; not a test)

Reads the recommendation inputs of a finished `kedro run` (the split, item and user features of
one scene) and trains MMGCN for Averaged-user and Oracle-user (the LEAK: the mean features of the
user's own held-out test items) under each `--free-preference` w of x_u = P_m f_u + w p_u (1: the
default; 0: the user's input is its features alone, as an item's), each under every seed. Prints,
per w, Oracle-user - Averaged-user on test recall@20: mean, 95% t interval over seeds, paired
t-test p and the minimum detectable effect. Single-threaded runs, as the pipeline's.

    .venv/bin/python benchmarks/table3_sensitivity.py --scene movie --free-preference 1 0 \
        --seeds 2024-2033 --json table3_sensitivity.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
from local_env import ROOT, prepare

prepare(OMP_WAIT_POLICY="PASSIVE")

SETTINGS = ("averaged_user", "oracle_user")


def seed_list(text: str) -> list[int]:
    """'2024-2033' or '2024,2025' as a list of seeds."""
    if "-" in text:
        first, last = (int(x) for x in text.split("-"))
        return list(range(first, last + 1))
    return [int(x) for x in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="base")
    parser.add_argument("--scene", default="movie")
    parser.add_argument("--free-preference", type=float, nargs="+", default=[1.0, 0.0])
    parser.add_argument("--seeds", default="2024-2033")
    parser.add_argument("--metric", default="recall@20")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from pmg_kedro.components.reporting.stats import minimum_detectable_effect, paired_test
    from pmg_kedro.pipelines.recommendation.nodes import run_recommendation_experiment

    bootstrap_project(ROOT)
    with KedroSession.create(project_path=ROOT, env=args.env) as session:
        catalog = session.load_context().catalog
        inputs = [
            catalog.load(f"{args.scene}.recommendation_{name}")
            for name in ("split", "item_features", "user_features")
        ]
        params = catalog.load(f"params:{args.scene}.recommendation")
    seeds = seed_list(args.seeds)
    results = []
    for w in args.free_preference:
        run_params = {
            **params,
            "model": {**params["model"], "free_preference": w},
            "seeds": seeds,
            "settings": {k: v for k, v in params["settings"].items() if k in SETTINGS},
        }
        started = time.perf_counter()
        rows = run_recommendation_experiment(*inputs, run_params, {"cluster": "none"})
        table = rows.pivot(index="seed", columns="setting", values=args.metric)
        d = (table["oracle_user"] - table["averaged_user"]).to_numpy()
        test = paired_test(d, confidence=0.95, interval="t")
        results.append(
            {
                "free_preference": w,
                "averaged_user": float(table["averaged_user"].mean()),
                "oracle_user": float(table["oracle_user"].mean()),
                "difference": float(np.mean(d)),
                "interval": [float(test["ci_low"]), float(test["ci_high"])],
                "t_p": float(test["test_p"]),
                "mde": float(minimum_detectable_effect(d)["mde"]),
                "seeds": len(seeds),
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
        r = results[-1]
        print(
            f"{args.scene} w={w:g}: Averaged-user {r['averaged_user']:.4f}, Oracle-user (LEAK) "
            f"{r['oracle_user']:.4f}; Oracle - Averaged {args.metric} {r['difference']:+.4f} "
            f"[{r['interval'][0]:+.4f}, {r['interval'][1]:+.4f}], t p {r['t_p']:.3g}, "
            f"MDE {r['mde']:.4f} ({len(seeds)} seeds, {r['seconds']} s)",
            flush=True,
        )
    record = {
        "scene": args.scene,
        "env": args.env,
        "metric": args.metric,
        "results": results,
        "machine": f"{platform.processor() or platform.machine()}, one torch thread per run",
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
