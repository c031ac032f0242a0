"""metric_evaluation nodes (paper §4.1.3, §4.2–4.4): the chosen image of every variant, evaluation
user and noise seed against the user's history images and target image; Table 1/2-shaped tables
with bootstrap intervals over users and paired tests; Figure 4–8-shaped figures.

Metrics: SSIM (scikit-image), LPIPS (AlexNet, only when its weights are on disk) and always the
MobileNetV2 feature distance (components/evaluation/image_evaluation.py); semantic checks by a probe fitted
on real item images only (components/evaluation/probes.py). The selection scorer's d_p, d_t and z are never
an evaluation metric: they appear only in the figure that shows how selection works. The nodes
assemble data; tables, statistics and figures come from components/evaluation/evaluation_report.py and
components/reporting/.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from ...components.data.splits import evaluation_users
from ...components.evaluation import evaluation_report, probes
from ...components.evaluation.identity_probe import fit_scene_probe
from ...components.evaluation.image_evaluation import (
    NO_REFERENCE_IMAGES,
    References,
    chosen_rows,
    fit_item_probe,
    score_images_in_shards,
)
from ...components.reporting.environment import json_safe

logger = logging.getLogger(__name__)


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
    started = time.perf_counter()
    probe, n_images = fit_item_probe(labels, image_index, params)
    logger.info(
        "semantic probe on items.%s: %d classes, %d real images (%.1f s), held-out accuracy %s "
        "(chance %.3f)",
        column,
        probe.report["n_classes"],
        n_images,
        time.perf_counter() - started,
        probe.report["held_out_accuracy"],
        probe.report["chance"],
    )
    return {"probe": probe, "report": {"status": "ok", **probe.report}}


def fit_identity_probe(
    items: pd.DataFrame,
    image_index: pd.DataFrame,
    archive_fit: dict[str, Any],
    archive_test: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, Any]:
    """The scene's identity probe (Table 1's identity rows), trained on real images of the source
    its `identity_probe.source` declares, measured on held-out images only, and refused below
    `identity_probe.min_accuracy`; or why there is none. `archive_fit` / `archive_test`: labelled
    images of a `labelled_archive` source (unused otherwise).

    Returns {"probe": IdentityProbe | None, "report": {"status": "ok" | "not applicable: ...", ...}}.
    """
    return fit_scene_probe(items, image_index, archive_fit, archive_test, params["identity_probe"])


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
    identity_probe: dict[str, Any],
    params: dict[str, Any],
    sharding: dict[str, Any] | None = None,
    **variants: Any,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per (variant, evaluation user, seed): the chosen image against the user's history images
    (mean over history entries) and target image, and the probe checks (semantic and identity),
    in shards of users where `sharding` says so.

    `variants` holds `<variant>_selections` and `<variant>_chosen_images`. Returns the per-image
    table and the notes the tables print (what ran, what did not and why, counts).
    """
    evaluation = evaluation_users(user_split)
    not_applicable = personalization_report.get("not_applicable", {})
    records, generated, status = [], {}, {}
    for name, selections, images in _variant_inputs(variants):
        if selections.empty:
            status[name] = {"status": not_applicable.get(name, "not applicable: no selections")}
            continue
        chosen = chosen_rows(selections, name)
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
    references = References(histories, items, image_index, users)
    scored, notes = score_images_in_shards(
        table,
        generated,
        references,
        semantic_probe,
        params,
        sharding,
        "chosen_image_metrics",
        identity_probe,
    )
    notes["variants"] = status
    notes["generation"] = {
        k: personalization_report[k]
        for k in ("mode", "sampler", "steps", "guidance_scale", "alpha", "seeds")
        if k in personalization_report
    }
    notes["placebo_seed"] = personalization_report.get("placebo_seed")  # the PLACEBO's derangement
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
    sharding: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Paper Table 2's images (L multimodal tokens, P-Tuning v2 on/off) with the same metrics.

    Returns one row per (sweep entry, evaluation user, seed) and the notes (why it is empty)."""
    evaluation = evaluation_users(user_split)
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
    references = References(histories, items, image_index, users)
    scored, notes = score_images_in_shards(
        table, generated, references, semantic_probe, params, sharding, "table2_image_metrics"
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
            cell = evaluation_report.cell(subset, column, spec, info["status"], boot)
            rows.append(cell | {"variant": variant})
    table = pd.DataFrame(rows, columns=["variant", *evaluation_report.CELL_COLUMNS])
    comparisons = evaluation_report.comparisons(image_metrics, notes, params["comparisons"], boot)
    markdown = evaluation_report.table1_markdown(table, comparisons, notes, params)
    return table, comparisons, markdown


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
                evaluation_report.cell(subset, column, spec, notes["status"], boot)
                | {"sweep_entry": entry, "p_tuning": bool(p_tuning), "n_tokens": int(n_tokens)}
            )
    columns = ["sweep_entry", "p_tuning", "n_tokens", *evaluation_report.CELL_COLUMNS]
    table = pd.DataFrame(rows, columns=columns)
    return table, evaluation_report.table2_markdown(table, history, notes, params)


def summarize_metric_evaluation(
    table1: pd.DataFrame,
    table1_comparisons: pd.DataFrame,
    table2: pd.DataFrame,
    notes: dict[str, Any],
    table2_notes: dict[str, Any],
    semantic_probe: dict[str, Any],
    identity_probe: dict[str, Any],
) -> dict[str, Any]:
    """Headline numbers per scene for MLflow: every Table 1/2 cell and comparison, flat and
    JSON-safe, with what produced them."""
    cells = table1[table1["status"] == "ok"]
    comparisons = table1_comparisons[table1_comparisons["status"] == "ok"]
    table2_cells = table2[table2["status"] == "ok"]
    return json_safe(
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
            "identity_probe": identity_probe["report"],
            "references": notes["references"],
            "variants": notes["variants"],
            "metrics": evaluation_report.cell_summary(cells, "variant"),
            "comparisons": evaluation_report.comparison_summary(comparisons),
            "table2_status": table2_notes["status"],
            "table2": evaluation_report.cell_summary(table2_cells, "sweep_entry"),
            "not_applicable": {
                v: i["status"] for v, i in notes["variants"].items() if i["status"] != "ok"
            },
        }
    )


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
    return evaluation_report.user_rows(
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
    return evaluation_report.user_rows(
        histories,
        user_split,
        users,
        image_index,
        params,
        chosen_images,
        seeds,
        "keywords only vs keywords + soft embeddings, every seed",
    )


def plot_selection_scatter(
    ablations: dict[str, Any],
    weighted_generation: dict[str, Any],
    params: dict[str, Any],
    **selections: pd.DataFrame,
) -> Figure:
    """d_p vs d_t of every candidate of the first weight-grid variant that ran (pmg where it
    applies), the argmax of z = alpha log d_p + (1 - alpha) log d_t marked for each alpha."""
    ran = [v for v, a in ablations.items() if a["grid"] and not selections[v].empty]
    return evaluation_report.selection_scatter(
        selections[ran[0]] if ran else None,
        ran[0] if ran else "",
        [float(a) for a in params["figures"]["alphas"]],
        float(weighted_generation["cosine_floor"]),
        params.get("scene", ""),
    )


# ---------------------------------------------------------------------------------------------
# Helpers


def _variant_inputs(variants: dict[str, Any]):
    """(name, selections, chosen images) per variant from `<v>_selections` / `<v>_chosen_images`."""
    for key, selections in variants.items():
        if key.endswith("_selections"):
            name = key.removesuffix("_selections")
            if f"{name}_chosen_images" not in variants:
                raise KeyError(f"variant inputs: {key} has no partner {name}_chosen_images")
            yield name, selections, variants[f"{name}_chosen_images"]
