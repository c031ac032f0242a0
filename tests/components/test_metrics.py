"""Image-pair metrics (SSIM, MobileNetV2 feature distance, LPIPS wiring) and the statistics."""

import numpy as np
import pandas as pd
import pytest
import torch
from skimage.metrics import structural_similarity

from pmg_kedro.components import metrics
from pmg_kedro.components.features import MobileNetFeatures

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


def test_bootstrap_interval_covers_the_mean_and_is_seeded():
    values = np.random.default_rng(0).normal(0.3, 0.1, size=40)
    mean, low, high = metrics.bootstrap_interval(values, 500, seed=1)
    assert mean == pytest.approx(values.mean())
    assert low < mean < high
    # about 2 standard errors either side
    se = values.std(ddof=1) / np.sqrt(len(values))
    assert 2.5 * se < high - low < 5.5 * se
    assert metrics.bootstrap_interval(values, 500, seed=1) == (mean, low, high)
    assert metrics.bootstrap_interval(values, 500, seed=2) != (mean, low, high)
    # NaN users are left out; one user has no interval
    assert metrics.bootstrap_interval([np.nan, 2.0, 4.0], 100, 0)[0] == pytest.approx(3.0)
    single = metrics.bootstrap_interval([0.7], 100, 0)
    assert single[0] == 0.7 and np.isnan(single[1]) and np.isnan(single[2])


def _per_seed(values: dict[tuple[str, int], float]) -> pd.DataFrame:
    return pd.DataFrame(
        [(u, s, v) for (u, s), v in values.items()], columns=["user_id", "seed", "value"]
    )


def test_a_variant_better_for_every_user_gives_an_interval_without_zero():
    rng = np.random.default_rng(3)
    users = [f"u{i}" for i in range(12)]
    b = {(u, s): rng.normal() for u in users for s in (1, 2)}
    a = {k: v + 0.5 + 0.1 * rng.random() for k, v in b.items()}
    diffs = metrics.paired_user_differences(_per_seed(a), _per_seed(b), "value")
    result = metrics.paired_test(diffs, 1000, seed=0)
    assert result["n_users"] == 12 and result["ci_low"] > 0.45
    assert result["wilcoxon_p"] == pytest.approx(2 / 2**12)  # exact two-sided test, all positive
    flipped = metrics.paired_test(-diffs, 1000, seed=0)
    assert flipped["ci_high"] < 0 and flipped["wilcoxon_p"] == pytest.approx(result["wilcoxon_p"])


def test_pairs_are_matched_by_user_and_seed():
    # u1 lacks seed 2 in b: only seed 1 pairs (10 - 9 = 1), not the user means (15 - 9 = 6)
    a = _per_seed({("u1", 1): 10.0, ("u1", 2): 20.0, ("u2", 1): 1.0, ("u2", 2): 5.0})
    b = _per_seed({("u1", 1): 9.0, ("u2", 1): 0.0, ("u2", 2): 2.0})
    diffs = metrics.paired_user_differences(a, b, "value")
    assert diffs.to_dict() == {"u1": 1.0, "u2": 2.0}


def test_identical_variants_give_p_one_and_a_note():
    result = metrics.paired_test(np.zeros(5), 100, seed=0)
    assert result["wilcoxon_p"] == 1.0 and result["mean_difference"] == 0.0
    assert "0" in result["test_note"]
    assert metrics.paired_test([0.3], 100, 0)["test_note"].startswith("no test")
