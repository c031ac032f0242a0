"""Taste transfer (issue 29): does a chosen image show the SIMULATED user's hidden taste?

A simulated costume user clicks by a hidden brightness level and texture level
(`sources.fashion_mnist`). Those are things the generator can draw and pixels can measure
exactly, so they make a positive control for personalization: the chosen image's brightness and
texture are measured with the items' own measurement (`pixel_attributes`, on a 28 px greyscale
image as the Fashion-MNIST items were) and bucketed with the items' own level edges (the same
quantiles of the items' values), then compared with the USER's hidden level — never the target
item's, which the target text may already name. Per image 1.0 (same level) or 0.0; a user's value
is the share over noise seeds. Chance is stated from the levels' shares.

The measurement is checked on real images: the target items' images, resized to the evaluation
resolution and back exactly as generated images are, must come out at their recorded level most
of the time (`measurement_check`); the report prints that agreement beside the rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from pmg_kedro.components.data.sources.fashion_mnist import (
    BRIGHTNESS,
    TEXTURE,
    level_edges,
    pixel_attributes,
    to_levels,
)

MEASURE_SIZE = 28  # the Fashion-MNIST items were measured at 28 px
# column -> (the items' measured attribute, the users' hidden-level column, the level names)
TASTE_TRANSFER = {
    "user_brightness_transfer": ("brightness", "taste_brightness", BRIGHTNESS),
    "user_texture_transfer": ("texture", "taste_texture", TEXTURE),
}
NAMES = {
    "brightness_transfer": "hidden brightness drawn (SIMULATED)",
    "texture_transfer": "hidden texture drawn (SIMULATED)",
}


def applicable(items: pd.DataFrame, users: pd.DataFrame) -> str | None:
    """Why taste transfer cannot be measured here (None: it can)."""
    for attribute, taste, _ in TASTE_TRANSFER.values():
        if attribute not in items.columns:
            return f"not applicable: items have no measured {attribute!r} (not Fashion-MNIST)"
        if taste not in users.columns:
            return f"not applicable: users have no hidden {taste!r} (not SIMULATED users)"
    return None


def measured_levels(arrays: list[np.ndarray], items: pd.DataFrame) -> pd.DataFrame:
    """Brightness and texture levels of images given as (3, H, W) float arrays in [0, 1]: each
    to greyscale, resized to 28 px, measured by `pixel_attributes` and bucketed at the items' level
    edges. Returns one row per image: brightness, texture, and their levels."""
    if not arrays:
        return pd.DataFrame(columns=["brightness", "texture", "brightness_level", "texture_level"])
    grey = []
    for a in arrays:
        image = Image.fromarray(np.clip(np.asarray(a).mean(axis=0) * 255, 0, 255).astype(np.uint8))
        # Nearest: no new in-between pixels at the garment's edge, which the brightness mask
        # (> 0.05) would count. Measured on 2,000 real t10k items upsampled to 32 px as the
        # pipelines do (bicubic): levels recovered 0.868 (brightness) / 0.866 (texture); bicubic
        # 0.720 / 0.823, box 0.844 / 0.863.
        grey.append(np.asarray(image.resize((MEASURE_SIZE, MEASURE_SIZE), Image.NEAREST)))
    values = pixel_attributes(np.stack(grey))
    out = values[["brightness", "texture"]].copy()
    for attribute, _, names in TASTE_TRANSFER.values():
        edges = level_edges(items[attribute], len(names))
        out[f"{attribute}_level"] = to_levels(values[attribute], edges, names).to_numpy()
    return out


def transfer_columns(
    user_ids: pd.Series, levels: pd.DataFrame, users: pd.DataFrame
) -> dict[str, np.ndarray]:
    """Per image, 1.0 where its measured level is the USER's hidden level, else 0.0 (NaN for a
    user without one)."""
    table = users.assign(user_id=users["user_id"].astype(str)).drop_duplicates("user_id")
    table = table.set_index("user_id")
    columns = {}
    for column, (attribute, taste, _) in TASTE_TRANSFER.items():
        hidden = [table[taste].get(str(u)) for u in user_ids]
        measured = levels[f"{attribute}_level"].to_numpy()
        columns[column] = np.array(
            [np.nan if h is None else float(m == h) for m, h in zip(measured, hidden, strict=True)]
        )
    return columns


def chance(items: pd.DataFrame, users: pd.DataFrame, column: str) -> float:
    """The share of matches by chance: sum over levels of (items' share) x (users' share)."""
    attribute, taste, names = TASTE_TRANSFER[column]
    item_levels = to_levels(items[attribute], level_edges(items[attribute], len(names)), names)
    item_share = item_levels.value_counts(normalize=True)
    user_share = users.drop_duplicates("user_id")[taste].value_counts(normalize=True)
    return float(sum(item_share.get(n, 0.0) * user_share.get(n, 0.0) for n in names))


def measurement_check(
    target_arrays: list[np.ndarray], target_ids: list[str], items: pd.DataFrame
) -> dict[str, Any]:
    """How often real target images, through the same path as generated ones, come out at their
    recorded level: the measurement's own accuracy (1.0 would be exact)."""
    if not target_arrays:
        return {"n_images": 0}
    levels = measured_levels(target_arrays, items)
    recorded = items.assign(item_id=items["item_id"].astype(str)).set_index("item_id")
    check = {"n_images": len(target_ids)}
    for attribute, _, _ in TASTE_TRANSFER.values():
        truth = recorded.loc[list(target_ids), f"{attribute}_level"].to_numpy()
        agreement = float(np.mean(levels[f"{attribute}_level"].to_numpy() == truth))
        check[f"{attribute}_level_agreement"] = round(agreement, 4)
    return check


def specs(status: str, items: pd.DataFrame, users: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Table 1's taste-transfer metric columns (section `taste_transfer`), with their chance."""
    out = {}
    for column, (attribute, taste, names) in TASTE_TRANSFER.items():
        metric = column.removeprefix("user_")
        base = chance(items, users, column) if status == "ok" else None
        out[column] = {
            "reference": "user",
            "metric": metric,
            "name": NAMES[metric],
            "direction": "higher",
            "status": status,
            "section": "taste_transfer",
            "chance": base,
            "description": f"the chosen image's measured {attribute} level ({', '.join(names)}; "
            f"items' level edges) is the user's hidden {taste}"
            + (f"; chance {base:.3f} from the levels' shares" if base is not None else ""),
        }
    return out
