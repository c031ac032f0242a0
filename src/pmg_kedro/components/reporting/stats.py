"""Statistics of the reports: a mean with its bootstrap interval, and a paired test.

Every table that shows an interval uses `bootstrap_interval` (paper §4.4: means over users with
95% intervals); every comparison of two settings on the same units uses `paired_test` (paired by
user and noise seed in Tables 1–2, by seed in Table 3).
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
    Returns mean_difference, ci_low, ci_high, n, n_nonzero, wilcoxon_p and test_note (why there
    is no p-value, or "").
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
    if len(d) < 2:
        result["test_note"] = f"no test: {len(d)} paired unit(s)"
    elif not np.any(d):
        result.update(wilcoxon_p=1.0, test_note="every paired difference is 0")
    else:
        result["wilcoxon_p"] = float(stats.wilcoxon(d).pvalue)
    return result


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


def favours(low: float, high: float, direction: str, a: str, b: str) -> str:
    """Which side of a - b the interval [low, high] favours, given whether higher or lower is
    better; "neither" when the interval includes 0 (or there is none)."""
    if np.isnan(low) or low <= 0 <= high:
        return "neither (interval includes 0)"
    a_higher = low > 0
    return a if a_higher == (direction == "higher") else b
