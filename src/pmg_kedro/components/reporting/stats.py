"""Statistics of the reports: a mean with its bootstrap interval, a paired test, and one verdict.

Every table that shows an interval uses `bootstrap_interval` (paper §4.4: means over users with
95% intervals); every comparison of two settings on the same units uses `paired_test` (paired by
user and noise seed in Tables 1–2, by seed in Table 3), and every report says who a comparison
favours by one rule, `verdict` (VERDICT_RULE), with the test's p-values Holm-corrected over the
comparisons of that table (`holm`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats


def bootstrap_interval(
    values, n_boot: int, seed: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Mean of per-unit values (users) and its percentile bootstrap interval (seeded).

    `scipy.stats.bootstrap` resamples the units with replacement `n_boot` times. NaN values
    (users without that reference) are left out; no value gives NaN throughout, one value NaN
    bounds (no spread to resample).
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    if len(x) < 2:
        return float(x.mean()), float("nan"), float("nan")
    result = stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=int(n_boot),
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return float(x.mean()), float(ci.low), float(ci.high)


def paired_test(
    differences,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    interval: str = "bootstrap",
) -> dict[str, Any]:
    """The mean of paired differences a - b, its interval and the Wilcoxon signed-rank test.

    `interval`: "bootstrap" (`bootstrap_interval` over the units: users) or "t" (Student's t
    interval of the mean, as `scipy.stats.ttest_rel` gives it: for a handful of units such as
    seeds, too few to resample; with fewer than two units or no spread it is the mean itself).
    Returns mean_difference, ci_low, ci_high, n, n_nonzero, wilcoxon_p, test_note (why there
    is no p-value, or ""), and `test` / `test_p`: the test that goes with the interval (Wilcoxon
    signed-rank with the bootstrap; the one-sample t-test with the t interval, since with a handful
    of seeds the Wilcoxon test cannot reach 0.05: its smallest p with 5 seeds is 0.0625).
    """
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if interval == "bootstrap":
        mean, low, high = bootstrap_interval(d, n_boot, seed, confidence)
    elif interval == "t":
        mean, low, high = _t_interval(d, confidence)
    else:
        raise ValueError(f"paired_test: interval must be 'bootstrap' or 't', got {interval!r}")
    result: dict[str, Any] = {
        "mean_difference": mean,
        "ci_low": low,
        "ci_high": high,
        "n": int(len(d)),
        "n_nonzero": int(np.count_nonzero(d)),
        "wilcoxon_p": float("nan"),
        "test_note": "",
    }
    result["wilcoxon_p"], result["test_note"] = wilcoxon_p(d)
    result["test"] = "wilcoxon" if interval == "bootstrap" else "t"
    result["test_p"] = result["wilcoxon_p"] if interval == "bootstrap" else _t_p(d)
    return result


def wilcoxon_p(differences) -> tuple[float, str]:
    """The Wilcoxon signed-rank p of paired differences (NaN left out) and why there is none
    ("" when there is one; every difference 0 gives p = 1)."""
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) < 2:
        return float("nan"), f"no test: {len(d)} paired unit(s)"
    if not np.any(d):
        return 1.0, "every paired difference is 0"
    return float(stats.wilcoxon(d).pvalue), ""


def _t_p(d: np.ndarray) -> float:
    if len(d) < 2:
        return float("nan")
    if np.ptp(d) == 0:
        return 1.0 if not np.any(d) else 0.0  # no spread: the mean is known exactly
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def _t_interval(d: np.ndarray, confidence: float) -> tuple[float, float, float]:
    if len(d) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(d.mean())
    if len(d) < 2 or np.ptp(d) == 0:
        return mean, mean, mean
    ci = stats.ttest_1samp(d, 0.0).confidence_interval(confidence)
    return mean, float(ci.low), float(ci.high)


def paired_user_differences(
    a: pd.DataFrame, b: pd.DataFrame, value: str, keys: Sequence[str] = ("user_id", "seed")
) -> pd.Series:
    """Per user, the mean over its seeds of a[value] - b[value], paired by (user, seed).

    Rows of either side without a partner, or with a NaN value, are left out.
    """
    keys = list(keys)
    joined = a[[*keys, value]].merge(
        b[[*keys, value]], on=keys, how="inner", suffixes=("_a", "_b"), validate="one_to_one"
    )
    joined["difference"] = joined[f"{value}_a"] - joined[f"{value}_b"]
    joined = joined.dropna(subset=["difference"])
    return joined.groupby("user_id", sort=True)["difference"].mean()


ALPHA = 0.05
VERDICT_RULE = (
    "Verdict: a side is favoured only when both say so: the 95% interval of the paired mean "
    "difference excludes 0 AND the paired test's p-value, Holm-corrected over the comparisons of "
    f'this table, is below {ALPHA}; "tests disagree" when only one of the two does; else '
    '"neither".'
)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN stays NaN and does
    not count among the m comparisons."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = len(finite)
    running = 0.0
    for rank, i in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def verdict(low: float, high: float, p_corrected: float, direction: str, a: str, b: str) -> str:
    """Who the paired difference a - b favours under VERDICT_RULE, given whether higher or lower
    is better: `a`, `b`, "tests disagree (...)" or "neither"."""
    interval = not (np.isnan(low) or np.isnan(high) or low <= 0 <= high)
    test = not np.isnan(p_corrected) and p_corrected < ALPHA
    if interval and test:
        return a if (low > 0) == (direction == "higher") else b
    if interval != test:
        said = "interval excludes 0" if interval else f"Holm p = {p_corrected:.3g}"
        return f"tests disagree ({said}, the other does not)"
    return "neither"
