"""The identity probe (issue 22): its accuracy is measured on held-out images only, a probe below
the bar is refused, augmentations and archive samples are seeded, inputs of any size are resized."""

import numpy as np
import pytest
import torch

from pmg_kedro.components.evaluation import identity_probe as ip

pytestmark = pytest.mark.usefixtures("one_thread")

CFG = {
    "seed": 0,
    "min_accuracy": 0.8,
    "training": {"width": 4, "steps": 60, "batch_size": 16, "lr": 1e-2, "schedule": "constant"},
}
AUGMENT = {
    "rotation_degrees": 20,
    "scale": [0.7, 1.1],
    "translate": 0.1,
    "crop_scale": [0.7, 1.0],
    "brightness": 0.3,
    "contrast": 0.3,
    "saturation": 0.3,
    "hue": 0.05,
    "blur_sigma": [0.1, 1.5],
    "blur_probability": 0.5,
}


def _solid(colours, n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """n noisy images per colour (3,): (len(colours) * n, 3, size, size) in [0, 1]."""
    rng = np.random.default_rng(seed)
    images = [
        np.clip(np.asarray(c)[:, None, None] + rng.normal(0, 0.05, (3, size, size)), 0, 1)
        for c in colours
        for _ in range(n)
    ]
    return torch.from_numpy(np.stack(images).astype(np.float32))


RED, BLUE = (0.9, 0.1, 0.1), (0.1, 0.1, 0.9)


def _sets(held_labels):
    fit = ip.LabelledImages(_solid([RED, BLUE], 20), ["red"] * 20 + ["blue"] * 20, "fit")
    held = ip.LabelledImages(_solid([RED, BLUE], 5, seed=1), held_labels, "held out")
    return fit, held


def test_accuracy_is_measured_on_the_held_out_images_and_passes_the_bar():
    probe = ip.train_probe(*_sets(["red"] * 5 + ["blue"] * 5), "colour", CFG, size=16)
    assert probe.report["held_out_accuracy"] == 1.0 and probe.accepted
    assert probe.report["status"] == "ok"
    assert probe.report["n_fit_images"] == 40 and probe.report["n_held_out_images"] == 10
    assert list(probe.predict(_solid([BLUE, RED], 1, seed=2))) == ["blue", "red"]


def test_a_probe_below_the_bar_is_refused_with_its_accuracy():
    # The same, well-separated fit images, but the held-out labels are swapped: a probe scored on
    # its training images would pass; scored on the held-out ones it has accuracy 0.
    probe = ip.train_probe(*_sets(["blue"] * 5 + ["red"] * 5), "colour", CFG, size=16)
    assert probe.report["held_out_accuracy"] == 0.0 and not probe.accepted
    assert probe.report["status"] == "not applicable: accuracy 0.000 below the bar 0.80"


def test_acceptance_states_the_accuracy_and_the_bar():
    assert ip.acceptance(0.8, 0.8) == "ok"
    assert ip.acceptance(0.7999, 0.8) == "not applicable: accuracy 0.800 below the bar 0.80"
    assert ip.acceptance(0.62, 0.8) == "not applicable: accuracy 0.620 below the bar 0.80"
    assert ip.acceptance(None, 0.8).startswith("not applicable: no held-out images")


def test_held_out_labels_without_a_fit_image_are_an_error():
    fit, held = _sets(["red"] * 5 + ["green"] * 5)
    with pytest.raises(ValueError, match="green"):
        ip.train_probe(fit, held, "colour", CFG, size=16)


def test_predict_resizes_images_of_any_size():
    probe = ip.train_probe(*_sets(["red"] * 5 + ["blue"] * 5), "colour", CFG, size=16)
    small = _solid([RED, BLUE], 1, size=8, seed=3)
    large = _solid([RED, BLUE], 1, size=64, seed=3)
    assert list(probe.predict(small)) == list(probe.predict(large)) == ["red", "blue"]
    assert len(probe.predict(np.zeros((0, 3, 8, 8), np.float32))) == 0


def test_augmentations_are_seeded_and_another_seed_gives_other_images():
    sources = _solid([RED, BLUE], 1, size=24)
    first = ip.augment(sources, ["red", "blue"], 3, 5, AUGMENT, size=16)
    again = ip.augment(sources, ["red", "blue"], 3, 5, AUGMENT, size=16)
    other = ip.augment(sources, ["red", "blue"], 3, 6, AUGMENT, size=16)
    assert first.images.shape == (6, 3, 16, 16)
    assert first.labels == ["red"] * 3 + ["blue"] * 3
    assert torch.equal(first.images, again.images)
    assert not torch.allclose(first.images, other.images)
    assert float(first.images.min()) >= 0 and float(first.images.max()) <= 1


def test_archive_sample_is_seeded_per_class():
    rng = np.random.default_rng(0)
    archive = {
        "images": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "labels": np.array(["a", "b", "c"] * 10),
        "source": "planted archive",
    }
    sample = ip.archive_sample(archive, 4, seed=1, size=16)
    assert sample.images.shape == (12, 3, 16, 16)
    assert sorted(sample.labels) == ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    assert torch.equal(sample.images, ip.archive_sample(archive, 4, seed=1, size=16).images)
    assert "4 images per class (seed 1)" in sample.source
    everything = ip.archive_sample(archive, None, seed=1, size=16)
    assert everything.labels == list(archive["labels"]) and "every image" in everything.source
