"""A tiny synthetic scene in the metric_evaluation data contract, with planted images.

Items of three classes (vertical stripes, horizontal stripes, a disc) as PNG files; three SIMULATED
evaluation users and one train user; variants whose chosen images are planted:
- `pmg` chooses the user's FIRST HISTORY image (so its history metrics are known by hand),
- `without_both` chooses the user's TARGET image,
- `without_embeddings`, `target_best_of_n` and `pmg_unweighted` choose noise,
- `without_keywords` did not run (empty, with a why in the personalization report).
The train user `t1` has chosen rows too, with extreme images: they must never be evaluated.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

SEEDS = [1, 2]
KINDS = {"v": "vertical", "h": "horizontal", "d": "disc"}
HISTORY = {  # x0 is an item without an image; u3 repeats d1
    "u1": (["v0", "v1", "x0"], "h0"),
    "u2": (["h1", "h2"], "d0"),
    "u3": (["d1", "d2", "d1"], "v2"),
    "t1": (["v3"], "h3"),
}
TASTES = {"u1": ["vertical"], "u2": ["horizontal"], "u3": ["disc"], "t1": ["disc"]}
NOT_RUN_WHY = "not applicable: this scene has no soft preference embeddings (planted)"
PLACEBO_SEED = 5  # the shuffled PLACEBO's derangement seed weighted_generation reports
VARIANTS = (
    "pmg",
    "without_embeddings",
    "without_keywords",
    "without_both",
    "target_best_of_n",
    "pmg_unweighted",
)

PARAMS = {
    "scene": "synthetic",
    "environment_note": "pytest synthetic scene",
    "image_size": 32,
    "ssim": {"color": "rgb", "win_size": 7},
    "feature_distance": {"input_size": 32, "batch_size": 8, "images_per_chunk": 10},
    "lpips": {"input_size": 32, "batch_size": 4},
    "bootstrap": {"n_boot": 200, "confidence": 0.95, "seed": 0},
    "comparisons": [
        ["pmg", "without_both"],
        ["pmg", "target_best_of_n"],
        ["without_keywords", "without_both"],
    ],
    "table2_tokens": [2, 4, 8, 16],
    "probe": {
        "label_column": "class_name",
        "checks": ["target", "history", "hidden_taste"],
        "hidden_taste_column": "taste_classes",
        "max_images_per_class": 10,
        "holdout_fraction": 0.0,
        "seed": 0,
    },
    "identity_probe": {
        "source": "augmented_items",
        "label_column": "class_name",
        "min_accuracy": 0.8,
        "input_size": 32,
        "seed": 0,
        "archive": {"fit_per_class": 8, "test_per_class": 4},
        "augmentations": {
            "source_size": 32,
            "fit_per_image": 24,
            "held_out_per_image": 8,
            "rotation_degrees": 10,
            "scale": [0.9, 1.1],
            "translate": 0.05,
            "crop_scale": [0.8, 1.0],
            "brightness": 0.2,
            "contrast": 0.2,
            "saturation": 0.2,
            "hue": 0.02,
            "blur_sigma": [0.1, 1.0],
            "blur_probability": 0.5,
        },
        "training": {"width": 8, "steps": 80, "batch_size": 32, "lr": 1e-2, "schedule": "cosine"},
    },
    "figures": {"users": 2, "history_columns": 3, "alphas": [0.25, 0.5, 0.75]},
}
WEIGHTED_GENERATION = {"seeds": SEEDS, "cosine_floor": 0.001, "alpha": 0.5}
ABLATIONS = {
    "pmg": {"grid": True},
    "without_embeddings": {"grid": True},
    "without_keywords": {"grid": True},
    "without_both": {"grid": False},
    "target_best_of_n": {"grid": False},
    "pmg_unweighted": {"grid": False},
}


def planted_image(kind: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """uint8 (size, size, 3): stripes or a disc in a random colour, with a little noise."""
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == "vertical":
        mask = ((xx + rng.integers(4)) // 2) % 2 == 0
    elif kind == "horizontal":
        mask = ((yy + rng.integers(4)) // 2) % 2 == 0
    else:
        cy, cx = rng.integers(10, 22, size=2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < 64
    colour = rng.uniform(0.5, 1.0, size=3)
    image = mask[..., None] * colour + rng.normal(0, 0.05, size=(size, size, 3))
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def archive(n_per_class: int, seed: int) -> dict:
    """A labelled archive in `FashionMNISTClasses`' shape: grey planted images (n, 28, 28) of the
    three kinds, labelled by kind."""
    rng = np.random.default_rng(seed)
    kinds = [k for k in KINDS.values() for _ in range(n_per_class)]
    images = np.stack([planted_image(k, rng, 28).mean(axis=2).astype(np.uint8) for k in kinds])
    return {"images": images, "labels": np.array(kinds), "source": f"planted archive {seed}"}


def build(folder: Path) -> dict:
    """Every input of the metric_evaluation nodes for one scene (fresh copies per call)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    item_images = {}
    for prefix, kind in KINDS.items():
        for i in range(4):
            item_images[f"{prefix}{i}"] = Image.fromarray(planted_image(kind, rng))
    for item, image in item_images.items():
        image.save(folder / f"{item}.png")
    items = pd.DataFrame(
        {
            "item_id": [*item_images, "x0"],
            "class_name": [KINDS[i[0]] for i in item_images] + ["vertical"],
        }
    )
    image_index = pd.DataFrame(
        {
            "item_id": list(item_images),
            "image_path": [str(folder / f"{i}.png") for i in item_images],
            "image_offset": -1,
        }
    )
    users = pd.DataFrame(
        {
            "user_id": list(TASTES),
            "taste_classes": list(TASTES.values()),
            "simulated": True,
        }
    )
    histories = pd.DataFrame(
        {
            "user_id": list(HISTORY),
            "history": [h for h, _ in HISTORY.values()],
            "target": [t for _, t in HISTORY.values()],
            "simulated": True,
        }
    )
    user_split = pd.DataFrame(
        {"user_id": list(HISTORY), "split": ["evaluation"] * 3 + ["train"], "seed": 0}
    )
    noise = {
        (u, s): Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        for u in HISTORY
        for s in SEEDS
    }
    chosen_sources = {
        "pmg": lambda u, s: item_images[HISTORY[u][0][0]],
        "without_embeddings": lambda u, s: noise[(u, s)],
        "without_both": lambda u, s: item_images[HISTORY[u][1]],
        "target_best_of_n": lambda u, s: noise[(u, s)],
        "pmg_unweighted": lambda u, s: noise[(u, s)],
    }
    inputs = {
        "histories": histories,
        "user_split": user_split,
        "items": items,
        "image_index": image_index,
        "users": users,
        "personalization_report": {
            "not_applicable": {"without_keywords": NOT_RUN_WHY},
            "placebo_seed": PLACEBO_SEED,
        },
    }
    for variant in VARIANTS:
        selections, chosen = _selections(variant, chosen_sources.get(variant), rng)
        inputs[f"{variant}_selections"] = selections
        inputs[f"{variant}_chosen_images"] = chosen
    table2 = [
        (u, s, f"L{n}_{tag}", n, tag == "ptuning", f"L{n}_{tag}/{u}/s{s}")
        for n, tag in ((4, "ptuning"), (8, "no_ptuning"))
        for u in HISTORY
        for s in SEEDS
    ]
    inputs["table2_selections"] = pd.DataFrame(
        table2, columns=["user_id", "seed", "sweep_entry", "n_tokens", "p_tuning", "image_key"]
    )
    # L4 with P-Tuning: the first history image (distance 0 to it); L8 without: noise
    inputs["table2_images"] = {
        key: item_images[HISTORY[u][0][0]] if n == 4 else noise[(u, s)]
        for u, s, _, n, _, key in table2
    }
    return copy.deepcopy(inputs)


