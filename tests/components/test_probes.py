"""The nearest-centroid semantic probe on MobileNetV2 features of real (here: planted) images."""

import numpy as np
import pandas as pd
import pytest
import torch

from pmg_kedro.components.evaluation import probes
from pmg_kedro.components.evaluation.features import MobileNetFeatures

pytestmark = pytest.mark.usefixtures("one_thread")


def planted_image(kind: str, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """Vertical stripes, horizontal stripes or a disc, in a random colour, phase and position."""
    yy, xx = np.mgrid[0:size, 0:size]
    if kind == "vertical":
        mask = ((xx + rng.integers(4)) // 2) % 2 == 0
    elif kind == "horizontal":
        mask = ((yy + rng.integers(4)) // 2) % 2 == 0
    else:
        cy, cx = rng.integers(10, 22, size=2)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 < 64
    colour = rng.uniform(0.5, 1.0, size=3)[:, None, None]
    noise = rng.normal(0, 0.05, size=(3, size, size))
    return np.clip(mask[None] * colour + noise, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    kinds = ["vertical", "horizontal", "disc"]
    ids = [f"{k}{i}" for k in kinds for i in range(8)]
    images = {i: planted_image(i.rstrip("0123456789"), rng) for i in ids}
    labels = pd.Series({i: i.rstrip("0123456789") for i in ids})
    return images, labels


def test_the_probe_classifies_held_out_real_images_above_chance(planted):
    images, labels = planted
    fit, held = probes.holdout_split(labels, 0.25, max_per_class=8, seed=1)
    model = MobileNetFeatures(input_size=32)
    feats = model.pooled(torch.from_numpy(np.stack([images[i] for i in fit + held]))).numpy()
    probe = probes.fit_probe(
        feats[: len(fit)], labels[fit].tolist(), feats[len(fit) :], labels[held].tolist(), "kind"
    )
    assert probe.report["n_held_out_images"] == 6
    assert probe.report["chance"] == pytest.approx(1 / 3, abs=1e-4)
    assert probe.report["held_out_accuracy"] >= 0.8  # 5 of 6; chance is 1/3
    assert sorted(probe.classes) == ["disc", "horizontal", "vertical"]
    # the same probe with the labels of the fit images shuffled is no better than chance here
    shuffled = np.random.default_rng(2).permutation(labels[fit].tolist())
    control = probes.fit_probe(
        feats[: len(fit)], shuffled, feats[len(fit) :], labels[held].tolist(), "kind"
    )
    assert control.report["held_out_accuracy"] < probe.report["held_out_accuracy"]


def test_holdout_split_is_seeded_disjoint_and_capped():
    labels = pd.Series({f"a{i}": "a" for i in range(10)} | {f"b{i}": "b" for i in range(3)})
    labels["c0"] = "c"
    fit, held = probes.holdout_split(labels, 0.2, max_per_class=5, seed=7)
    assert (fit, held) == probes.holdout_split(labels, 0.2, max_per_class=5, seed=7)
    assert not set(fit) & set(held)
    per_class = pd.Series([labels[i] for i in fit + held]).value_counts().to_dict()
    assert per_class == {"a": 5, "b": 3, "c": 1}  # a capped at 5
    held_per_class = pd.Series([labels[i] for i in held]).value_counts().to_dict()
    assert held_per_class == {"a": 1, "b": 1}  # c's single image is only fitted on
    assert "c0" in fit
    assert probes.holdout_split(labels, 0.2, max_per_class=5, seed=8) != (fit, held)


def test_single_image_classes_make_held_out_accuracy_unmeasurable():
    feats = np.eye(3)
    probe = probes.fit_probe(feats, ["x", "y", "z"], np.zeros((0, 3)), [], "item_id")
    assert probe.report["held_out_accuracy"] is None
    assert "single" in probe.report["held_out_note"]
    # the nearest image's class is predicted
    assert probe.predict(np.array([[0.9, 0.1, 0.0], [0.0, 0.2, 0.7]])).tolist() == ["x", "z"]


def test_item_labels_take_the_first_of_a_list_and_drop_missing():
    items = pd.DataFrame(
        {
            "item_id": ["1", "2", "3", "4"],
            "genres": [["Drama", "Comedy"], [], ["Horror"], None],
        }
    )
    assert probes.item_labels(items, "genres").to_dict() == {"1": "Drama", "3": "Horror"}
    with pytest.raises(KeyError, match="class_name"):
        probes.item_labels(items, "class_name")


def test_membership_is_nan_without_a_set():
    out = probes.membership(["a", "b", "c", "d"], [{"a", "x"}, {"a"}, None, set()])
    assert out[:2].tolist() == [1.0, 0.0]
    assert np.isnan(out[2]) and np.isnan(out[3])
