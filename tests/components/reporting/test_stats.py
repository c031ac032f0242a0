"""The one bootstrap interval and the one paired test of the reports, and the helpers they
replaced: the same inputs and seeds give the same numbers as before."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from pmg_kedro.components.reporting import stats


def test_bootstrap_interval_covers_the_mean_and_is_seeded():
    values = np.random.default_rng(0).normal(0.3, 0.1, size=40)
    mean, low, high = stats.bootstrap_interval(values, 500, seed=1)
    assert mean == pytest.approx(values.mean())
    assert low < mean < high
    # about 2 standard errors either side
    se = values.std(ddof=1) / np.sqrt(len(values))
    assert 2.5 * se < high - low < 5.5 * se
    assert stats.bootstrap_interval(values, 500, seed=1) == (mean, low, high)
    assert stats.bootstrap_interval(values, 500, seed=2) != (mean, low, high)
    # NaN users are left out; one user has no interval
    assert stats.bootstrap_interval([np.nan, 2.0, 4.0], 100, 0)[0] == pytest.approx(3.0)
    single = stats.bootstrap_interval([0.7], 100, 0)
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
    diffs = stats.paired_user_differences(_per_seed(a), _per_seed(b), "value")
    result = stats.paired_test(diffs, 1000, seed=0)
    assert result["n"] == 12 and result["ci_low"] > 0.45
    assert result["wilcoxon_p"] == pytest.approx(2 / 2**12)  # exact two-sided test, all positive
    flipped = stats.paired_test(-diffs, 1000, seed=0)
    assert flipped["ci_high"] < 0 and flipped["wilcoxon_p"] == pytest.approx(result["wilcoxon_p"])


def test_pairs_are_matched_by_user_and_seed():
    # u1 lacks seed 2 in b: only seed 1 pairs (10 - 9 = 1), not the user means (15 - 9 = 6)
    a = _per_seed({("u1", 1): 10.0, ("u1", 2): 20.0, ("u2", 1): 1.0, ("u2", 2): 5.0})
    b = _per_seed({("u1", 1): 9.0, ("u2", 1): 0.0, ("u2", 2): 2.0})
    diffs = stats.paired_user_differences(a, b, "value")
    assert diffs.to_dict() == {"u1": 1.0, "u2": 2.0}


def test_identical_variants_give_p_one_and_a_note():
    result = stats.paired_test(np.zeros(5), 100, seed=0)
    assert result["wilcoxon_p"] == 1.0 and result["mean_difference"] == 0.0
    assert "0" in result["test_note"]
    assert stats.paired_test([0.3], 100, 0)["test_note"].startswith("no test")


def test_paired_test_t_interval_is_ttest_rels_and_collapses_without_spread():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=5), rng.normal(size=5)
    result = stats.paired_test(a - b, interval="t", confidence=0.9)
    expected = scipy_stats.ttest_rel(a, b).confidence_interval(0.9)
    assert result["mean_difference"] == pytest.approx((a - b).mean(), rel=1e-12)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx(
        (expected.low, expected.high), rel=1e-12
    )
    same = stats.paired_test([0.2, 0.2, 0.2], interval="t")
    assert (same["ci_low"], same["ci_high"]) == pytest.approx((0.2, 0.2))
    with pytest.raises(ValueError, match="interval"):
        stats.paired_test([1.0, 2.0], interval="normal")


def test_the_verdict_needs_the_interval_and_the_corrected_test_to_agree():
    # both say so: the side the metric's direction prefers
    assert stats.verdict(0.1, 0.3, 0.01, "higher", "a", "b") == "a"
    assert stats.verdict(0.1, 0.3, 0.01, "lower", "a", "b") == "b"
    assert stats.verdict(-0.3, -0.1, 0.01, "lower", "a", "b") == "a"
    # only one says so: the tests disagree, and the verdict says which one
    assert stats.verdict(0.1, 0.3, 0.84, "higher", "a", "b").startswith("tests disagree")
    assert "interval excludes 0" in stats.verdict(0.1, 0.3, 0.84, "higher", "a", "b")
    assert "Holm p = 0.01" in stats.verdict(-0.1, 0.3, 0.01, "higher", "a", "b")
    # neither
    assert stats.verdict(-0.1, 0.3, 0.5, "higher", "a", "b") == "neither"
    assert stats.verdict(np.nan, np.nan, np.nan, "higher", "a", "b") == "neither"
    assert "0.05" in stats.VERDICT_RULE and "Holm" in stats.VERDICT_RULE


def test_holm_adjusts_step_down_and_keeps_nan_out_of_the_count():
    adjusted = stats.holm([0.01, 0.04, np.nan, 0.03])
    # m = 3: sorted 0.01, 0.03, 0.04 -> 0.03, max(0.03, 0.06), max(0.06, 0.04) = 0.06
    np.testing.assert_allclose(adjusted, [0.03, 0.06, np.nan, 0.06])
    assert stats.holm([0.5, 0.9]).tolist() == [1.0, 1.0]  # capped at 1, monotone
    assert stats.holm([]).size == 0


def test_the_t_interval_goes_with_the_t_test_and_the_bootstrap_with_wilcoxon():
    seeds = stats.paired_test([0.01, 0.02, 0.015, 0.012, 0.018], interval="t")
    assert seeds["test"] == "t" and seeds["test_p"] < 0.05  # 5 seeds: Wilcoxon's floor is 0.0625
    assert seeds["wilcoxon_p"] == pytest.approx(0.0625)
    users = stats.paired_test(np.linspace(0.01, 0.05, 12), n_boot=200)
    assert users["test"] == "wilcoxon" and users["test_p"] == users["wilcoxon_p"]


def _standardised(n: int, sd: float = 1.0) -> np.ndarray:
    """n paired differences with SD exactly `sd` (ddof 1) and mean 0.3 (the MDE ignores it)."""
    x = np.random.default_rng(n).normal(size=n)
    return 0.3 + sd * (x - x.mean()) / x.std(ddof=1)


def _two_sided_t_power(effect: float, sd: float, n: int, alpha: float) -> float:
    """The power of the two-sided one-sample (paired) t-test at `effect`, straight from the
    noncentral t: both rejection tails."""
    df, nc = n - 1, effect * np.sqrt(n) / sd
    critical = scipy_stats.t.ppf(1 - alpha / 2, df)
    return float(scipy_stats.nct.sf(critical, df, nc) + scipy_stats.nct.cdf(-critical, df, nc))


def test_the_mde_is_the_paired_t_tests_80_percent_power_effect_two_sided():
    result = stats.minimum_detectable_effect(_standardised(30))
    # (t_0.975,29 + t_0.8,29) / sqrt(30) = 0.5294 (the approximation); the noncentral t: 0.5292.
    # Power 0.5 would give 0.373, a one-sided alpha 0.466: both fail here.
    assert result["mde"] == pytest.approx(0.5292, abs=5e-4)
    closed_form = (scipy_stats.t.ppf(0.975, 29) + scipy_stats.t.ppf(0.8, 29)) / np.sqrt(30)
    assert result["mde"] == pytest.approx(closed_form, rel=5e-3)
    assert (result["mde_alpha"], result["mde_power"], result["mde_note"]) == (0.05, 0.8, "")
    for n, sd in [(30, 1.0), (3, 0.02), (12, 0.5)]:
        mde = stats.minimum_detectable_effect(_standardised(n, sd))["mde"]
        assert _two_sided_t_power(mde, sd, n, 0.05) == pytest.approx(0.80, abs=0.01)
        # a one-sided test (all alpha in one tail) would reach more than 80% at this effect
        assert (
            scipy_stats.nct.sf(scipy_stats.t.ppf(0.95, n - 1), n - 1, mde * np.sqrt(n) / sd) > 0.85
        )


def test_the_mde_grows_with_the_spread_and_shrinks_with_n():
    by_n = [stats.minimum_detectable_effect(_standardised(n))["mde"] for n in (3, 5, 10, 40, 200)]
    assert all(a > b for a, b in zip(by_n, by_n[1:], strict=False))
    by_sd = [stats.minimum_detectable_effect(_standardised(20, s))["mde"] for s in (0.1, 1, 3)]
    assert by_sd == pytest.approx([0.1 * by_sd[1], by_sd[1], 3 * by_sd[1]], rel=1e-6)
    # Holm's worst case, alpha / m, asks for a larger effect; NaN units are left out
    worst = stats.minimum_detectable_effect(_standardised(20), comparisons=6)
    assert worst["mde_alpha"] == pytest.approx(0.05 / 6) and worst["mde"] > by_sd[1]
    with_nan = stats.minimum_detectable_effect([*_standardised(20), np.nan])
    assert with_nan["mde"] == pytest.approx(by_sd[1])


@pytest.mark.parametrize(
    ("differences", "why"),
    [([], "0 paired unit"), ([0.4], "1 paired unit"), ([0.2, 0.2, 0.2], "no spread")],
)
def test_without_two_units_or_a_spread_the_mde_is_nan_and_says_why(differences, why):
    result = stats.minimum_detectable_effect(differences)
    assert np.isnan(result["mde"]) and why in result["mde_note"]
    with pytest.raises(ValueError, match="power"):
        stats.minimum_detectable_effect([0.1, 0.2], power=0.01)


# -- the helpers the reporting layer replaced, as they were, against it on the same inputs --------


def _soft_embeddings_bootstrap_before(a, b, n_boot=2000, seed=0):
    """components.method.soft_embeddings.paired_difference's own resampling loop, before issue 18."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    per_user = diff.mean(axis=1)
    rng = np.random.default_rng(seed)
    boots = per_user[rng.integers(0, per_user.size, size=(n_boot, per_user.size))].mean(axis=1)
    low, high = np.percentile(boots, [2.5, 97.5])
    return float(per_user.mean()), float(low), float(high)


