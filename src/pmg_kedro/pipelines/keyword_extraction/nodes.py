"""Keyword extraction nodes (paper §3.2.2): behaviour texts -> preference and target keywords.

k_i^p = LLM_g(p, a_i, e, x, y) for every attribute a_i of the scene, merged and de-duplicated
into k^p (K_p keywords); k^t = LLM_g(p, e, x^t) after the scene's fixed prefix (K_t keywords).

Rule for a user for whom nothing parses (documented in conf): the keywords fall back to the
most frequent metadata values of their history items (`fallback_columns`: genres, class, ...)
and the row is flagged `fallback = True`; such users are counted and logged, never dropped.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from ...components.keyword_quality import TextEmbedder, best_similarity, names_exactly
from ...components.llm import LLM, GenerationSettings
from ...components.prompts import (
    content_words,
    format_behaviour,
    merge_keywords,
    most_frequent,
    parse_keywords,
    preference_prompt,
    render,
    target_condition,
    target_prompt,
)

logger = logging.getLogger(__name__)


def _values(item: pd.Series, columns: list[str]) -> list[str]:
    """Metadata values of one item as keyword strings (list columns give each element)."""
    values: list[str] = []
    for column in columns:
        value = item[column]
        if isinstance(value, str):
            values.append(value)
        elif value is not None and hasattr(value, "__iter__"):
            values.extend(str(v) for v in value)
        elif value is not None and value == value:
            values.append(str(value))
    return [v.lower() for v in values if v]


def _history_values(history, by_id: pd.DataFrame, columns: list[str]) -> list[str]:
    return [v for item_id in history for v in _values(by_id.loc[str(item_id)], columns)]


def _items_by_id(items: pd.DataFrame) -> pd.DataFrame:
    by_id = items.drop_duplicates("item_id").copy()
    by_id.index = by_id["item_id"].astype(str)
    return by_id


def extract_preference_keywords(
    behavior_texts: pd.DataFrame, items: pd.DataFrame, llm: LLM, params: dict[str, Any]
) -> pd.DataFrame:
    """k^p per user: one prompt per attribute, parsed, merged, de-duplicated, cut to K_p.

    Returns user_id, purpose (evaluation | training), keywords, attributes, raw_answers (one per
    attribute), parsed (per attribute), n_parsed (distinct keywords before the cut) and fallback.
    Training rows' behaviour ends before their supervision item, so their keywords never see it.
    """
    attributes: dict[str, str] = params["attributes"]
    settings = GenerationSettings.from_params(params["generation"])
    prompts, prefixes = [], []
    for row in behavior_texts.itertuples(index=False):
        history = format_behaviour(list(row.history_texts), params["history_line"])
        for attribute, examples in attributes.items():
            prompts.append(
                preference_prompt(
                    params["preference_template"],
                    principle=params["principle"],
                    attribute=attribute,
                    examples=examples,
                    history=history,
                    conversation=row.conversation_summary,
                    conversation_template=params["conversation_template"],
                    n_keywords=int(params["keywords_per_attribute"]),
                )
            )
            prefixes.append(render(params["answer_prefix"], attribute=attribute))
    answers, finished = _generate(llm, prompts, prefixes, settings, "preference keywords")

    by_id = _items_by_id(items)
    n_attr = len(attributes)
    records, empty_per_attribute = [], dict.fromkeys(attributes, 0)
    for u, row in enumerate(behavior_texts.itertuples(index=False)):
        raw = answers[u * n_attr : (u + 1) * n_attr]
        done = finished[u * n_attr : (u + 1) * n_attr]
        parsed = [
            parse_keywords(
                a,
                max_words=int(params["max_keyword_words"]),
                # The question's own words (attribute, description, principle) are echoes.
                labels=[name, attributes[name], params["principle"]],
                complete=f,
            )
            for name, a, f in zip(attributes, raw, done, strict=True)
        ]
        for name, words in zip(attributes, parsed, strict=True):
            empty_per_attribute[name] += not words
        keywords = merge_keywords(parsed, int(params["k_p"]), int(params["keywords_per_attribute"]))
        n_parsed = len(merge_keywords(parsed, 10**6, 10**6))
        fallback = not keywords
        if fallback:
            values = _history_values(row.history, by_id, params["fallback_columns"])
            keywords = most_frequent(values, int(params["k_p"]))
        records.append(
            {
                "user_id": row.user_id,
                "purpose": row.purpose,
                "keywords": keywords,
                "attributes": list(attributes),
                "raw_answers": list(raw),
                "parsed": parsed,
                "n_parsed": n_parsed,
                "fallback": fallback,
            }
        )
    result = pd.DataFrame(records)
    n_fallback = int(result["fallback"].sum()) if len(result) else 0
    logger.info(
        "preference keywords: %d users, %d with nothing parsed (fallback to history metadata "
        "%s), empty answers per attribute %s",
        len(result),
        n_fallback,
        params["fallback_columns"],
        empty_per_attribute,
    )
    if n_fallback:
        logger.warning(
            "preference keywords: no keyword parsed for users %s; they use the fallback rule",
            list(result.loc[result["fallback"], "user_id"]),
        )
    return result


def extract_target_keywords(
    behavior_texts: pd.DataFrame, items: pd.DataFrame, llm: LLM, params: dict[str, Any]
) -> pd.DataFrame:
    """k^t per user: the scene's fixed prefix + up to K_t keywords of one prompt on x^t.

    Fallback when nothing parses: the target item's metadata (`target_fallback_columns`) or,
    when that list is empty (emoticon: the target item is the answer to predict), the content
    words of x^t. Returns user_id, target, keywords, raw_answer, n_parsed, fallback.
    """
    settings = GenerationSettings.from_params(params["target_generation"])
    k_t = int(params["k_t"])
    # Only evaluation users have a target; training rows end before their supervision item.
    behavior_texts = behavior_texts[behavior_texts["purpose"] == "evaluation"]
    prompts = [
        target_prompt(
            params["target_template"],
            principle=params["principle"],
            examples=params["target_examples"],
            target=text,
            n_keywords=k_t,
        )
        for text in behavior_texts["target_text"]
    ]
    prefixes = [params["target_answer_prefix"]] * len(prompts)
    answers, finished = _generate(llm, prompts, prefixes, settings, "target keywords")
    by_id = _items_by_id(items)
    # The instructions without the target: keywords made only of their words are echoes.
    instructions = target_prompt(
        params["target_template"],
        principle=params["principle"],
        examples=params["target_examples"],
        target="",
        n_keywords=k_t,
    )
    records = []
    for row, answer, done in zip(
        behavior_texts.itertuples(index=False), answers, finished, strict=True
    ):
        item = by_id.loc[str(row.target)]
        parsed = parse_keywords(
            answer,
            max_words=int(params["max_keyword_words"]),
            labels=["target", instructions],
            complete=done,
        )
        fallback = not parsed
        if fallback:
            columns = params["target_fallback_columns"]
            parsed = _values(item, columns) if columns else content_words(row.target_text, k_t)
        fields = {k: str(v) for k, v in item.items() if isinstance(v, str)}
        prefix = [render(p, **fields) for p in params["target_prefix"]]
        records.append(
            {
                "user_id": row.user_id,
                "target": str(row.target),
                "keywords": target_condition(prefix, parsed, k_t),
                "raw_answer": answer,
                "n_parsed": 0 if fallback else len(parsed),
                "fallback": fallback,
            }
        )
    result = pd.DataFrame(records)
    logger.info(
        "target keywords: %d users, %d with nothing parsed (fallback)",
        len(result),
        int(result["fallback"].sum()) if len(result) else 0,
    )
    return result


def _generate(llm, prompts, prefixes, settings, desc) -> tuple[list[str], list[bool]]:
    """LLM_g on all prompts, grouped by answer prefix (one batched call per distinct prefix)."""
    answers, finished = [""] * len(prompts), [True] * len(prompts)
    for prefix in dict.fromkeys(prefixes):
        index = [i for i, p in enumerate(prefixes) if p == prefix]
        out = llm.generate([prompts[i] for i in index], settings, answer_prefix=prefix, desc=desc)
        for i, a, f in zip(index, out, llm.last_finished, strict=True):
            answers[i], finished[i] = a, f
    return answers, finished


def _references(check: dict, row, by_id: pd.DataFrame, users: pd.DataFrame) -> list[str]:
    source, column = check["source"], check["column"]
    if source == "history":
        values = _history_values(row.history, by_id, [column])
        return most_frequent(values, int(check.get("top", 2)))
    if source == "target":
        return _values(by_id.loc[str(row.target)], [column])
    if source == "user":
        return _values(users.loc[str(row.user_id)], [column])
    raise ValueError(f"quality check {check}: source must be history, target or user")


def report_keyword_quality(
    preference_keywords: pd.DataFrame,
    target_keywords: pd.DataFrame,
    behavior_texts: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    """Share of users whose k^p names a reference term, for the LLM and a no-LLM baseline.

    A keyword names a term when it contains it as words, or (near-synonym) when their MiniLM
    cosine is >= `quality.threshold`. The baseline keywords are the most frequent history
    metadata values (`quality.baseline`). Returns the report as a dict (JSON) and Markdown.
    """
    quality = params["quality"]
    # What is reported is measured on evaluation users only (DESIGN.md §5).
    preference_keywords = preference_keywords[preference_keywords["purpose"] == "evaluation"]
    behavior_texts = behavior_texts[behavior_texts["purpose"] == "evaluation"]
    by_id = _items_by_id(items)
    users_by_id = users.drop_duplicates("user_id").set_index(users["user_id"].astype(str))
    merged = behavior_texts.merge(preference_keywords, on="user_id", validate="one_to_one")
    threshold = float(quality["threshold"])
    checks = quality.get("checks") or []
    embedder = TextEmbedder(quality.get("text_encoder_path")) if checks else None

    def baseline(row) -> list[str]:
        return [
            v
            for spec in quality["baseline"]
            for v in most_frequent(
                _history_values(row.history, by_id, [spec["column"]]), spec["top"]
            )
        ]

    results = {}
    for check in checks:
        rows = []
        for row in merged.itertuples(index=False):
            refs = _references(check, row, by_id, users_by_id)
            entry = {"fallback": bool(row.fallback)}
            for name, words in (("llm", list(row.keywords)), ("baseline", baseline(row))):
                exact = names_exactly(words, refs)
                entry[f"{name}_exact"] = exact
                entry[f"{name}_similarity"] = best_similarity(words, refs, embedder)
                entry[f"{name}_hit"] = exact or entry[f"{name}_similarity"] >= threshold
            rows.append(entry)
        table = pd.DataFrame(rows)
        llm_only = table[~table["fallback"]]
        results[check["name"]] = {
            "description": check["description"],
            "n_users": len(table),
            "llm_share": _share(table["llm_hit"]),
            "llm_share_exact": _share(table["llm_exact"]),
            "llm_share_without_fallback_users": _share(llm_only["llm_hit"]),
            "baseline_share": _share(table["baseline_hit"]),
            "baseline_share_exact": _share(table["baseline_exact"]),
        }

    n_keywords = preference_keywords["keywords"].map(len)
    report = {
        "scene_note": quality.get("note", ""),
        "n_users": len(preference_keywords),
        "threshold": threshold,
        "baseline": quality["baseline"],
        "preference_keywords": {
            "n_fallback_users": int(preference_keywords["fallback"].sum()),
            "mean_keywords": float(n_keywords.mean()) if len(n_keywords) else 0.0,
            "mean_parsed_before_cut": float(preference_keywords["n_parsed"].mean())
            if len(preference_keywords)
            else 0.0,
            "empty_answer_share_per_attribute": _empty_shares(preference_keywords),
        },
        "target_keywords": {
            "n_fallback_users": int(target_keywords["fallback"].sum()),
            "mean_parsed": float(target_keywords["n_parsed"].mean())
            if len(target_keywords)
            else 0.0,
        },
        "checks": results,
    }
    return report, _markdown(report, params.get("scene", ""))


def _share(values: pd.Series) -> float | None:
    return round(float(np.mean(values)), 4) if len(values) else None


def _empty_shares(preference_keywords: pd.DataFrame) -> dict[str, float]:
    counts: dict[str, list[int]] = {}
    for row in preference_keywords.itertuples(index=False):
        for name, words in zip(row.attributes, row.parsed, strict=True):
            counts.setdefault(name, []).append(int(len(words) == 0))
    return {name: round(float(np.mean(v)), 4) for name, v in counts.items()}


def _markdown(report: dict[str, Any], scene: str) -> str:
    lines = [f"# Keyword quality{f' ({scene})' if scene else ''}", ""]
    if report["scene_note"]:
        lines += [f"**{report['scene_note']}**", ""]
    pk, tk = report["preference_keywords"], report["target_keywords"]
    lines += [
        f"- users: {report['n_users']}",
        f"- preference keywords: mean {pk['mean_keywords']:.1f} per user "
        f"({pk['mean_parsed_before_cut']:.1f} parsed before the K_p cut); "
        f"nothing parsed (fallback rule) for {pk['n_fallback_users']} users",
        f"- empty answers per attribute: {pk['empty_answer_share_per_attribute']}",
        f"- target keywords: nothing parsed (fallback rule) for {tk['n_fallback_users']} users",
        "",
    ]
    if report["checks"]:
        lines += [
            f"Share of users whose keywords name the reference (exact words, or MiniLM cosine >= "
            f"{report['threshold']}); baseline = most frequent history metadata "
            f"{report['baseline']}, no LLM.",
            "",
            "| check | users | LLM | LLM exact | LLM, fallback users excluded | baseline | baseline exact |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in report["checks"].items():
            lines.append(
                f"| {name}: {r['description']} | {r['n_users']} | {_fmt(r['llm_share'])} | "
                f"{_fmt(r['llm_share_exact'])} | {_fmt(r['llm_share_without_fallback_users'])} | "
                f"{_fmt(r['baseline_share'])} | {_fmt(r['baseline_share_exact'])} |"
            )
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
