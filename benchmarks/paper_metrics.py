"""Benchmark: the image metrics of paper §4.1.3 as metric_evaluation computes them
(`components.evaluation.metrics.PairMetrics`: SSIM, the MobileNetV2 feature distance and LPIPS), for
`--users` users, each chosen image against 10 history images and the target, at the environment's
`metric_evaluation` sizes.

    .venv/bin/python benchmarks/paper_metrics.py --size tiny
    python3 benchmarks/paper_metrics.py --size full                    # on a GPU machine

The networks behind the metrics are ImageNet MobileNetV2 (its packaged weights when installed)
and LPIPS's AlexNet (when its weights are on disk); otherwise the same architectures at random
weights stand in, which times them the same and is said in the record. The metric components run
on the CPU. Prints pairs, seconds, pairs/s, peak memory.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from paper_common import Measure, env_config, record, setup
from paper_common import parser as base_parser

N_HISTORY = 10  # paper §4.1.2: n = 10 history items, and the target


class RandomLpips:
    """LPIPS's network (AlexNet + linear heads) at random weights: the timing of `features.Lpips`
    where the AlexNet weights are not on disk."""

    def __init__(self):
        import lpips

        self.model = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
        self.model.eval()

    @torch.no_grad()
    def distance(self, a, b):
        return self.model(a.float() * 2 - 1, b.float() * 2 - 1).flatten()


def metric_networks(input_size: int, tmp: Path):
    """(MobileNetFeatures, LPIPS, what they are): packaged/on-disk weights, else random ones."""
    from torchvision.models import mobilenet_v2

    from pmg_kedro.components.evaluation.features import Lpips, MobileNetFeatures

    try:
        features, what = MobileNetFeatures(input_size), {"mobilenet": "ImageNet (packaged)"}
    except (FileNotFoundError, ImportError):
        path = tmp / "mobilenet_v2_random.pth"
        torch.save(mobilenet_v2().state_dict(), path)
        features, what = MobileNetFeatures(input_size, path), {"mobilenet": "random weights"}
    if Lpips.available():
        return features, Lpips(), {**what, "lpips": "AlexNet weights on disk"}
    return features, RandomLpips(), {**what, "lpips": "random weights (AlexNet not on disk)"}


def main() -> None:
    from pmg_kedro.components.evaluation.metrics import PairMetrics

    p = base_parser(__doc__.splitlines()[0], users=(64, 4))
    args = p.parse_args()
    setup(args)
    users = args.users
    config = env_config(args.env)
    params = config["parameters"][args.scene]["metric_evaluation"]
    size = int(params["image_size"])
    rng = np.random.default_rng(args.seed)
    images, blocks = {}, []
    for u in range(users):
        generated, references = [f"{u}/chosen"], [f"{u}/h{i}" for i in range(N_HISTORY)]
        references.append(f"{u}/target")
        for key in generated + references:
            images[key] = rng.random((3, size, size), dtype=np.float32)
        blocks.append((generated, references))
    with tempfile.TemporaryDirectory() as tmp:
        features, lpips, what = metric_networks(
            int(params["feature_distance"]["input_size"]), Path(tmp)
        )
    metrics = PairMetrics(
        features=features,
        lpips=lpips,
        ssim_color=params["ssim"]["color"],
        ssim_win_size=int(params["ssim"]["win_size"]),
        lpips_input_size=int(params["lpips"]["input_size"]),
        batch_size=int(params["feature_distance"]["batch_size"]),
        images_per_chunk=int(params["feature_distance"]["images_per_chunk"]),
    )
    metrics.compare_blocks(dict(list(images.items())[:12]), blocks[:1])  # warm-up
    with Measure(args.device) as measured:
        table, _ = metrics.compare_blocks(images, blocks)
    numbers = {
        "users": users,
        "pairs": len(table),
        "images": len(images),
        "image_size_px": size,
        "mobilenet_input_px": int(params["feature_distance"]["input_size"]),
        "lpips_input_px": int(params["lpips"]["input_size"]),
        "pairs_per_s": round(len(table) / measured.seconds, 2),
        "seconds_per_user": round(measured.seconds / users, 4),
        "metrics_device": "cpu",
        **measured.numbers(),
    }
    record("metrics", args, {"networks": what, "metrics": list(table.columns[2:])}, numbers)


if __name__ == "__main__":
    main()
