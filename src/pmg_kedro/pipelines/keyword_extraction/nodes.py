"""Keyword extraction nodes (paper §3.2.2): behavior texts -> preference and target keywords,
and the keyword-quality report.

The keywords are `components.method.keywords` (the one implementation, also `PMG.keywords`); these nodes
choose the LLM setting: `llm_adapter: lora` answers the preference prompts with the keyword adapter
model_preparation trained (ours, issue 12), `none` prompts LLM_g zero-shot, as the paper does.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from ...components.evaluation.keyword_quality import keyword_quality_report
from ...components.method.keyword_adapter import adapted_llm
from ...components.method.keywords import adapter_where, preference_keywords, target_keywords
from ...components.models.llm import LLM
from ...components.models.sharding import (
    ShardSettings,
    concat_tables,
    has_definition,
    model_key,
    run_shards,
    worker_cached,
)
from ...components.reporting.figures import subplots


def extract_preference_keywords(
    behavior_texts: pd.DataFrame,
    items: pd.DataFrame,
    llm: LLM,
    keyword_adapter: dict[str, Any],
    params: dict[str, Any],
    sharding: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """k^p per user under `llm_adapter` (`components.method.keywords.preference_keywords`), in shards
    of users where `sharding` says so."""
    adapter = params.get("llm_adapter", "none")
    return _sharded_preference_keywords(
        behavior_texts, items, llm, keyword_adapter, params, adapter, sharding, "preference"
    )


def extract_comparison_keywords(
    behavior_texts: pd.DataFrame,
    items: pd.DataFrame,
    llm: LLM,
    keyword_adapter: dict[str, Any],
    params: dict[str, Any],
    sharding: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """k^p of the evaluation users under `quality.compare_llm_adapter` (the other LLM setting,
    for the quality report); the columns of `extract_preference_keywords`, no row when null."""
    adapter = params["quality"].get("compare_llm_adapter")
    evaluation = behavior_texts[behavior_texts["purpose"] == "evaluation"]
    if not adapter:
        return preference_keywords(evaluation[:0], items, llm, params, "none", keyword_adapter)
    return _sharded_preference_keywords(
        evaluation, items, llm, keyword_adapter, params, adapter, sharding, "comparison"
    )


def extract_target_keywords(
    behavior_texts: pd.DataFrame,
    items: pd.DataFrame,
    llm: LLM,
    params: dict[str, Any],
    sharding: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """k^t per evaluation user (`components.method.keywords.target_keywords`), in shards of users."""
    parts = run_shards(
        ShardSettings.from_params(sharding),
        f"{params.get('scene', '')}.target_keywords",
        behavior_texts[behavior_texts["purpose"] == "evaluation"],  # only they have a target
        target_keywords,
        data={"items": items, "params": params},
        models={"llm": llm},
    )
    return concat_tables(parts)


def _sharded_preference_keywords(
    behavior_texts, items, llm, keyword_adapter, params, adapter, sharding, what
) -> pd.DataFrame:
    parts = run_shards(
        ShardSettings.from_params(sharding),
        f"{params.get('scene', '')}.{what}_keywords",
        behavior_texts,
        _preference_keywords_of_shard,
        data={
            "items": items,
            "params": params,
            "adapter": adapter,
            "keyword_adapter": keyword_adapter if adapter == "lora" else {},
        },
        models={"llm": llm},
    )
    return concat_tables(parts)


def _preference_keywords_of_shard(
    behavior_texts, items, params, adapter, keyword_adapter, llm
) -> pd.DataFrame:
    """`preference_keywords` on a shard of users. The LoRA-merged LLM_g of a catalog-loaded LLM
    is built once per process (a Dask worker) and kept for its later shards."""
    merge = None
    if adapter == "lora" and has_definition(llm):
        header = json.dumps(keyword_adapter.get("metadata") or {}, sort_keys=True, default=str)
        where = adapter_where(params.get("scene", ""))

        def merge():
            return worker_cached(
                f"lora:{model_key(llm)}:{header}",
                lambda: adapted_llm(llm, keyword_adapter, where),
            )

    return preference_keywords(
        behavior_texts, items, llm, params, adapter, keyword_adapter, merge=merge
    )


def report_keyword_quality(
    preference_keywords: pd.DataFrame,
    comparison_keywords: pd.DataFrame,
    target_keywords: pd.DataFrame,
    behavior_texts: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    """Share of evaluation users whose keywords name a reference term, at an equal keyword budget:
    zero-shot LLM, LoRA LLM (whichever were run) and the no-LLM baseline, 95% bootstrap intervals;
    checks the data cannot support are "not applicable". Returns JSON, Markdown."""
    return keyword_quality_report(
        [preference_keywords, comparison_keywords],
        target_keywords,
        behavior_texts,
        items,
        users,
        params["quality"],
        scene=params.get("scene", ""),
    )


def plot_keyword_quality(report: dict[str, Any], params: dict[str, Any]):
    """The quality report as a figure: per check, each method's share of evaluation users with its
    95% bootstrap interval (what `keyword_quality.md` tabulates). Checks that do not apply to the
    scene are absent here; `keyword_quality.md` says why."""
    checks = report["checks"]
    methods = list(report["methods"])
    scene = params.get("scene", "")
    who = f"{report['n_users']} evaluation users" + (
        " (SIMULATED)" if report["simulated_users"] else ""
    )
    height = 0.8 / max(len(methods), 1)
    fig, axes = subplots(1, 1, (9.0, 1.8 + 0.55 * max(len(checks), 1) * len(methods) / 2))
    ax = axes[0][0]
    for m, method in enumerate(methods):
        rows = [(i, c["methods"].get(method, {})) for i, c in enumerate(checks.values())]
        rows = [(i, r) for i, r in rows if r.get("share") is not None]
        if not rows:
            continue
        y = [i + (m - (len(methods) - 1) / 2) * height for i, _ in rows]
        share = [r["share"] for _, r in rows]
        low = [r["share"] - r["share_ci95"][0] for _, r in rows]
        high = [r["share_ci95"][1] - r["share"] for _, r in rows]
        ax.barh(y, share, height=height, label=report["methods"][method])
        ax.errorbar(share, y, xerr=[low, high], fmt="none", ecolor="black", capsize=2, lw=0.8)
    ax.set_yticks(range(len(checks)))
    ax.set_yticklabels([f"{name} (B={c['budget']})" for name, c in checks.items()], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.02)
    boot = report.get("bootstrap", {})
    ax.set_xlabel(
        "share of users whose first B keywords name the reference\n(95% percentile bootstrap "
        f"interval, {boot.get('n_resamples', '?')} resamples, seed {boot.get('seed', '?')})",
        fontsize=8,
    )
    models = "; ".join(f"{report['methods'][k]}: {v}" for k, v in report["models"].items())
    ax.set_title(f"Keyword quality, {scene}: {who}\n{models}", fontsize=9)
    if not checks:
        ax.text(0.5, 0.5, "no check applies to this scene", ha="center", va="center")
    else:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return fig
