"""The report of Table 3 (paper §4.5): MMGCN's test metrics per setting, mean ± std over seeds, a
popularity reference, the two controls of Generated-user (Shuffled-user, Generated-items-user) in
words, and the paired differences of pairs of settings per seed with their t intervals
(`reporting.stats.paired_test`), Holm-corrected together; as a JSON-ready dict, Markdown and a bar
chart. The sensitivity check (issue 29) is a second family of paired differences: the LEAK
(Oracle-user) and ORACLE (Oracle-keywords-user) settings, labelled wherever they appear; its
verdict is Table 3's first line.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pmg_kedro.components.reporting import figures
from pmg_kedro.components.reporting.stats import (
    VERDICT_RULE,
    holm,
    mde_note,
    minimum_detectable_effect,
    paired_test,
    verdict,
)
from pmg_kedro.components.reporting.tables import fmt, fmt_p, fmt_verdict, markdown_table

METRIC_COLUMNS = [f"{m}@{k}" for k in (10, 20) for m in ("precision", "recall", "ndcg")]
# What a setting's `requires` needs, in the words of its "not applicable" record.
REQUIREMENTS = {
    "hidden_tastes": "the users table has no hidden-taste columns (taste_brightness, taste_texture, "
    "taste_classes): only SIMULATED users have a hidden taste to write as ORACLE keywords",
}


def not_applicable(settings: dict[str, Any], user_feature_sets: set[str]) -> dict[str, str]:
    """{setting: "not applicable: why"} for the settings that `requires` what the data lacks: no
    user features of theirs among `user_feature_sets` (any other absence is an error elsewhere)."""
    unknown = {s["requires"] for s in settings.values() if s.get("requires")} - set(REQUIREMENTS)
    if unknown:
        raise ValueError(f"recommendation.settings: unknown requires {sorted(unknown)}")
    return {
        name: f"not applicable: {REQUIREMENTS[s['requires']]}"
        for name, s in settings.items()
        if s.get("requires") and s.get("user_features") not in user_feature_sets
    }


def setting_table(results: pd.DataFrame, settings: dict[str, Any]) -> dict[str, dict]:
    """Per setting (results' order): its label, mean ± std over seeds of every metric, the
    seeds, mean epochs and seconds."""
    return {
        name: {
            "label": settings[name]["label"],
            **{m: _mean_std(group[m]) for m in METRIC_COLUMNS},
            "seeds": sorted(int(s) for s in group["seed"]),
            "mean_epochs": float(group["epochs"].mean()),
            "mean_seconds": float(group["seconds"].mean()),
        }
        for name, group in results.groupby("setting", sort=False)
    }


def _mean_std(values: pd.Series) -> dict[str, float]:
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
    }


def paired_by_seed(results: pd.DataFrame, a: str, b: str, confidence: float) -> dict[str, Any]:
    """a - b per seed for every metric (same seed = same initialisation and negatives), with the
    t interval of the mean difference over seeds, the paired t-test's p (`t_p`) and the minimum
    detectable effect of the per-seed differences (`mde`, with its alpha, power and note)."""
    pivot = results.pivot(index="seed", columns="setting")
    out: dict[str, Any] = {}
    for metric in METRIC_COLUMNS:
        diff = (pivot[(metric, a)] - pivot[(metric, b)]).to_numpy()
        test = paired_test(diff, confidence=confidence, interval="t")
        out[metric] = {
            "per_seed": {str(s): float(d) for s, d in zip(pivot.index, diff, strict=True)},
            "mean": test["mean_difference"],
            "interval": [test["ci_low"], test["ci_high"]],
            "t_p": test["test_p"],
            **minimum_detectable_effect(diff),
        }
    return out


def paired_differences(
    results: pd.DataFrame, pairs, settings: dict[str, Any], confidence: float
) -> list[dict[str, Any]]:
    """`paired_by_seed` for every (a, b) of `pairs`, the t-tests' p Holm-corrected over every
    pair and metric together, and the verdict by `reporting.stats.VERDICT_RULE` (higher is
    better). A pair with a setting that did not run keeps its entry with `metrics` None and why."""
    ran = set(results["setting"])
    entries = []
    for a, b in pairs:
        entry: dict[str, Any] = {"a": a, "b": b}
        entry["label"] = f"{settings[a]['label']} - {settings[b]['label']}"
        missing = [s for s in (a, b) if s not in ran]
        entry["metrics"] = None if missing else paired_by_seed(results, a, b, confidence)
        if missing:
            entry["why"] = f"not run: {', '.join(missing)}"
        entries.append(entry)
    tested = [(e, m) for e in entries if e["metrics"] for m in e["metrics"].values()]
    corrected = holm([m["t_p"] for _, m in tested])
    for (entry, m), p_holm in zip(tested, corrected, strict=True):
        m["holm_p"] = float(p_holm)
        m["verdict"] = verdict(*m["interval"], p_holm, "higher", entry["a"], entry["b"])
    return entries


def describe_generation(log: pd.DataFrame, params: dict[str, Any]) -> dict[str, Any]:
    """Which generator made the logged images, how many, with which sampling settings."""
    generator = str(log["generator"].iloc[0]) if len(log) else None
    return {
        "generator": generator,
        "images": len(log),
        **{k: params[k] for k in ("mode", "sampler", "steps", "guidance_scale", "seed")},
    }


def markdown(report: dict[str, Any]) -> str:
    """Table 3's Markdown: what was run on which data and machine, the settings' metrics with the
    popularity reference, and the paired difference per metric."""
    data, env, model = report["data"], report["environment"], report["model"]
    users, generated = report["user_images"], report["user_images"]["generated_with"]
    sensitivity = report["sensitivity"]
    lines = [sensitivity["line"], "", "# MMGCN with image features (paper §4.5, Table 3 shape)", ""]
    lines += [f"**{label}**" for label in report["labels"]]
    lines += [
        "",
        f"Data: {data['users']} users, {data['items']} items, {data['positives_after_k_core']} "
        f"positives after the k-core filter {data['k_core']} (positives: {data['positive_rule']}); "
        f"per-user chronological split train / validation / test = {data['train_interactions']} / "
        f"{data['validation_interactions']} / {data['test_interactions']}; {data['test_users']} test users.",
        f"Model: {model['name']}, dim {model.get('dim')}, {model.get('n_layers')} layers, "
        f"{model.get('aggregation')} aggregation, {model.get('combination')} combination, "
        f"{model.get('fusion')} fusion. Seeds: {report['seeds']}.",
        f"Item features: {report['item_features']['extractor']}; sources "
        f"{report['item_features']['image_sources']}.",
        f"User images: {users['what']}; LLM {users['llm']}, generator {generated['generator']} "
        f"({generated['steps']} {generated['sampler']} steps); {users['keyword_fallbacks']} of "
        f"{users['users']} users fell back to their training items' metadata.",
        *(
            f"Control {report['settings'][name]['label']}: {text}"
            for name, text in report["controls"].items()
            if name in report["settings"]
        ),
        *(
            f"{report['settings'][name]['label']}: {text}"
            for name, text in sensitivity["settings"].items()
            if name in report["settings"]
        ),
        *(f"{n['label']}: {n['why']}." for n in report["not_applicable"].values()),
        f"Environment: Python {env['python']}, torch {env['torch']}, {env['platform']}, "
        f"{env['cpu']}, {env['cores']} CPUs, {env['torch_threads']} torch threads.",
        "",
        "Test metrics, mean ± std over seeds:",
        "",
        _settings_markdown(report),
    ]
    lines += _paired_markdown(report["paired_differences"], "Paired differences")
    lines += _paired_markdown(sensitivity, "Sensitivity check (LEAK and ORACLE, never judging PMG)")
    return "\n".join(lines) + "\n"


def per_seed_cell(differences: list[float], listed: int = 8) -> str:
    """The per-seed differences of one pair as a table cell: each of them up to `listed` seeds,
    else how many seeds, how many favour a, and their range (the JSON keeps every one)."""
    if len(differences) <= listed:
        return ", ".join(fmt(d, sign=True) for d in differences)
    above = sum(d > 0 for d in differences)
    low, high = fmt(min(differences), sign=True), fmt(max(differences), sign=True)
    return f"{len(differences)} seeds, {above} > 0, from {low} to {high}"


def _paired_markdown(paired: dict[str, Any], title: str) -> list[str]:
    """The lines of one family of paired differences (`paired_differences`' pairs): its table
    and the pairs not compared, with why."""
    rows = [
        [
            pair["label"],
            metric,
            fmt(entry["mean"], sign=True),
            f"[{fmt(entry['interval'][0], sign=True)}, {fmt(entry['interval'][1], sign=True)}]",
            per_seed_cell(list(entry["per_seed"].values())),
            fmt_p(entry["t_p"]),
            fmt_p(entry["holm_p"]),
            fmt_verdict(entry["verdict"], entry["mde"], entry["mde_note"]),
        ]
        for pair in paired["pairs"]
        if pair["metrics"]
        for metric, entry in pair["metrics"].items()
    ]
    lines = []
    if rows:
        lines += [
            "",
            f"{title}: {paired['what']} (paired t-test over seeds, Holm-corrected over "
            f"the {len(rows)} differences below). {VERDICT_RULE}",
            "",
            markdown_table(
                rows,
                ["a − b", "metric", "mean", "interval", "per seed", "t p", "Holm p", "verdict"],
            ),
            "",
            mde_note("seeds"),
        ]
    return lines + [
        f"Not compared, {p['label']}: {p['why']}." for p in paired["pairs"] if p.get("why")
    ]


def _settings_markdown(report: dict[str, Any]) -> str:
    rows = [
        [entry["label"]]
        + [f"{fmt(entry[m]['mean'])} ± {fmt(entry[m]['std'])}" for m in METRIC_COLUMNS]
        + [f"{entry['mean_epochs']:.0f}"]
        for entry in report["settings"].values()
    ]
    pop = report["popularity_reference"]
    rows.append(["(popularity, reference)", *(fmt(pop[m]) for m in METRIC_COLUMNS), ""])
    return markdown_table(rows, ["setting", *METRIC_COLUMNS, "epochs"])


def chart(report: dict[str, Any]) -> Figure:
    """Bars of every setting's mean ± std per metric, the popularity reference as ticks."""
    names = list(report["settings"])
    fig, axes = figures.subplots(1, 1, (10, 4))
    ax = axes[0][0]
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(METRIC_COLUMNS))
    for k, name in enumerate(names):
        entry = report["settings"][name]
        ax.bar(
            x + k * width,
            [entry[m]["mean"] for m in METRIC_COLUMNS],
            width,
            yerr=[entry[m]["std"] for m in METRIC_COLUMNS],
            capsize=2,
            label=entry["label"],
            hatch="//" if name in report["sensitivity"]["settings"] else None,
        )
    pop = report["popularity_reference"]
    ax.scatter(
        x + 0.4 - width / 2,
        [pop[m] for m in METRIC_COLUMNS],
        marker="_",
        s=400,
        color="k",
        label="popularity",
    )
    ax.set_xticks(x + 0.4 - width / 2)
    ax.set_xticklabels(METRIC_COLUMNS)
    ax.legend(fontsize=8)
    data, model, env = report["data"], report["model"], report["environment"]
    title = (
        f"MMGCN (dim {model.get('dim')}, {model.get('n_layers')} layers) test metrics, mean ± std "
        f"over seeds {report['seeds']}; {data['users']} users, {data['items']} items; torch "
        f"{env['torch']}, {env['cpu']}, {env['cores']} CPUs, {env['torch_threads']} threads"
    )
    if report["labels"]:
        title += "\n" + "; ".join(report["labels"])
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def table3(
    results: pd.DataFrame,
    split_stats: dict[str, Any],
    image_sources: dict[str, int],
    item_image_log: pd.DataFrame,
    user_keywords: pd.DataFrame,
    user_image_log: pd.DataFrame,
    history_item_image_log: pd.DataFrame,
    oracle_user_image_log: pd.DataFrame,
    popularity: dict[str, float],
    simulated: bool,
    machine: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, Any]:
    """Table 3's report: every number with what produced it (data, features, user images,
    model, machine, seeds), the settings' table, the popularity reference, the paired
    differences of `report.paired` ([a, b] pairs) and the sensitivity check
    (`report.sensitivity`, a family of its own: `sensitivity`)."""
    settings = params["settings"]
    table = setting_table(results, settings)
    confidence = float(params["report"]["confidence"])
    generated_items = int(image_sources.get("generated", 0))
    ran = {settings[name].get("user_features") for name in table}
    skipped = not_applicable(settings, ran)
    checks = sensitivity(results, oracle_user_image_log, skipped, params)
    gen = params["image_generation"]
    return {
        "what": "MMGCN full-ranking test metrics per setting (paper §4.5, Table 3 shape): mean and "
        "std over seeds; training and validation items masked; early stopping on validation "
        f"{params['model'].get('early_stopping_metric', 'recall@20')}",
        "labels": _labels(image_sources, simulated, table, checks),
        "simulated_users": simulated,
        "data": {
            **split_stats,
            "test_users": int(results["test_users"].iloc[0]) if len(results) else 0,
        },
        "item_features": {
            "extractor": f"ImageNet MobileNetV2 pooled features (1280), images at "
            f"{params['features']['image_size']} px resized to {params['features']['input_size']} px",
            "image_sources": {k: int(v) for k, v in image_sources.items()},
            "generated_with": describe_generation(item_image_log, gen) if generated_items else None,
        },
        "user_images": {
            "what": "PMG user-only images: preference keywords from the user's last "
            f"{params['user_images']['n_history']} TRAINING positives, preference condition only, "
            "no target",
            "llm": str(user_keywords["llm"].iloc[0]) if len(user_keywords) else None,
            "users": len(user_keywords),
            "keyword_fallbacks": int(user_keywords["fallback"].sum()),
            "generated_with": describe_generation(user_image_log, gen),
        },
        "model": {"name": "MMGCN (own torch_geometric implementation)", **params["model"]},
        "environment": machine,
        "seeds": [int(s) for s in params["seeds"]],
        "settings": table,
        "popularity_reference": {m: float(popularity[m]) for m in METRIC_COLUMNS},
        "controls": _controls(image_sources, history_item_image_log, params),
        "not_applicable": {
            name: {"label": settings[name]["label"], "why": why} for name, why in skipped.items()
        },
        "sensitivity": checks,
        "paired_differences": {
            "what": "a - b per seed (same seed = same initialisation and negatives), mean and "
            f"{confidence:.0%} t interval over seeds",
            "pairs": paired_differences(results, params["report"]["paired"], settings, confidence),
        },
        "results": results.to_dict(orient="records"),
    }


def _labels(image_sources: dict[str, int], simulated: bool, table: dict, checks: dict) -> list[str]:
    """What every table and figure of Table 3 says first: SIMULATED users, GENERATED item
    features, and the LEAK and ORACLE settings that ran."""
    generated_items = int(image_sources.get("generated", 0))
    labels = []
    if simulated:
        labels.append("SIMULATED users: simulated click histories, real item images")
    if generated_items:
        labels.append(
            f"item features of {generated_items} of {sum(image_sources.values())} items come "
            "from GENERATED item images (no poster in the image index)"
        )
    return labels + [
        f"{table[name]['label']}: a positive control that never judges PMG"
        for name in checks["settings"]
        if name in table
    ]


def sensitivity(
    results: pd.DataFrame, oracle_log: pd.DataFrame, skipped: dict[str, str], params
) -> dict[str, Any]:
    """Table 3's sensitivity check (issue 29, `report.sensitivity`): the LEAK and ORACLE pairs in a
    Holm family of their own (`paired_differences`: the same statistics and verdict rule as the
    other pairs, without changing their corrected p-values), what the two settings are, and the
    report's first line: whether `oracle` beats `baseline` beyond noise on `metric`."""
    p, settings = params["report"]["sensitivity"], params["settings"]
    confidence = float(params["report"]["confidence"])
    pairs = paired_differences(results, p["paired"], settings, confidence)
    for pair in pairs:
        why = [skipped[s] for s in (pair["a"], pair["b"]) if s in skipped]
        if why:
            pair["why"] = "; ".join(why)
    made = describe_generation(oracle_log, params["image_generation"])
    example = oracle_log["condition_text"].iloc[0] if len(oracle_log) else None
    return {
        "what": "a - b per seed (same seed = same initialisation and negatives), mean and "
        f"{confidence:.0%} t interval over seeds; LEAK and ORACLE settings, Holm-corrected apart "
        "from the pairs that judge PMG",
        **{k: p[k] for k in ("oracle", "oracle_keywords", "baseline", "generated", "metric")},
        "settings": {
            p["oracle"]: "the mean image features of the user's own held-out TEST items (a "
            "deliberate leak; a user without a test item, never ranked, keeps Averaged-user's): "
            "can this MMGCN setup reward any user image at all?",
            p["oracle_keywords"]: "Generated-user's images (same generator, settings and seed: "
            f"{made['images']} images by {made['generator']}, {made['steps']} {made['sampler']} "
            f"steps) from the SIMULATED users' hidden taste as keywords (e.g. '{example}') instead "
            "of the LLM's: 'the keywords are wrong' vs 'images of the right keywords do not help "
            "MMGCN'",
        },
        "pairs": pairs,
        **_verdict_line(pairs, settings, p),
    }


def _verdict_line(pairs: list[dict], settings: dict[str, Any], p: dict) -> dict[str, Any]:
    """{"sensitive": True | False | None, "line": Table 3's first line} from the pair
    (oracle, baseline) on `metric`, and (generated, oracle) where it is sensitive."""
    by = {(pair["a"], pair["b"]): pair for pair in pairs}
    oracle, baseline, metric = p["oracle"], p["baseline"], p["metric"]
    check = by.get((oracle, baseline))
    if check is None or not check["metrics"]:
        why = check["why"] if check else f"no pair [{oracle}, {baseline}] in report.sensitivity"
        return {"sensitive": None, "line": f"Sensitivity not checked: {why}."}
    entry = check["metrics"][metric]
    agree = sum(m["verdict"] == oracle for m in check["metrics"].values())
    found = (
        f"{check['label']}, {metric}: {_effect(entry)}; {agree} of {len(check['metrics'])} "
        f"metrics favour {oracle}"
    )
    if entry["verdict"] != oracle:
        return {
            "sensitive": False,
            "line": "Insensitive: this MMGCN setup cannot reward any user image (the leaked oracle "
            f"does not beat {settings[baseline]['label']} beyond noise: {found}), so "
            f"{settings[p['generated']]['label']}'s result says nothing about PMG's images.",
        }
    gap = by.get((p["generated"], oracle))
    if gap is None or not gap["metrics"]:
        shortfall = gap["why"] if gap else f"no pair [{p['generated']}, {oracle}]"
    else:
        shortfall = f"{gap['label']}, {metric}: {_effect(gap['metrics'][metric])}"
    return {
        "sensitive": True,
        "line": f"Sensitive: the leaked oracle beats {settings[baseline]['label']} beyond noise "
        f"({found}); {settings[p['generated']]['label']}'s distance to {oracle} is the real "
        f"shortfall: {shortfall}.",
    }


def _effect(entry: dict[str, Any]) -> str:
    """A paired difference in words: mean [interval], Holm p, verdict."""
    low, high = entry["interval"]
    return (
        f"{fmt(entry['mean'], sign=True)} [{fmt(low, sign=True)}, {fmt(high, sign=True)}], "
        f"Holm p {fmt_p(entry['holm_p'])}, verdict {entry['verdict']}"
    )


def _controls(image_sources: dict[str, int], history_log: pd.DataFrame, params) -> dict[str, str]:
    """What the two controls of Generated-user are, in words, with what made their images."""
    n = params["user_images"]["n_history"]
    generated = int(image_sources.get("generated", 0))
    total = sum(image_sources.values())
    made = describe_generation(history_log, params["image_generation"])
    domain = (
        f"GENERATED images of the user's own last {n} training items, text-only from item "
        f"metadata ('{params['item_images']['prompt_template']}'; {made['images']} images by "
        f"{made['generator']}, {made['steps']} {made['sampler']} steps, guidance "
        f"{made['guidance_scale']}, seed {made['seed']}), mean feature: generated vs real image "
        "domain, not personalization"
    )
    if generated and generated == total:
        domain += (
            "; in this scene every item feature already comes from a GENERATED image, so this "
            "control is in Averaged-user's domain: it differs from Averaged-user only in averaging "
            f"the last {n} training items instead of all"
        )
    elif generated:
        domain += (
            f"; {generated} of {total} item features already come from GENERATED images: for those "
            "items this control averages the features Averaged-user averages"
        )
    return {
        "shuffled_user": "the Generated-user features of ANOTHER user (a seeded derangement, seed "
        f"{params['controls']['shuffle_seed']}: no user keeps its own): a placebo, a gain that "
        "survives it is not personalization",
        "generated_items_user": domain,
    }


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """Table 3's numbers for MLflow from the report: per setting and metric the mean and std over
    seeds, the popularity reference, per paired difference ("<a>-<b>") and metric its mean,
    t interval, Holm p and minimum detectable effect; the same for the sensitivity check's pairs
    with its verdict (`sensitive`: 1 or 0, absent when not checked)."""
    checks = report["sensitivity"]
    sensitive = {} if checks["sensitive"] is None else {"sensitive": float(checks["sensitive"])}
    return {
        "settings": {
            name: {m: dict(entry[m]) for m in METRIC_COLUMNS}
            for name, entry in report["settings"].items()
        },
        "popularity_reference": dict(report["popularity_reference"]),
        "paired_differences": _summary_pairs(report["paired_differences"]["pairs"]),
        "sensitivity": {**sensitive, "paired_differences": _summary_pairs(checks["pairs"])},
    }


def _summary_pairs(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """ "<a>-<b>" -> metric -> mean, t interval, Holm p, MDE of the pairs that were compared."""
    return {
        f"{pair['a']}-{pair['b']}": {
            metric: {
                "mean": entry["mean"],
                "ci_low": entry["interval"][0],
                "ci_high": entry["interval"][1],
                "holm_p": entry["holm_p"],
                "mde": entry["mde"],
            }
            for metric, entry in pair["metrics"].items()
        }
        for pair in pairs
        if pair["metrics"]
    }


def generator_name(generator) -> str:
    """What made an image: the generator's saved info (recipe, text encoder, resolution)."""
    info = dict(getattr(generator, "info", None) or {})
    name = info.get("name") or info.get("recipe") or type(generator).__name__
    details = [f"text encoder {info['text_encoder']}"] if "text_encoder" in info else []
    if hasattr(generator, "resolution"):
        details.append(f"{generator.resolution} px")
    return f"{name} ({', '.join(details)})" if details else name


def image_log(keys: list[str], texts: list[str], generator, params: dict[str, Any]) -> pd.DataFrame:
    """Which condition text, generator and sampling settings made each image."""
    return pd.DataFrame(
        {
            "key": pd.Series(keys, dtype=str),
            "condition_text": pd.Series(texts, dtype=str),
            "generator": generator_name(generator),
            "seed": int(params["seed"]),
            "steps": int(params["steps"]),
            "sampler": params["sampler"],
            "mode": params["mode"],
            "guidance_scale": float(params["guidance_scale"]),
        }
    )
