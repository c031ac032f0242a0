"""Taste transfer (issue 29): a chosen image's measured brightness / texture level against the
SIMULATED user's hidden level, with the items' measurement and level edges."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pmg_kedro.components.data.sources.fashion_mnist import BRIGHTNESS, _levels
from pmg_kedro.components.evaluation import taste_transfer


def _garment(value: float, striped: bool = False, size: int = 32) -> np.ndarray:
    """(3, size, size) in [0, 1]: a square garment of brightness `value` on black, plain or with
    one-pixel stripes (texture)."""
    image = np.zeros((size, size), dtype=np.float32)
    image[6:26, 6:26] = value
    if striped:
        image[6:26:2, 6:26] = value * 0.4
    return np.stack([image] * 3)


@pytest.fixture()
def items():
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(60)],
            "brightness": np.round(rng.uniform(0.15, 0.95, 60), 4),
            "texture": np.round(rng.uniform(0.0, 0.4, 60), 4),
        }
    )
    table["brightness_level"] = _levels(table["brightness"], BRIGHTNESS)
    table["texture_level"] = _levels(table["texture"], ("plain", "patterned"))
    return table


def test_levels_use_the_items_edges(items):
    levels = taste_transfer.measured_levels([_garment(0.2), _garment(0.55), _garment(0.93)], items)
    assert levels["brightness_level"].tolist() == ["dark", "medium", "light"]
    plain, striped = taste_transfer.measured_levels(
        [_garment(0.9), _garment(0.9, striped=True)], items
    )["texture_level"]
    assert (plain, striped) == ("plain", "patterned")


def test_a_match_is_the_users_hidden_level_not_the_targets(items):
    """Both users' targets are light; u1's hidden brightness is dark, u2's light. An image drawn
    dark matches u1 only: reading the target's level would give the opposite."""
    users = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "taste_brightness": ["dark", "light"],
            "taste_texture": ["plain", "plain"],
        }
    )
    arrays = [_garment(0.2), _garment(0.2)]
    levels = taste_transfer.measured_levels(arrays, items)
    columns = taste_transfer.transfer_columns(pd.Series(["u1", "u2"]), levels, users)
    assert columns["user_brightness_transfer"].tolist() == [1.0, 0.0]
    assert columns["user_texture_transfer"].tolist() == [1.0, 1.0]
    unknown = taste_transfer.transfer_columns(pd.Series(["u9"]), levels.iloc[:1], users)
    assert np.isnan(unknown["user_brightness_transfer"][0])


def test_chance_comes_from_the_levels_shares(items):
    users = pd.DataFrame(
        {
            "user_id": ["a", "b", "c", "d"],
            "taste_brightness": ["dark"] * 3 + ["light"],
            "taste_texture": ["plain"] * 4,
        }
    )
    shares = items["brightness_level"].value_counts(normalize=True)
    expected = 0.75 * shares["dark"] + 0.25 * shares["light"]
    assert taste_transfer.chance(items, users, "user_brightness_transfer") == pytest.approx(
        expected
    )
    assert taste_transfer.chance(items, users, "user_texture_transfer") == pytest.approx(
        items["texture_level"].value_counts(normalize=True)["plain"]
    )


def test_not_applicable_without_measured_items_or_hidden_tastes(items):
    users = pd.DataFrame(
        {"user_id": ["u1"], "taste_brightness": ["dark"], "taste_texture": ["plain"]}
    )
    assert taste_transfer.applicable(items, users) is None
    assert "SIMULATED" in taste_transfer.applicable(items, users[["user_id"]])
    assert "Fashion-MNIST" in taste_transfer.applicable(items.drop(columns="texture"), users)


def test_the_measurement_recovers_real_fashion_mnist_levels(project_root):
    """On real items (Fashion-MNIST t10k, as ingestion samples them), the 32 px path generated images
    take gives back the recorded level for most images: the measurement is valid."""
    from pmg_kedro.components.data.images import read_idx_images, read_idx_labels
    from pmg_kedro.components.data.sources.fashion_mnist import build_items

    folder = "/usr/share/datasets/fashion-mnist"
    images = read_idx_images(f"{folder}/t10k-images-idx3-ubyte.gz")
    labels = read_idx_labels(f"{folder}/t10k-labels-idx1-ubyte.gz")
    table = build_items(images, labels, "unused", {"seed": 0, "n_items": 500})
    up = [  # as the pipelines show items at 32 px (components.data.images: bicubic)
        np.stack([np.asarray(Image.fromarray(images[o]).resize((32, 32), Image.BICUBIC))] * 3)
        / np.float32(255.0)
        for o in table["image_offset"]
    ]
    check = taste_transfer.measurement_check(up, table["item_id"].tolist(), table)
    assert check["n_images"] == 500
    assert check["brightness_level_agreement"] >= 0.8, check
    assert check["texture_level_agreement"] >= 0.8, check
