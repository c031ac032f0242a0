"""Weighting grid and z-score selection of paper §3.4.

z = alpha * log d_p + (1 - alpha) * log d_t, with d_p (d_t) the scorer's cosine between a candidate
image and the preference (target) keywords. Cosines can be <= 0, where the log is undefined: they
are floored at `floor` (a small positive number, a parameter) before the log, and the share of
floored values is reported.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def weight_grid(ratios: list[list[float]], total: float) -> list[tuple[float, float]]:
    """(w_p, w_t) pairs from ratios (the paper's Figure 7 sweep 0:4 ... 4:0), scaled to sum `total`.

    With total = 2, the 2:2 pair is (1, 1): the plain, unscaled concatenation of E^p and E^t.
    """
    pairs = []
    for ratio in ratios:
        if len(ratio) != 2 or min(ratio) < 0 or sum(ratio) <= 0:
            raise ValueError(f"a weight ratio is two non-negative numbers, not both 0: {ratio}")
        w_p, w_t = (total * r / sum(ratio) for r in ratio)
        pairs.append((round(w_p, 6), round(w_t, 6)))
    return pairs


def z_scores(d_p: np.ndarray, d_t: np.ndarray, alpha: float, floor: float) -> np.ndarray:
    """z = alpha * log(max(d_p, floor)) + (1 - alpha) * log(max(d_t, floor))."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if floor <= 0:
        raise ValueError(f"the cosine floor must be > 0, got {floor}")
    d_p, d_t = np.maximum(np.asarray(d_p, float), floor), np.maximum(np.asarray(d_t, float), floor)
    return alpha * np.log(d_p) + (1 - alpha) * np.log(d_t)


def choose(scored: pd.DataFrame, group_by: list[str]) -> pd.Series:
    """True for the argmax-z row of each group (ties: the first row, so the choice is stable)."""
    best = scored.groupby(group_by, sort=False)["z"].idxmax()
    return pd.Series(scored.index.isin(best), index=scored.index)
