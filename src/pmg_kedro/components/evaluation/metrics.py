"""Image-pair metrics of paper §4.1.3 (the statistics of Tables 1–2 are in `reporting.stats`).

- SSIM: `skimage.metrics.structural_similarity` on images in [0, 1] (`data_range` 1), RGB (mean
  over channels) or grey (`skimage.color.rgb2gray`), at one common resolution.
- `mobilenet_feature_distance`: the LPIPS-form MobileNetV2 feature distance of
  `features.MobileNetFeatures.distance` (uniform layer weights, never called LPIPS). Activations
  are computed once per distinct image and every generated image of a block is compared with every
  reference of the block as a matrix, instead of one forward pass per pair.
- LPIPS (`features.Lpips`, AlexNet) only when its weights are on disk; pairs in batches.

Images are float32 arrays (3, H, W) in [0, 1], as `images.to_array` returns them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from skimage.color import rgb2gray
from skimage.metrics import structural_similarity
from torch import Tensor
from tqdm.auto import tqdm

from pmg_kedro.components.evaluation import features as feature_models

logger = logging.getLogger(__name__)

SSIM = "ssim"
LPIPS = "lpips"
FEATURE_DISTANCE = "mobilenet_feature_distance"
# Which way is better, for the tables' markers.
LOWER_IS_BETTER = {LPIPS, FEATURE_DISTANCE}


def ssim(a: np.ndarray, b: np.ndarray, color: str = "rgb", win_size: int = 7) -> float:
    """SSIM of two images (3, H, W) in [0, 1]: mean over RGB channels, or on grey luminance."""
    a, b = np.moveaxis(a, 0, -1), np.moveaxis(b, 0, -1)
    if color == "grey":
        return float(
            structural_similarity(rgb2gray(a), rgb2gray(b), data_range=1.0, win_size=win_size)
        )
    if color != "rgb":
        raise ValueError(f"SSIM color must be 'rgb' or 'grey', got {color!r}")
    return float(structural_similarity(a, b, data_range=1.0, win_size=win_size, channel_axis=-1))


@torch.no_grad()
def encode(
    model: feature_models.MobileNetFeatures, images: np.ndarray, batch_size: int = 64
) -> tuple[list[Tensor], Tensor]:
    """Per distance layer, channel-normalised activations (n, C, H*W), and pooled features (n, 1280).

    The pooled features are `MobileNetFeatures.pooled`'s (the mean of the last block's output).
    """
    per_batch, pooled = [], []
    x_all = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    for i in range(0, len(x_all), batch_size):
        acts = model.activations(x_all[i : i + batch_size])
        pooled.append(acts[-1].mean(dim=(2, 3)))
        per_batch.append([F.normalize(a, dim=1, eps=1e-10).flatten(2) for a in acts])
    return [torch.cat(layer) for layer in zip(*per_batch, strict=True)], torch.cat(pooled)


def feature_distance_matrix(gen: list[Tensor], ref: list[Tensor]) -> Tensor:
    """MobileNetV2 feature distance of every generated image with every reference: (g, r).

    Per layer, mean over positions of ||a - b||^2 of the channel-normalised activations, written as
    |a|^2 + |b|^2 - 2 a.b so that no (g * r) copy of the activations is made.
    """
    total = torch.zeros(gen[0].shape[0], ref[0].shape[0])
    for a, b in zip(gen, ref, strict=True):  # (g, C, L), (r, C, L)
        dot = torch.einsum("gcl,rcl->grl", a, b)
        sq = a.pow(2).sum(1)[:, None, :] + b.pow(2).sum(1)[None, :, :]
        total += (sq - 2 * dot).clamp_min(0).mean(-1)
    return total


@dataclass
class PairMetrics:
    """SSIM, the MobileNetV2 feature distance and (when given) LPIPS between generated images and
    their references, one block (e.g. one user's generated images and its history + target) at a
    time; blocks are grouped into chunks whose distinct images are encoded once."""

    features: feature_models.MobileNetFeatures
    lpips: Any = None  # features.Lpips, or None when its weights are absent
    ssim_color: str = "rgb"
    ssim_win_size: int = 7
    lpips_input_size: int = 64
    batch_size: int = 64
    images_per_chunk: int = 512

    def compare_blocks(
        self,
        images: Mapping[str, np.ndarray],
        blocks: Sequence[tuple[Sequence[str], Sequence[str]]],
        what: str = "pairs",
    ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
        """Each block (generated keys, reference keys): every generated image against every reference.

        Returns one row per (generated, reference) pair with `ssim`, `mobilenet_feature_distance`
        and, with LPIPS, `lpips`; and the pooled MobileNetV2 features (1280,) per generated key.
        """
        rows: list[pd.DataFrame] = []
        pooled: dict[str, np.ndarray] = {}
        chunks = list(self._chunks(blocks))
        start, n_images, n_pairs = time.perf_counter(), 0, 0
        for chunk in tqdm(chunks, desc=f"metrics: {what}", mininterval=5, disable=len(chunks) < 2):
            keys = list(dict.fromkeys(k for gen, ref in chunk for k in (*gen, *ref)))
            position = {k: i for i, k in enumerate(keys)}
            layers, pool = encode(
                self.features, np.stack([images[k] for k in keys]), self.batch_size
            )
            for gen, ref in chunk:
                gi = torch.tensor([position[k] for k in gen], dtype=torch.long)
                ri = torch.tensor([position[k] for k in ref], dtype=torch.long)
                distance = feature_distance_matrix([a[gi] for a in layers], [a[ri] for a in layers])
                block = pd.DataFrame(
                    {
                        "generated": np.repeat(list(gen), len(ref)),
                        "reference": np.tile(list(ref), len(gen)),
                        SSIM: [
                            ssim(images[g], images[r], self.ssim_color, self.ssim_win_size)
                            for g in gen
                            for r in ref
                        ],
                        FEATURE_DISTANCE: distance.flatten().numpy(),
                    }
                )
                if self.lpips is not None:
                    block[LPIPS] = self._lpips(images, block["generated"], block["reference"])
                rows.append(block)
                pooled.update({k: pool[position[k]].numpy() for k in gen})
                n_pairs += len(block)
            n_images += len(keys)
            logger.info(
                "metrics %s: %d images encoded, %d pairs (%.1f pairs/s)",
                what,
                n_images,
                n_pairs,
                n_pairs / max(time.perf_counter() - start, 1e-9),
            )
        columns = ["generated", "reference", SSIM, FEATURE_DISTANCE]
        if self.lpips is not None:
            columns.append(LPIPS)
        table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)
        return table, pooled

    def _chunks(self, blocks):
        chunk, distinct = [], set()
        for gen, ref in blocks:
            if not len(gen):
                continue  # a block without references still gives its pooled features
            new = set(gen) | set(ref)
            if chunk and len(distinct | new) > self.images_per_chunk:
                yield chunk
                chunk, distinct = [], set()
            chunk.append((list(gen), list(ref)))
            distinct |= new
        if chunk:
            yield chunk

    def _lpips(self, images, generated, reference) -> np.ndarray:
        out = []
        size = (self.lpips_input_size, self.lpips_input_size)
        for i in range(0, len(generated), self.batch_size):
            a = torch.from_numpy(np.stack([images[k] for k in generated[i : i + self.batch_size]]))
            b = torch.from_numpy(np.stack([images[k] for k in reference[i : i + self.batch_size]]))
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
            b = F.interpolate(b, size=size, mode="bilinear", align_corners=False).clamp(0, 1)
            out.append(self.lpips.distance(a, b).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)
