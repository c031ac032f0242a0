"""Statistics of the reports: a mean with its bootstrap interval, a paired test, and one verdict.

Every table that shows an interval uses `bootstrap_interval` (paper §4.4: means over users with
95% intervals); every comparison of two settings on the same units uses `paired_test` (paired by
user and noise seed in Tables 1–2, by seed in Table 3), and every report says who a comparison
favours by one rule, `verdict` (VERDICT_RULE), with the test's p-values Holm-corrected over the
comparisons of that table (`holm`). Beside a "neither", `minimum_detectable_effect` says how large
a true effect the comparison could have found (`mde_note`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats


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


POWER = 0.8


def minimum_detectable_effect(
    differences, alpha: float = ALPHA, power: float = POWER, comparisons: int = 1
) -> dict[str, Any]:
    """The minimum detectable effect (MDE) of a paired comparison: the smallest true mean paired
    difference that a two-sided paired t-test at level alpha finds with probability `power`, for
    the observed SD s (ddof 1) and number n of the paired differences (one per unit: a user, a
    seed; NaN left out).

    Solved exactly on the noncentral t (`scipy.stats.nct`): MDE = delta * s / sqrt(n), where the
    noncentrality delta solves P(T'(n - 1, delta) > t_{1-alpha/2, n-1}) = power (the other tail's
    share of the power, below 1e-6 at 80% power, is left out). The usual approximation
    (t_{1-alpha/2, n-1} + t_{power, n-1}) * s / sqrt(n) agrees within 0.5% from n = 10 on, but at
    n = 3 (seeds) it is 5% smaller and has 77% power. The verdict's own test is Wilcoxon's where
    the interval is a bootstrap one; the t-test's MDE stands in for it (Wilcoxon's efficiency
    relative to t is 0.955 for normal differences and never below 0.864).

    `alpha` is the uncorrected level by default. A table's p-values are Holm-corrected over its m
    comparisons, and Holm's strictest step compares the smallest p with alpha / m: `comparisons`
    = m gives that worst case (a larger MDE). The reports use the uncorrected alpha and say so
    (`mde_note`). Returns {"mde", "mde_alpha", "mde_power", "mde_note"}: the MDE, the alpha and
    power it is for, and why it is NaN ("" when it is not): fewer than two units, or no spread
    (every difference the same: no SD to scale by).
    """
    if not (0 < alpha < 1 and alpha / 2 < power < 1 and comparisons >= 1):
        raise ValueError(
            "minimum_detectable_effect: needs 0 < alpha < 1, alpha/2 < power < 1, comparisons >= 1;"
            f" got alpha={alpha}, power={power}, comparisons={comparisons}"
        )
    d = np.asarray(differences, dtype=float)
    d = d[~np.isnan(d)]
    level = alpha / comparisons
    result = {"mde": float("nan"), "mde_alpha": level, "mde_power": power, "mde_note": ""}
    if len(d) < 2:
        return result | {"mde_note": f"only {len(d)} paired unit(s)"}
    if np.ptp(d) == 0:
        return result | {"mde_note": "no spread (every paired difference is the same)"}
    df = len(d) - 1
    critical = stats.t.ppf(1 - level / 2, df)
    upper = critical + stats.t.ppf(power, df)  # the approximation: a start for the bracket
    while stats.nct.sf(critical, df, upper) < power:
        upper *= 2
    delta = optimize.brentq(
        lambda nc: stats.nct.sf(critical, df, nc) - power, 0.0, upper, xtol=1e-10
    )
    return result | {"mde": float(delta * d.std(ddof=1) / np.sqrt(len(d)))}


def mde_note(units: str) -> str:
    """The line under a table whose "neither" rows show their MDE: what the MDE is, over `units`
    (e.g. "users")."""
    return (
        f'MDE beside "neither": the minimum detectable effect, the smallest true mean paired '
        f"difference a two-sided paired t-test at alpha {ALPHA} finds with {POWER:.0%} power, from "
        f"the observed SD of the paired differences over {units} and their number (alpha "
        "uncorrected: at Holm's strictest step, alpha / m, it is larger). A true effect smaller "
        'than the MDE can hide behind "neither"; one larger than it would likely have been seen.'
    )
