"""Benchmark: weighted generation (paper §3.4) with Stable Diffusion 1.5's architecture at random
weights: every candidate of the (w_p, w_t) grid for `--users` users, through the pipeline's own
method object (`PMG.generate`, full PMG: E^p = concat(E_m, E_k) and E^t), chunked by the
environment's `candidates_per_batch`.

    .venv/bin/python benchmarks/paper_generation_grid.py --size tiny
    python3 benchmarks/paper_generation_grid.py --size full --steps 25 --pairs 4   # on a GPU

Prints images, seconds, images/s, seconds per user (one grid), peak memory.
"""

from __future__ import annotations

import pandas as pd
import torch
from paper_common import Measure, env_config, model_dtype, record, setup, synthetic_history
from paper_common import parser as base_parser


def generation_params(params: dict, steps: int | None, pairs: int | None) -> dict:
    """The environment's weighted_generation settings, one noise seed, optional overrides."""
    wg = {**params, "seeds": params["seeds"][:1]}
    if steps:
        wg["steps"] = steps
    if pairs:
        wg["weight_ratios"] = params["weight_ratios"][:pairs]
    return wg


def requests_and_soft_embeddings(scene: str, users: int, n_tokens: int, dim: int, seed: int):
    """Generation requests (k^p, k^t texts) and random E_m per user, as the pipeline passes them."""
    ids = [f"u{u}" for u in range(users)]
    requests = pd.DataFrame(
        {
            "user_id": ids,
            "target": [f"item{u}" for u in range(users)],
            "preference_text": [
                ", ".join(w for t in synthetic_history(scene, 3, u) for w in t.split()[-3:])
                for u in range(users)
            ],
            "target_text": [f"movie poster, title {u}, romance, ship, sea" for u in range(users)],
        }
    )
    noise = torch.Generator().manual_seed(seed)
    return requests, {u: torch.randn(n_tokens, dim, generator=noise) for u in ids}


def main() -> None:
    from pmg_kedro.components.method.pmg import FULL, PMG, PMGSettings
    from pmg_kedro.components.models.paper_models import random_generator

    p = base_parser(__doc__.splitlines()[0], users=(16, 2))
    p.add_argument("--steps", type=int, default=None, help="default: the environment's")
    p.add_argument("--pairs", type=int, default=None, help="first N weight pairs (default: all)")
    args = p.parse_args()
    setup(args)
    users = args.users
    config = env_config(args.env)
    params = generation_params(
        config["parameters"][args.scene]["weighted_generation"], args.steps, args.pairs
    )
    dtype = model_dtype(config, "generator", args.device)
    generator = random_generator(args.size, args.seed, args.device, dtype)
    requests, soft = requests_and_soft_embeddings(
        args.scene, users, 4, generator.text_encoder.dim, args.seed
    )
    pmg = PMG(generator, settings=PMGSettings.from_params(params))
    PMG(generator, settings=pmg.settings.replace(steps=2)).generate(requests.head(1), FULL, soft)
    with Measure(args.device) as measured:
        candidates, images = pmg.generate(requests, FULL, soft)
    n = len(images)
    numbers = {
        "users": users,
        "weight_pairs": len(params["weight_ratios"]),
        "images": n,
        "resolution_px": generator.resolution,
        "steps": int(params["steps"]),
        "sampler": params["sampler"],
        "guidance_scale": float(params["guidance_scale"]),
        "mode": params["mode"],
        "candidates_per_batch": int(params["candidates_per_batch"]),
        "images_per_s": round(n / measured.seconds, 3),
        "seconds_per_image": round(measured.seconds / n, 4),
        "seconds_per_user": round(measured.seconds / users, 4),
        **measured.numbers(),
    }
    produced_by = {"generator": generator.info["random_init"], "generator_dtype": dtype}
    record("generation_grid", args, produced_by, numbers)


if __name__ == "__main__":
    main()
