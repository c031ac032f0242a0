"""Fashion-MNIST (Debian `dataset-fashion-mnist`, MIT) with SIMULATED click histories.

The costume scene of the paper uses POG click logs. Without them, items are real Fashion-MNIST
images and the users are simulated: each simulated user has a hidden taste (two favourite classes,
a brightness and a texture) and clicks items by it. The hidden taste is kept for evaluation only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pmg_kedro.components.data.defects import Defect, IngestionError
from pmg_kedro.components.data.sources import SceneTables

CLASS_NAMES = (
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
BRIGHTNESS = ("dark", "medium", "light")
TEXTURE = ("plain", "patterned")
SIMULATED_NOTE = (
    "SIMULATED click histories (Fashion-MNIST items, simulated users with hidden tastes)"
)


def pixel_attributes(images: np.ndarray) -> pd.DataFrame:
    """Brightness, texture and coverage measured on the garment's pixels (uint8 (n, 28, 28))."""
    x = images.astype(np.float32) / 255.0
    mask = x > 0.05
    area = mask.sum(axis=(1, 2)).clip(min=1)
    brightness = (x * mask).sum(axis=(1, 2)) / area
    # Texture: mean absolute Laplacian inside the garment (edges of the silhouette excluded).
    lap = np.abs(
        4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
    )
    inner = mask[:, 1:-1, 1:-1] & mask[:, :-2, 1:-1] & mask[:, 2:, 1:-1]
    inner &= mask[:, 1:-1, :-2] & mask[:, 1:-1, 2:]
    texture = (lap * inner).sum(axis=(1, 2)) / inner.sum(axis=(1, 2)).clip(min=1)
    return pd.DataFrame(
        {"brightness": brightness, "texture": texture, "coverage": area / x[0].size}
    )


def level_edges(values: pd.Series, n_levels: int) -> np.ndarray:
    """The edges between `n_levels` quantile buckets of `values` (the sampled items'), so every
    later measurement (a generated image's, issue 29) is bucketed exactly as the items were."""
    return values.quantile(np.linspace(0, 1, n_levels + 1)[1:-1]).to_numpy()


def to_levels(values: pd.Series, edges: np.ndarray, names: tuple[str, ...]) -> pd.Series:
    """`values` bucketed at `edges` into the level `names` (dark/medium/light...)."""
    return pd.Series(
        np.asarray(names)[np.searchsorted(edges, np.asarray(values))],
        index=getattr(values, "index", None),
    )


def _levels(values: pd.Series, names: tuple[str, ...]) -> pd.Series:
    """Quantile buckets named `names` (dark/medium/light...), computed on the sampled items."""
    return to_levels(values, level_edges(values, len(names)), names)


def build_items(
    images: np.ndarray, labels: np.ndarray, images_path: str, params: dict
) -> pd.DataFrame:
    """A seeded, class-balanced sample of `n_items` images of a Fashion-MNIST archive as items."""
    rng = np.random.default_rng(int(params["seed"]))
    per_class = int(params["n_items"]) // len(CLASS_NAMES)
    chosen = np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
        )
    )
    attrs = pixel_attributes(images[chosen])
    items = pd.DataFrame(
        {
            "item_id": [f"fm{i:05d}" for i in chosen],
            "image_offset": chosen.astype("int64"),
            "class_id": labels[chosen].astype("int64"),
            "class_name": [CLASS_NAMES[c] for c in labels[chosen]],
            "brightness": attrs["brightness"].round(4),
            "texture": attrs["texture"].round(4),
            "coverage": attrs["coverage"].round(4),
        }
    )
    items["brightness_level"] = _levels(items["brightness"], BRIGHTNESS)
    items["texture_level"] = _levels(items["texture"], TEXTURE)
    items["title"] = items["class_name"]
    items["caption"] = (
        items["brightness_level"] + " " + items["texture_level"] + " " + items["class_name"]
    )
    items["image_path"] = images_path
    return items


def simulate_users(items: pd.DataFrame, params: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """SIMULATED users: a hidden taste each, clicks drawn with p ~ exp(beta * taste match)."""
    sim = params["simulation"]
    rng = np.random.default_rng(int(params["seed"]) + 1)
    n_users = int(sim["n_users"])
    weights = sim["match_weights"]
    users, clicks = [], []
    for u in range(n_users):
        user_id = f"sim{u:04d}"
        fav = rng.choice(len(CLASS_NAMES), 2, replace=False)
        bright = BRIGHTNESS[rng.integers(len(BRIGHTNESS))]
        texture = TEXTURE[rng.integers(len(TEXTURE))]
        score = (
            weights["class"] * items["class_id"].isin(fav).to_numpy()
            + weights["brightness"] * (items["brightness_level"] == bright).to_numpy()
            + weights["texture"] * (items["texture_level"] == texture).to_numpy()
        )
        p = np.exp(float(sim["beta"]) * score)
        n_clicks = int(rng.integers(int(sim["min_clicks"]), int(sim["max_clicks"]) + 1))
        picked = rng.choice(len(items), n_clicks, replace=False, p=p / p.sum())
        users.append(
            {
                "user_id": user_id,
                "taste_classes": [CLASS_NAMES[c] for c in sorted(fav)],
                "taste_brightness": bright,
                "taste_texture": texture,
                "n_clicks": n_clicks,
            }
        )
        clicks += [(user_id, items["item_id"].iat[i], t) for t, i in enumerate(picked)]
    users_df = pd.DataFrame(users)
    users_df["simulated"] = True
    interactions = pd.DataFrame(clicks, columns=["user_id", "item_id", "timestamp"])
    interactions["timestamp"] = interactions["timestamp"].astype("int64")
    interactions["simulated"] = True
    return users_df, interactions


def build_tables(
    images: np.ndarray, labels: np.ndarray, images_path: str, params: dict, source: str
) -> SceneTables:
    """Fashion-MNIST items and SIMULATED users/clicks; the image index points into the IDX archive."""
    if len(images) != len(labels):
        raise IngestionError(
            source,
            [
                Defect(
                    images_path,
                    "",
                    "(file)",
                    f"{len(labels)} images, one per label",
                    str(len(images)),
                )
            ],
        )
    items = build_items(images, labels, images_path, params)
    users, interactions = simulate_users(items, params)
    image_index = items[["item_id", "image_path", "image_offset"]].reset_index(drop=True)
    items = items.drop(columns=["image_path", "image_offset"])
    counts = {
        "fashion_mnist_images": int(len(labels)),
        "items_sampled": len(items),
        "simulated_users": len(users),
        "simulated_clicks": len(interactions),
    }
    return SceneTables(items, interactions, image_index, users, source, counts, simulated=True)
