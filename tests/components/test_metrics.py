"""Image-pair metrics (SSIM, MobileNetV2 feature distance, LPIPS wiring) and the statistics."""

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.metrics import structural_similarity

from pmg_kedro.components.evaluation import metrics
from pmg_kedro.components.evaluation.features import MobileNetFeatures

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mobilenet():
    return MobileNetFeatures(input_size=32)


def _images(n, seed, size=16):
    return np.random.default_rng(seed).random((n, 3, size, size), dtype=np.float32)


def test_ssim_of_identical_images_is_one_in_rgb_and_grey():
    a = _images(1, 0)[0]
    assert metrics.ssim(a, a, "rgb") == pytest.approx(1.0)
    assert metrics.ssim(a, a, "grey") == pytest.approx(1.0)


def test_ssim_of_a_known_pair_is_skimage_s():
    a, b = _images(2, 1)
    # a smoothed, darker copy of `a` is closer to `a` than an unrelated image
    c = (0.5 * a + 0.5 * np.roll(a, 1, axis=2)) * 0.8
    expected = structural_similarity(
        a.transpose(1, 2, 0), c.transpose(1, 2, 0), data_range=1.0, channel_axis=-1, win_size=7
    )
    assert metrics.ssim(a, c) == pytest.approx(expected, abs=1e-12)
    assert metrics.ssim(a, c) > metrics.ssim(a, b)
    grey = structural_similarity(
        a.transpose(1, 2, 0) @ [0.2125, 0.7154, 0.0721],
        c.transpose(1, 2, 0) @ [0.2125, 0.7154, 0.0721],
        data_range=1.0,
    )
    assert metrics.ssim(a, c, "grey") == pytest.approx(grey, abs=1e-6)
    with pytest.raises(ValueError, match="rgb"):
        metrics.ssim(a, c, "lab")


def test_encode_gives_mobilenets_pooled_features(mobilenet):
    x = _images(5, 2, 32)
    _, pooled = metrics.encode(mobilenet, x, batch_size=2)
    assert torch.allclose(pooled, mobilenet.pooled(torch.from_numpy(x)), atol=1e-5)


def test_distance_matrix_equals_the_pairwise_feature_distance(mobilenet):
    gen, ref = _images(3, 3, 32), _images(4, 4, 32)
    ref[1] = gen[2]  # an identical pair: distance 0
    ga, _ = metrics.encode(mobilenet, gen)
    ra, _ = metrics.encode(mobilenet, ref)
    matrix = metrics.feature_distance_matrix(ga, ra)
    assert matrix.shape == (3, 4)
    a = torch.from_numpy(np.repeat(gen, 4, axis=0))
    b = torch.from_numpy(np.tile(ref, (3, 1, 1, 1)))
    pairwise = mobilenet.distance(a, b).reshape(3, 4)
    assert torch.allclose(matrix, pairwise, rtol=1e-4, atol=1e-4)
    assert matrix[2, 1] == pytest.approx(0.0, abs=1e-4)
    assert (matrix[2, [0, 2, 3]] > 0.1).all()


class MeanAbsLpips:
    """A stand-in with the Lpips interface: mean |a - b| per pair (checks which pairs are fed)."""

    def distance(self, a, b):
        return (a - b).abs().mean(dim=(1, 2, 3))


def test_blocks_pair_each_generated_image_with_its_own_references(mobilenet):
    images = {f"g{i}": a for i, a in enumerate(_images(4, 5, 32))}
    images |= {f"r{i}": a for i, a in enumerate(_images(3, 6, 32))}
    blocks = [(["g0", "g1"], ["r0", "r1"]), (["g2"], ["r1", "r2"]), (["g3"], [])]
    suite = metrics.PairMetrics(mobilenet, lpips=MeanAbsLpips(), lpips_input_size=32)
    table, pooled = suite.compare_blocks(images, blocks)
    pairs = list(zip(table["generated"], table["reference"], strict=True))
    assert pairs == [
        ("g0", "r0"),
        ("g0", "r1"),
        ("g1", "r0"),
        ("g1", "r1"),
        ("g2", "r1"),
        ("g2", "r2"),
    ]
    assert set(pooled) == {"g0", "g1", "g2", "g3"}  # g3 has no references but gets features
    for row in table.itertuples():
        a, b = images[row.generated], images[row.reference]
        assert row.ssim == pytest.approx(metrics.ssim(a, b), abs=1e-9)
        assert row.lpips == pytest.approx(float(np.abs(a - b).mean()), abs=1e-5)
        pair = mobilenet.distance(torch.from_numpy(a[None]), torch.from_numpy(b[None]))
        assert row.mobilenet_feature_distance == pytest.approx(float(pair), rel=1e-4)
    # chunks of at most 3 distinct images give the same numbers
    small = metrics.PairMetrics(mobilenet, lpips=MeanAbsLpips(), lpips_input_size=32)
    small.images_per_chunk = 3
    chunked, _ = small.compare_blocks(images, blocks)
    pd.testing.assert_frame_equal(chunked, table, rtol=1e-4)


def test_without_lpips_there_is_no_lpips_column(mobilenet):
    images = {"g": _images(1, 7, 32)[0], "r": _images(1, 8, 32)[0]}
    table, _ = metrics.PairMetrics(mobilenet).compare_blocks(images, [(["g"], ["r"])])
    assert metrics.LPIPS not in table.columns and len(table) == 1
