"""Semantic probes of the metric evaluation: does a generated image show the right kind of thing?

A nearest-centroid classifier (`sklearn.neighbors.NearestCentroid`) on ImageNet MobileNetV2 pooled
features, fitted only on REAL item images labelled by one column of the items table (costume:
`class_name`; emoticon: `item_id`, so every emoji is its own class and the prediction is the
nearest emoji; movie: the first listed genre). It never sees a generated image. Its accuracy on
held-out real items is reported beside chance, so a check on generated images can be read against
what the probe can do on real ones.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestCentroid


def item_labels(items: pd.DataFrame, column: str) -> pd.Series:
    """item_id -> label from `column` (list-valued columns give their first element); items
    without a label are left out."""
    if column not in items.columns:
        raise KeyError(f"items: no column {column!r} to label items with")

    def first(value):
        if isinstance(value, list | tuple | np.ndarray):
            return str(value[0]) if len(value) else None
        return None if pd.isna(value) else str(value)

    labels = items.set_index(items["item_id"].astype(str))[column].map(first)
    return labels.dropna()


def holdout_split(
    labels: pd.Series, holdout_fraction: float, max_per_class: int, seed: int
) -> tuple[list[str], list[str]]:
    """(fit ids, held-out ids): per class (seeded) at most `max_per_class` items, of which a
    fraction is held out — at least one where the class has two or more, never all of them."""
    rng = np.random.default_rng(seed)
    fit, held = [], []
    for _, ids in sorted(labels.groupby(labels).groups.items()):
        ids = sorted(map(str, ids))
        taken = [ids[i] for i in rng.permutation(len(ids))[:max_per_class]]
        n_held = 0
        if len(taken) >= 2 and holdout_fraction > 0:
            n_held = min(max(1, round(holdout_fraction * len(taken))), len(taken) - 1)
        held += taken[:n_held]
        fit += taken[n_held:]
    return fit, held


@dataclass
class SemanticProbe:
    """A fitted nearest-centroid probe and what it was fitted on."""

    classifier: NearestCentroid
    label_column: str
    report: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.classifier.classes_]

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted labels of pooled features (n, d)."""
        if len(features) == 0:
            return np.array([], dtype=object)
        return self.classifier.predict(np.asarray(features, dtype=np.float64))


def fit_probe(
    fit_features: np.ndarray,
    fit_labels: Sequence[str],
    held_features: np.ndarray,
    held_labels: Sequence[str],
    label_column: str,
) -> SemanticProbe:
    """Fit on real item features; report accuracy on the held-out real items and chance."""
    # NearestCentroid also estimates per-feature deviations, which plain nearest-centroid (no
    # shrinkage) does not use: ReLU features that are 0 for a whole class, or one image per class
    # (emoji), only make those warn.
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.filterwarnings("ignore", message=".*zero standard deviation", category=UserWarning)
        classifier = NearestCentroid().fit(np.asarray(fit_features, np.float64), list(fit_labels))
    probe = SemanticProbe(classifier, label_column)
    n_classes = len(probe.classes)
    report: dict[str, Any] = {
        "what": "nearest-centroid classifier (sklearn NearestCentroid) on ImageNet MobileNetV2 "
        f"pooled features of REAL item images labelled by items.{label_column}; it never saw a "
        "generated image",
        "label_column": label_column,
        "n_classes": n_classes,
        "n_fit_images": len(fit_labels),
        "n_held_out_images": len(held_labels),
        "chance": round(1 / n_classes, 4),
    }
    if len(held_labels):
        predicted = probe.predict(held_features)
        held = np.asarray(list(held_labels), dtype=object)
        report["held_out_accuracy"] = round(float(np.mean(predicted == held)), 4)
        report["held_out_majority_share"] = round(
            float(pd.Series(held).value_counts(normalize=True).iloc[0]), 4
        )
    else:
        report["held_out_accuracy"] = None
        report["held_out_note"] = "not measurable: every class has a single real image"
    probe.report = report
    return probe


def membership(predicted: Sequence[str], allowed: Sequence[Collection[str] | None]) -> np.ndarray:
    """1.0 where a predicted label is in its allowed set, 0.0 where not, NaN where the set is
    missing or empty (nothing to check against)."""
    out = np.full(len(predicted), np.nan)
    for i, (label, labels) in enumerate(zip(predicted, allowed, strict=True)):
        if labels is not None and len(labels):
            out[i] = float(str(label) in {str(x) for x in labels})
    return out