def _selections(variant, source, rng) -> tuple[pd.DataFrame, dict]:
    """Three candidates per (user, seed), the middle one chosen; chosen images keyed <user>/s<seed>."""
    columns = [
        "user_id",
        "target",
        "seed",
        "w_p",
        "w_t",
        "d_p",
        "d_t",
        "z",
        "chosen",
        "image_key",
        "variant",
    ]
    if source is None:
        return pd.DataFrame(columns=columns), {}
    rows, chosen = [], {}
    for user, (_, target) in HISTORY.items():
        for seed in SEEDS:
            d_p, d_t = rng.uniform(0.05, 0.4, 3), rng.uniform(0.05, 0.4, 3)
            z = 0.5 * np.log(d_p) + 0.5 * np.log(d_t)
            best = int(np.argmax(z))
            for j, w_p in enumerate((0.5, 1.0, 1.5)):
                key = f"{user}/s{seed}/wp{w_p:g}_wt{2 - w_p:g}"
                rows.append(
                    (
                        user,
                        target,
                        seed,
                        w_p,
                        2 - w_p,
                        d_p[j],
                        d_t[j],
                        z[j],
                        j == best,
                        key,
                        variant,
                    )
                )
            chosen[f"{user}/s{seed}"] = source(user, seed)
    return pd.DataFrame(rows, columns=columns), chosen
