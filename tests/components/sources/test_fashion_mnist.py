import numpy as np
import pytest

from pmg_kedro.components.data.defects import IngestionError
from pmg_kedro.components.data.sources import fashion_mnist as fm

PARAMS = {
    "seed": 7,
    "n_items": 200,
    "simulation": {
        "n_users": 40,
        "min_clicks": 11,
        "max_clicks": 15,
        "beta": 1.5,
        "match_weights": {"class": 2.0, "brightness": 1.0, "texture": 1.0},
    },
}


def _fake_fashion_mnist(n=600, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), n // 10).astype(np.uint8)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for k in range(n):
        level = rng.integers(40, 255)
        images[k, 4:24, 6:22] = level
        if k % 2:  # every other image gets a pattern
            images[k, 4:24:2, 6:22] = level // 3
    return images, labels


def test_items_are_class_balanced_and_carry_pixel_attributes():
    images, labels = _fake_fashion_mnist()
    tables = fm.build_tables(images, labels, "/fake/train.gz", PARAMS, "fixture")
    assert tables.items["class_name"].value_counts().tolist() == [20] * 10
    assert set(tables.items["brightness_level"]) == set(fm.BRIGHTNESS)
    assert set(tables.items["texture_level"]) == set(fm.TEXTURE)
    assert (
        tables.simulated
        and tables.interactions["simulated"].all()
        and tables.users["simulated"].all()
    )
    offsets = tables.image_index["image_offset"].to_numpy()
    assert (labels[offsets] == tables.items["class_id"].to_numpy()).all()


def test_simulated_clicks_follow_the_hidden_taste():
    images, labels = _fake_fashion_mnist()
    tables = fm.build_tables(images, labels, "/fake/train.gz", PARAMS, "fixture")
    clicks = tables.interactions.merge(tables.items, on="item_id").merge(tables.users, on="user_id")
    in_taste = clicks.apply(lambda r: r["class_name"] in r["taste_classes"], axis=1).mean()
    # two favourite classes of ten: 20% by chance; exp(1.5*2) makes them ~20x likelier per item
    assert in_taste > 0.6


def test_simulation_is_seeded():
    images, labels = _fake_fashion_mnist()
    a = fm.build_tables(images, labels, "/fake", PARAMS, "fixture")
    b = fm.build_tables(images, labels, "/fake", PARAMS, "fixture")
    assert a.interactions.equals(b.interactions)
    c = fm.build_tables(images, labels, "/fake", {**PARAMS, "seed": 8}, "fixture")
    assert not a.interactions.equals(c.interactions)


def test_pixel_attributes_tell_dark_from_light_and_plain_from_patterned():
    dark = np.zeros((28, 28), np.uint8)
    dark[5:20, 5:20] = 60
    light = dark.copy()
    light[5:20, 5:20] = 240
    striped = light.copy()
    striped[5:20:2, 5:20] = 80
    attrs = fm.pixel_attributes(np.stack([dark, light, striped]))
    assert attrs["brightness"][0] < attrs["brightness"][1]
    assert attrs["texture"][2] > attrs["texture"][1]


def test_archives_of_different_lengths_are_rejected():
    images, labels = _fake_fashion_mnist()
    with pytest.raises(IngestionError, match=r"/fake/images.gz, field '\(file\)': expected 599"):
        fm.build_tables(images, labels[:-1], "/fake/images.gz", PARAMS, "fixture")
