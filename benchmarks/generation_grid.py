"""Cost of a user's whole (w_p, w_t) grid against one candidate (issue bar: at most 2.5x), and the
time of weighted generation per user, with the committed embedded generator on this machine.

    .venv/bin/python benchmarks/generation_grid.py [--generator models/embedded/generator]
        [--steps 25] [--repeats 3] [--users 8]

Prints one JSON line: model, machine, sizes, seed and the timings (best of `repeats`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

# Idle OpenMP threads must sleep, not spin, before torch starts (as in the Makefile): with spinning
# threads on 2 shared cores one candidate took 42 s instead of 1.4 s here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from pmg_kedro.components.method.pmg import PMG, PMGSettings, Variant  # noqa: E402
from pmg_kedro.components.models.generator import Generator  # noqa: E402

RATIOS = [[0, 4], [1, 3], [2, 2], [3, 1], [4, 0]]


def _requests(n: int) -> pd.DataFrame:
    texts = [
        "cat face, cute, round",
        "red heart, love",
        "dark patterned ankle boot",
        "ghost, night",
    ]
    return pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(n)],
            "target": ["t"] * n,
            "preference_text": [texts[i % len(texts)] for i in range(n)],
            "target_text": ["grinning face, happy"] * n,
        }
    )


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", default="models/embedded/generator")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--users", type=int, default=8)
    args = parser.parse_args()
    generator = Generator.from_pretrained(args.generator)
    variant = Variant("without_embeddings", keywords=True, embeddings=False)
    base = PMGSettings(
        seeds=(0,),
        mode="embedding_scale",
        sampler="ddim",
        steps=args.steps,
        guidance_scale=1.5,
        weight_total=2.0,
        candidates_per_batch=5 * args.users,
    )
    one = PMG(generator, settings=base.replace(weight_ratios=((2, 2),)))
    grid = PMG(generator, settings=base.replace(weight_ratios=tuple(map(tuple, RATIOS))))
    single = _best(lambda: one.generate(_requests(1), variant), args.repeats)
    whole = _best(lambda: grid.generate(_requests(1), variant), args.repeats)
    many = _best(lambda: grid.generate(_requests(args.users), variant), args.repeats)
    print(
        json.dumps(
            {
                "generator": args.generator,
                "generator_info": generator.info,
                "resolution": generator.resolution,
                "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}",
                "threads": torch.get_num_threads(),
                "steps": args.steps,
                "mode": "embedding_scale",
                "seed": 0,
                "seconds_one_candidate": round(single, 3),
                "seconds_grid_of_5_one_user": round(whole, 3),
                "grid_over_one": round(whole / single, 2),
                f"seconds_grid_of_5_for_{args.users}_users": round(many, 3),
                "seconds_per_user_batched": round(many / args.users, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