@pytest.mark.parametrize(("users", "seeds", "seed"), [(10, 3, 0), (7, 1, 5), (40, 2, 11)])
def test_soft_embeddings_paired_difference_keeps_its_intervals(users, seeds, seed):
    from pmg_kedro.components.method.soft_embeddings import paired_difference

    rng = np.random.default_rng(users)
    a, b = rng.normal(size=(users, seeds)), rng.normal(size=(users, seeds))
    before = _soft_embeddings_bootstrap_before(a, b, 2000, seed)
    after = paired_difference(a, b, n_boot=2000, seed=seed)
    # scipy.stats.bootstrap draws the same resamples from the same seed; only the order of a
    # floating-point sum differs
    assert [after["mean_difference"], *after["ci95"]] == pytest.approx(before, rel=1e-12)


def _bootstrap_share_before(values, n_resamples, seed):
    """components.evaluation.keyword_quality.bootstrap_share's own scipy call, before issue 18."""
    x = np.asarray(values, dtype=float)
    result = scipy_stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return {"share": round(float(x.mean()), 4), "ci95": [round(ci.low, 4), round(ci.high, 4)]}


def test_keyword_quality_shares_keep_their_intervals():
    from pmg_kedro.components.evaluation.keyword_quality import bootstrap_share

    values = np.random.default_rng(2).random(60) < 0.3
    for seed in (0, 1):
        assert bootstrap_share(values, 1000, seed) == _bootstrap_share_before(values, 1000, seed)
    differences = values.astype(float) - (np.random.default_rng(3).random(60) < 0.5)
    assert bootstrap_share(differences, 500, 4) == _bootstrap_share_before(differences, 500, 4)


def _recommendation_paired_before(x, y, confidence):
    """recommendation's `_paired` interval of one metric, before issue 18."""
    diff = (x - y).to_numpy()
    if len(diff) > 1 and np.ptp(diff) > 0:
        ci = scipy_stats.ttest_rel(x, y).confidence_interval(confidence)
        return float(diff.mean()), [float(ci.low), float(ci.high)]
    return float(diff.mean()), [float(diff.mean()), float(diff.mean())]


@pytest.mark.parametrize("n_seeds", [1, 2, 3, 5])
def test_recommendation_paired_difference_keeps_its_t_interval(n_seeds):
    rng = np.random.default_rng(n_seeds)
    x, y = pd.Series(rng.random(n_seeds)), pd.Series(rng.random(n_seeds))
    mean, interval = _recommendation_paired_before(x, y, 0.95)
    result = stats.paired_test((x - y).to_numpy(), interval="t", confidence=0.95)
    assert result["mean_difference"] == mean
    assert [result["ci_low"], result["ci_high"]] == pytest.approx(interval, rel=1e-12)
