"""The report of metric_evaluation: paper Tables 1 and 2 (§4.2–4.4) from the per-image metrics of
`image_evaluation` (cells, paired comparisons, their Markdown and MLflow summary), Figures 4–8's
rows of images, and the scatter of how selection (§3.4) chooses.

A cell is the mean over users (a user's value = the mean over its noise seeds) with a bootstrap
interval over users; a comparison a - b pairs the two variants by (user, seed), averages per user
and tests the per-user differences (`reporting.stats`). A cell or comparison that cannot be
computed keeps its row and says why (`status`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pmg_kedro.components.data.images import item_arrays
from pmg_kedro.components.data.splits import evaluation_users
from pmg_kedro.components.evaluation.image_evaluation import simulated_flags
from pmg_kedro.components.method.selection import choose, z_scores
from pmg_kedro.components.reporting import figures
from pmg_kedro.components.reporting.stats import (
    VERDICT_RULE,
    bootstrap_interval,
    holm,
    mde_note,
    minimum_detectable_effect,
    paired_test,
    paired_user_differences,
    verdict,
)
from pmg_kedro.components.reporting.tables import (
    Footnotes,
    fmt_interval,
    fmt_p,
    fmt_verdict,
    markdown_table,
)

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
COMPARISON_COLUMNS = [
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
    "holm_p",
    "n_users",
    "n_nonzero",
    "verdict",
    "mde",
    "mde_alpha",
    "mde_power",
    "mde_note",
    "test_note",
    "status",
]


def cell(subset: pd.DataFrame, column: str, spec: dict, status: str, boot: dict) -> dict:
    """One table cell of `column` over the rows of `subset`: mean over users, interval, counts;
    `status` (the variant's) or the metric's own status says why it is empty."""
    row = {k: spec[k] for k in ("reference", "metric", "direction")}
    row |= {"mean": np.nan, "ci_low": np.nan, "ci_high": np.nan, "n_users": 0, "n_images": 0}
    status = status if status != "ok" else spec["status"]
    if status == "ok":
        per_user = subset.groupby("user_id")[column].mean().dropna()
        if per_user.empty:
            status = "no values: no reference image for any user"
        else:
            mean, low, high = bootstrap_interval(
                per_user, int(boot["n_boot"]), int(boot["seed"]), float(boot["confidence"])
            )
            row |= {"mean": mean, "ci_low": low, "ci_high": high, "n_users": len(per_user)}
            row["n_images"] = int(subset[column].notna().sum())
    return row | {"status": status}


def comparisons(
    image_metrics: pd.DataFrame, notes: dict[str, Any], pairs, boot: dict
) -> pd.DataFrame:
    """a - b for every (a, b) of `pairs` and every metric: paired by user and seed, then the mean
    over seeds; bootstrap interval over users and Wilcoxon signed-rank test, Holm-corrected over
    the table's comparisons; the verdict by `reporting.stats.VERDICT_RULE` and the minimum
    detectable effect of the per-user differences (`reporting.stats.minimum_detectable_effect`)."""
    rows = []
    for a, b in pairs:
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
                differences = paired_user_differences(
                    image_metrics[image_metrics["variant"] == a],
                    image_metrics[image_metrics["variant"] == b],
                    column,
                )
                result = paired_test(
                    differences, int(boot["n_boot"]), int(boot["seed"]), float(boot["confidence"])
                )
                row |= {k: v for k, v in result.items() if k != "n"} | {"n_users": result["n"]}
                row |= minimum_detectable_effect(differences)
                if result["n"] == 0:
                    status = "no values: no paired user with a reference image"
            rows.append(row | {"status": status})
    table = pd.DataFrame(rows).reindex(columns=COMPARISON_COLUMNS)
    ok = table["status"] == "ok"
    table["holm_p"] = np.nan
    table.loc[ok, "holm_p"] = holm(table.loc[ok, "wilcoxon_p"].astype(float))
    table["verdict"] = [
        verdict(r.ci_low, r.ci_high, r.holm_p, r.direction, r.a, r.b) if r.status == "ok" else None
        for r in table.itertuples()
    ]
    return table


def cell_summary(cells: pd.DataFrame, row: str) -> dict[str, dict[str, Any]]:
    """Table cells keyed "<row>/<reference>/<metric>": mean, interval, users."""
    return {
        f"{getattr(r, row)}/{r.reference}/{r.metric}": {
            "mean": r.mean,
            "ci": [r.ci_low, r.ci_high],
            "n_users": r.n_users,
        }
        for r in cells.itertuples()
    }


def comparison_summary(comparison_rows: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Comparisons keyed "<a>-<b>/<reference>/<metric>": mean difference, interval, p, users,
    verdict and minimum detectable effect."""
    return {
        f"{r.a}-{r.b}/{r.reference}/{r.metric}": {
            "mean_difference": r.mean_difference,
            "ci": [r.ci_low, r.ci_high],
            "wilcoxon_p": r.wilcoxon_p,
            "holm_p": r.holm_p,
            "n_users": r.n_users,
            "verdict": r.verdict,
            "mde": r.mde,
        }
        for r in comparison_rows.itertuples()
    }


# -- Markdown -------------------------------------------------------------------------------------

# Table 1's sections: a metric's `section` (identity) or else its reference (history, target).
SECTIONS = {
    "history": "each chosen image against each history image, mean per user",
    "target": "each chosen image against the target image",
    "identity": "the share of chosen images the identity probe names as the target item's class "
    "or emoji: per user the mean over its seeds",
    "taste_transfer": "the share of chosen images whose measured brightness / texture level is the "
    "SIMULATED user's hidden one (measured on pixels as the items were, items' level edges; "
    "per user the mean over its seeds) — a positive control: the user's taste, not the target's",
}


def table1_markdown(table, comparison_rows, notes, params) -> str:
    """Table 1's report: how it was measured, history and target cells per variant, and the
    paired differences; every empty cell points to a footnote saying why."""
    footnotes = Footnotes()
    lines = [f"# Table 1 shape ({notes['scene']}): chosen images against history and target", ""]
    lines += header_lines(notes, params)
    for section, what in SECTIONS.items():
        specs = [
            s for s in notes["metrics"].values() if s.get("section", s["reference"]) == section
        ]
        if not specs:
            continue
        rows = []
        for variant in notes["variants"]:
            cells = {
                (r.reference, r.metric): r for r in table[table["variant"] == variant].itertuples()
            }
            row = [_cell_text(cells[(s["reference"], s["metric"])], footnotes) for s in specs]
            rows.append([variant, *row])
        columns = ["variant", *(heading(s) for s in specs)]
        lines += [f"## {section.capitalize()} ({what})", "", markdown_table(rows, columns), ""]
    confidence = int(float(params["bootstrap"]["confidence"]) * 100)
    lines += [
        "## Paired differences",
        "",
        "a − b per user: differences paired by (user, noise seed), averaged over the user's "
        f"seeds; {confidence}% bootstrap interval over users; Wilcoxon signed-rank test "
        "(scipy.stats.wilcoxon) on the per-user differences, Holm-corrected over the "
        f"{int((comparison_rows['status'] == 'ok').sum())} comparisons below. {VERDICT_RULE}",
        "",
        markdown_table(
            [_comparison_row(r, notes, footnotes) for r in comparison_rows.itertuples()],
            ["a − b", "reference", "metric", "mean difference [interval]", "verdict"]
            + ["Wilcoxon p", "Holm p", "users"],
        ),
        "",
        mde_note("users (a user's difference: the mean over its seeds)"),
        *_paper_effect_lines(comparison_rows, params.get("paper_effects") or {}),
    ]
    return "\n".join(lines + ["", *footnotes.lines()]) + "\n"


def _paper_effect_lines(comparison_rows, paper_effects: dict) -> list[str]:
    """Per comparison the paper reports (paper Table 1, `paper_effects` in conf), its effect beside
    this table's MDE: could this experiment have seen an effect of the paper's size?"""
    lines = []
    for r in comparison_rows.itertuples():
        effect = (paper_effects.get(r.comparison) or {}).get(f"{r.reference}/{r.metric}")
        if effect is None or r.status != "ok" or r.verdict != "neither":
            continue
        seen = "could have" if abs(effect["effect"]) >= r.mde else "could not have"
        lines.append(
            f"- {r.comparison}, {r.reference} {r.metric}: the paper's effect "
            f"{effect['effect']:+.4f} ({effect['source']}) against this table's MDE {r.mde:.4f}: "
            f"this experiment {seen} seen an effect of the paper's size."
        )
    return ["", "Paper-sized effects (paper Table 1):", "", *lines] if lines else []


def _comparison_row(r, notes, footnotes: Footnotes) -> list[str]:
    if r.status != "ok":
        cells = [footnotes.cell(r.status), "—", "—", "—", "—"]
    else:
        cells = [
            fmt_interval(r.mean_difference, r.ci_low, r.ci_high),
            fmt_verdict(r.verdict, r.mde, r.mde_note),
            fmt_p(r.wilcoxon_p) + (f" ({r.test_note})" if r.test_note else ""),
            fmt_p(r.holm_p),
            str(int(r.n_users)),
        ]
    metric = heading(notes["metrics"][f"{r.reference}_{r.metric}"])
    return [r.comparison, r.reference, metric, *cells]


def table2_markdown(table, history, notes, params) -> str:
    """Table 2's report: per history metric, P-Tuning v2 on/off x L tokens (or why it is empty)."""
    lines = [f"# Table 2 shape ({notes['scene']}): P-Tuning v2 x L multimodal tokens", ""]
    lines += header_lines(notes, params)
    if notes["status"] != "ok":
        return "\n".join(lines + [f"**Table 2 {notes['status']}**", ""])
    footnotes = Footnotes()
    tokens = [int(t) for t in params["table2_tokens"]]
    lines += [
        "Each chosen Table 2 image (full PMG at w_p = w_t = 1 with that soft-embedding variant) "
        "against the history images.",
        "",
    ]
    for spec in history.values():
        cells = table[table["metric"] == spec["metric"]]
        rows = []
        for p_tuning in (True, False):
            row = ["on" if p_tuning else "off"]
            for t in tokens:
                hit = cells[(cells["p_tuning"] == p_tuning) & (cells["n_tokens"] == t)]
                row.append(_cell_text(next(hit.itertuples()), footnotes) if len(hit) else "not run")
            rows.append(row)
        columns = ["P-Tuning v2", *(f"L = {t}" for t in tokens)]
        lines += [f"## {heading(spec)} (history)", "", markdown_table(rows, columns), ""]
    return "\n".join(lines + footnotes.lines()) + "\n"


def header_lines(notes, params) -> list[str]:
    """The bullet list above both tables: environment, generation, images and metrics, users,
    how cells are computed, references, the probe."""
    fd, lp, refs = notes["feature_distance"], notes["lpips"], notes["references"]
    boot = params["bootstrap"]
    simulated = notes["n_simulated_users"]
    size = notes["image_size"]
    lpips = (
        f"{lp['model']} at {lp['input_size']} px"
        if lp["available"]
        else f"LPIPS not available: {lp['why']}"
    )
    return [
        f"- environment: {notes['environment']}",
        *([f"- generation: {notes['generation']}"] if notes.get("generation") else []),
        f"- images: every image (history, target, generated) resized to {size} px; "
        f"SSIM (scikit-image, {notes['ssim']['color']}, window {notes['ssim']['win_size']}, "
        f"data_range 1) at {size} px; {fd['name']}: {fd['model']} at "
        f"{fd['input_size']} px, layers {fd['layers']} ({fd['note']})",
        f"- LPIPS: {lpips}",
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
        *(
            [f"- identity probe: {_identity_line(notes['identity_probe'])}"]
            if "identity_probe" in notes
            else []
        ),
        *([f"- taste transfer: {_taste_line(notes)}"] if "taste_transfer" in notes else []),
        *(
            [
                f"- ORACLE variants ({', '.join(oracle)}): k^p is the SIMULATED user's hidden taste "
                "in words, a positive control of what keywords can carry; never a row PMG is judged by"
            ]
            if (oracle := [v for v in notes.get("variants", {}) if "oracle" in v])
            else []
        ),
        *_placebo_lines(notes),
        "- the selection scorer (d_p, d_t, z) is not an evaluation metric here",
        "",
    ]


def _placebo_lines(notes) -> list[str]:
    """The note on the PLACEBO variants (`preference: shuffled`), with the derangement's seed
    where the notes carry it."""
    placebo = [v for v in notes.get("variants", {}) if "shuffled" in v]
    if not placebo:
        return []
    seed = notes.get("placebo_seed")
    drawn = "seeded derangement" + (f", seed {seed}" if seed is not None else "")
    return [
        f"- PLACEBO variants ({', '.join(placebo)}): k^p and E_m of ANOTHER evaluation user "
        f"({drawn}: no user keeps its own): pmg − shuffled_pmg beyond noise means the gain is the "
        "user's own; never a row PMG is judged by"
    ]


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


def _taste_line(notes) -> str:
    """How the taste-transfer rows were measured, their chance and the measurement's accuracy."""
    info = notes["taste_transfer"]
    if info["status"] != "ok":
        return info["status"]
    chances = ", ".join(
        f"{s['metric']} {s['chance']:.3f}"
        for s in notes["metrics"].values()
        if s.get("section") == "taste_transfer"
    )
    check = info["measurement_check"]
    agreement = ", ".join(f"{k} {v:.3f}" for k, v in check.items() if k.endswith("agreement"))
    return (
        f"measured levels of each chosen image against the SIMULATED user's hidden levels; chance "
        f"{chances}; the measurement on the {check.get('n_images', 0)} real target images through "
        f"the same path: {agreement or 'no images'}"
    )


def _identity_line(report) -> str:
    """What the identity probe is, what it was trained and measured on, and whether it passed."""
    if report.get("held_out_accuracy") is None:
        return report["status"]
    verdict = "accepted" if report["status"] == "ok" else f"refused ({report['status']})"
    return (
        f"{report['what']}; fit on {report['fit']} ({report['n_fit_images']} images); held-out "
        f"accuracy {report['held_out_accuracy']:.3f} on {report['held_out']} "
        f"({report['n_held_out_images']} images, chance {report['chance']:.3f}); bar "
        f"{report['min_accuracy']:.2f}: {verdict}"
    )


def heading(spec) -> str:
    """A metric's column heading with its direction (↓ lower is better, ↑ higher)."""
    return f"{spec['name']} {'↓' if spec['direction'] == 'lower' else '↑'}"


def _cell_text(r, footnotes: Footnotes) -> str:
    if r.status != "ok":
        return footnotes.cell(r.status)
    return f"{fmt_interval(r.mean, r.ci_low, r.ci_high)} (n={int(r.n_users)})"


# -- figures --------------------------------------------------------------------------------------


def user_rows_figure(rows, simulated, arrays, chosen, seeds, n_history, title) -> Figure:
    """Figures 4–8's shape: one row per user (`rows`: histories rows), its last `n_history` history
    images, the target image, then each variant's chosen image (`chosen[variant]["<user>/s<seed>"]`)
    per seed; `arrays` holds the item images (3, H, W) there are."""
    columns = [f"history {j + 1}" for j in range(n_history)] + ["target"]
    columns += [f"{v}\ns{s}" for s in seeds for v in chosen]
    grid = []
    for row, is_simulated in zip(rows.itertuples(), simulated, strict=True):
        history = [str(i) for i in list(row.history)[-n_history:]]
        cells = [arrays.get(i, "no image") for i in [*history, str(row.target)]]
        cells[len(history) : len(history)] = [None] * (n_history - len(history))
        for s in seeds:
            for variant, images in chosen.items():
                missing = f"{variant}:\nnot applicable" if not images else "missing"
                cells.append(images.get(f"{row.user_id}/s{s}", missing))
        grid.append((str(row.user_id)[:10] + ("\nSIMULATED" if is_simulated else ""), cells))
    note = " (SIMULATED users)" if any(simulated) else ""
    return figures.image_grid(grid, f"{title}{note}", columns, cell_size=(1.3, 1.5))


def selection_scatter(
    candidates: pd.DataFrame | None, name: str, alphas: list[float], floor: float, scene: str
) -> Figure:
    """d_p vs d_t of the candidates of variant `name` (None: no variant with a weight grid ran),
    one panel per alpha with the argmax of z at that alpha marked, and how often it is the
    choice the run made."""
    fig, axes = figures.subplots(1, len(alphas), (3.4 * len(alphas), 3.4))
    if candidates is None:
        figures.text(axes[0][0], "not applicable: no variant with a weight grid ran")
        return fig
    candidates = candidates.reset_index(drop=True)
    for ax, alpha in zip(axes[0], alphas, strict=True):
        chosen = choice_at(candidates, alpha, floor)
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
        f"{scene}: {name} candidates; cosines floored at {floor:g} before the "
        "log; the selection scorer, not an evaluation metric",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def choice_at(candidates: pd.DataFrame, alpha: float, floor: float) -> pd.Series:
    """The argmax-z candidate per (user, seed) with z recomputed at `alpha` (paper §3.4)."""
    scored = candidates.assign(z=z_scores(candidates["d_p"], candidates["d_t"], alpha, floor))
    return choose(scored, ["user_id", "seed"])


def user_rows(histories, user_split, users, image_index, params, chosen, seeds, title) -> Figure:
    """Figures 4-8 shape: the first `figures.users` evaluation users with their shown item images
    (the latest `figures.history_columns` of their history, the target) and `chosen` images of
    each variant, as `user_rows_figure` draws them."""
    size, fig_cfg = int(params["image_size"]), params["figures"]
    n_hist = int(fig_cfg["history_columns"])
    evaluation = evaluation_users(user_split)
    rows = histories[histories["user_id"].astype(str).isin(evaluation)].head(int(fig_cfg["users"]))
    with_image = set(image_index["item_id"].astype(str))
    shown = sorted(
        {str(i) for h in rows["history"] for i in list(h)[-n_hist:]}
        | set(rows["target"].astype(str))
    )
    arrays = item_arrays([i for i in shown if i in with_image], image_index, size)
    simulated = simulated_flags(rows["user_id"].astype(str), users, rows.set_index("user_id"))
    title = f"{params.get('scene', '')}: {title}"
    return user_rows_figure(rows, simulated, arrays, chosen, seeds, n_hist, title)
