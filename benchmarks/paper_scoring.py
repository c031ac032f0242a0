"""Benchmark: the selection scorer (paper §3.4) with CLIP ViT-L/14's architecture at random
weights: d_p and d_t of `--images` candidate images at the generator's resolution, as
`weighted_generation.score_candidates` computes them (PIL -> array -> `paired_scores` in batches
of the environment's `score_batch_size`).

    .venv/bin/python benchmarks/paper_scoring.py --size tiny
    python3 benchmarks/paper_scoring.py --size full --images 512      # on a GPU

Prints images, seconds, images/s (two cosines per image), peak memory.
"""

from __future__ import annotations

import numpy as np
import torch
from paper_common import Measure, env_config, record, setup
from paper_common import parser as base_parser
from PIL import Image

RESOLUTION = {"full": 512, "tiny": 64}  # SD 1.5's output, and its tiny layout's


def main() -> None:
    from pmg_kedro.components.data.images import to_array
    from pmg_kedro.components.models.paper_models import random_scorer

    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=None, help="default: 512 full, 32 tiny")
    args = p.parse_args()
    setup(args)
    n = args.images or (512 if args.size == "full" else 32)
    config = env_config(args.env)
    batch = int(config["parameters"][args.scene]["weighted_generation"]["score_batch_size"])
    scorer = random_scorer(args.size, args.seed, args.device)
    size = RESOLUTION[args.size]
    rng = np.random.default_rng(args.seed)
    images = [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)
    ]
    users = 8  # candidates belong to a few users: each distinct text is encoded once
    preference = [f"romance, ship, sea, user {i % users}, dark, poster" for i in range(n)]
    target = [f"movie poster, Titanic, couple, user {i % users}" for i in range(n)]
    scorer.paired_scores(torch.from_numpy(to_array(images[:2])), [preference[:2]], batch)  # warm-up
    with Measure(args.device) as measured, torch.no_grad():
        pixels = torch.from_numpy(to_array(images))
        d_p, d_t = scorer.paired_scores(pixels, [preference, target], batch)
    assert d_p.shape == d_t.shape == (n,)
    numbers = {
        "images": n,
        "resolution_px": size,
        "scorer_input_px": scorer.image_size,
        "score_batch_size": batch,
        "images_per_s": round(n / measured.seconds, 2),
        "ms_per_image": round(1000 * measured.seconds / n, 3),
        **measured.numbers(),
    }
    produced_by = {"scorer": f"CLIP ViT-L/14 layout ({args.size}), open_clip, float32"}
    record("scoring", args, produced_by, numbers)


if __name__ == "__main__":
    main()
