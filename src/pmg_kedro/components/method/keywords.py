"""Preference and target keywords by LLM_g (paper §3.2.2): the one implementation, run by the
keyword_extraction nodes and by `PMG.keywords`.

k_i^p = LLM_g(p, a_i, e, x, y) for every attribute a_i of the scene, merged and de-duplicated
into k^p (K_p keywords); k^t = LLM_g(p, e, x^t) after the scene's fixed prefix (K_t keywords).

Rule for a user for whom nothing parses (documented in conf): the keywords fall back to the
most frequent metadata values of their history items (those of `fallback_columns` the items
have: genres, class, ...; POG items have none, then the content words of the history texts)
and the row is flagged `fallback = True`; such users are counted and logged, never dropped.

`adapter` (ours, issue 12): `lora` answers the preference prompts with the keyword adapter
trained by model_preparation on train users' behavior (`components.method.keyword_adapter`), merged into
a copy of LLM_g; `none` prompts LLM_g zero-shot, as the paper does. An evaluation user the adapter
was trained on stops the run. Target keywords stay zero-shot: the adapter learnt preference
prompts only, and no behavior supervises a description of one item.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from pmg_kedro.components.data.item_terms import (
    fallback_keywords,
    item_texts,
    item_values,
    items_by_id,
    present_columns,
)
from pmg_kedro.components.data.prompts import (
    content_words,
    format_behavior,
    merge_keywords,
    parse_keywords,
    render,
    target_condition,
    target_prompt,
)
from pmg_kedro.components.method.keyword_adapter import adapted_llm, check_not_trained_on
from pmg_kedro.components.method.keyword_adapter_examples import preference_messages
from pmg_kedro.components.models.llm import LLM, GenerationSettings

logger = logging.getLogger(__name__)

# The LLM settings of keyword_extraction (`llm_adapter`) as report keys and labels.
METHODS = {"none": ("llm_zero_shot", "zero-shot LLM"), "lora": ("llm_lora", "LoRA LLM")}
BASELINE = ("baseline", "no-LLM baseline")


def adapter_label(adapter: str) -> str:
    """How a keyword_extraction `llm_adapter` setting is named in logs and reports."""
    return METHODS.get(adapter, (adapter, adapter))[1]


PREFERENCE_COLUMNS = [
    "user_id",
    "purpose",
    "keywords",
    "attributes",
    "raw_answers",
    "parsed",
    "n_parsed",
    "fallback",
    "llm_adapter",
    "llm",
]


def keyword_llm(
    llm: LLM,
    keyword_adapter: dict[str, Any],
    adapter: str,
    behavior_texts,
    scene: str,
    merge: Callable[[], LLM] | None = None,
) -> LLM:
    """LLM_g for the preference prompts: as it is (`none`) or with the LoRA adapter merged in
    (`lora`), after refusing evaluation users the adapter was trained on. `merge`: returns the
    adapted LLM instead (a Dask worker builds it once and keeps it for all its shards)."""
    if adapter == "none":
        return llm
    if adapter != "lora":
        raise ValueError(f"keyword_extraction.llm_adapter: expected lora or none, got {adapter!r}")
    evaluation = behavior_texts.loc[behavior_texts["purpose"] == "evaluation", "user_id"]
    where = adapter_where(scene)
    check_not_trained_on(keyword_adapter.get("metadata") or {}, scene, list(evaluation), where)
    if merge is not None:
        return merge()
    start = time.perf_counter()
    adapted = adapted_llm(llm, keyword_adapter, where)
    logger.info(
        "keyword adapter merged into a copy of %s in %.1f s", llm.name, time.perf_counter() - start
    )
    return adapted


def adapter_where(scene: str) -> str:
    return f"keyword_extraction ({scene}, catalog entry keyword_adapter)"


def preference_keywords(
    behavior_texts: pd.DataFrame,
    items: pd.DataFrame,
    llm: LLM,
    params: dict[str, Any],
    adapter: str = "none",
    keyword_adapter: dict[str, Any] | None = None,
    merge: Callable[[], LLM] | None = None,
) -> pd.DataFrame:
    """k^p per behavior row: one prompt per attribute, parsed, merged, de-duplicated, cut to K_p.

    Returns user_id, purpose (evaluation | train, as the user split), keywords, attributes,
    raw_answers (one per
    attribute), parsed (per attribute), n_parsed (distinct keywords before the cut), fallback,
    llm_adapter (`adapter`) and llm (the model that answered). Training rows' behavior ends
    before their supervision item, so their keywords never see it. `merge`: see `keyword_llm`.
    """
    attributes: dict[str, str] = params["attributes"]
    generation = dict(params["generation"])
    if adapter == "lora":  # the adapter's own decoding overrides (`lora_generation`)
        generation.update(params.get("lora_generation") or {})
    settings = GenerationSettings.from_params(generation)
    prompts, prefixes, users = [], [], []
    for n, row in enumerate(behavior_texts.itertuples(index=False)):
        for _, message, prefix in preference_messages(
            list(row.history_texts), row.conversation_summary, params
        ):
            prompts.append(message)
            prefixes.append(prefix)
            users.append(n)
    llm_g = (
        keyword_llm(
            llm, keyword_adapter or {}, adapter, behavior_texts, params.get("scene", ""), merge
        )
        if prompts
        else llm
    )
    answers, finished = generate_grouped(
        llm_g,
        prompts,
        prefixes,
        settings,
        f"preference keywords ({adapter_label(adapter)})",
        users if params.get("prefix_cache", True) else None,
    )

    by_id = items_by_id(items)
    fallback_columns = present_columns(params["fallback_columns"], items)
    n_attr = len(attributes)
    empty_per_attribute = dict.fromkeys(attributes, 0)
    answered_by = {"llm_adapter": adapter, "llm": getattr(llm_g, "name", type(llm_g).__name__)}
    records = []
    for u, row in enumerate(behavior_texts.itertuples(index=False)):
        answer_slice = slice(u * n_attr, (u + 1) * n_attr)
        record = _preference_record(
            row, answers[answer_slice], finished[answer_slice], by_id, fallback_columns, params
        )
        for name, words in zip(attributes, record["parsed"], strict=True):
            empty_per_attribute[name] += not words
        records.append(record | answered_by)
    result = pd.DataFrame(records, columns=PREFERENCE_COLUMNS)
    n_fallback = int(result["fallback"].sum()) if len(result) else 0
    logger.info(
        "preference keywords (%s): %d users, %d with nothing parsed (fallback to history "
        "metadata %s), empty answers per attribute %s",
        adapter_label(adapter),
        len(result),
        n_fallback,
        fallback_columns or "(none present): content words of the history texts",
        empty_per_attribute,
    )
    if n_fallback:
        logger.warning(
            "preference keywords: no keyword parsed for users %s; they use the fallback rule",
            list(result.loc[result["fallback"], "user_id"]),
        )
    return result


def _preference_record(row, raw, done, by_id, fallback_columns, params) -> dict[str, Any]:
    """One user's k^p from their answers (one per attribute): parsed, merged, cut to K_p, or
    the fallback rule's keywords where nothing parses."""
    attributes: dict[str, str] = params["attributes"]
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
    keywords = merge_keywords(parsed, int(params["k_p"]), int(params["keywords_per_attribute"]))
    fallback = not keywords
    if fallback:
        keywords = fallback_keywords(
            row.history, list(row.history_texts), by_id, fallback_columns, int(params["k_p"])
        )
    return {
        "user_id": row.user_id,
        "purpose": row.purpose,
        "keywords": keywords,
        "attributes": list(attributes),
        "raw_answers": list(raw),
        "parsed": parsed,
        "n_parsed": len(merge_keywords(parsed, 10**6, 10**6)),
        "fallback": fallback,
    }


def target_keywords(
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
    answers, finished = generate_grouped(llm, prompts, prefixes, settings, "target keywords")
    by_id = items_by_id(items)
    # Only the columns the items have (POG items have no class); none: the words of x^t.
    fallback_columns = present_columns(params["target_fallback_columns"], items)
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
            parsed = (
                item_values(item, fallback_columns)
                if fallback_columns
                else content_words(row.target_text, k_t)
            )
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


def generate_grouped(
    llm, prompts, prefixes, settings, desc, groups=None
) -> tuple[list[str], list[bool]]:
    """LLM_g on all prompts, grouped by answer prefix (one batched call per distinct prefix);
    `groups` (one key per prompt): prompts whose beginning is computed once (`LLM.generate`)."""
    answers, finished = [""] * len(prompts), [True] * len(prompts)
    for prefix in dict.fromkeys(prefixes):
        index = [i for i, p in enumerate(prefixes) if p == prefix]
        out = llm.generate(
            [prompts[i] for i in index],
            settings,
            answer_prefix=prefix,
            desc=desc,
            groups=None if groups is None else [groups[i] for i in index],
        )
        for i, a, f in zip(index, out, llm.last_finished, strict=True):
            answers[i], finished[i] = a, f
    return answers, finished


def user_keyword_record(user, source, prompt, answer, done, by_id, fallback_columns, p) -> dict:
    """One user's row of the recommendation experiment's user keywords (paper §4.5): the parsed
    keywords of one prompt, or the fallback rule's (`p`: `recommendation.user_images`)."""
    parsed = parse_keywords(
        answer, max_words=int(p["max_keyword_words"]), labels=[p["prompt_template"]], complete=done
    )
    keywords = merge_keywords([parsed], int(p["k_p"]), int(p["k_p"]))
    fallback = not keywords
    if fallback:
        keywords = fallback_keywords(source, [], by_id, fallback_columns, int(p["k_p"]))
    return {
        "user_id": user,
        "source_items": list(source),
        "prompt": prompt,
        "raw_answer": answer,
        "finished": bool(done),
        "keywords": keywords,
        "fallback": fallback,
    }


def recommendation_keywords_of_shard(users, items, p, fallback_columns, llm) -> pd.DataFrame:
    """The recommendation experiment's user keyword rows (paper §4.5) of a shard of users: each
    user's prompt on their last training items, answered in LLM batches (`p`: user_images)."""
    sources = users["source_items"].tolist()
    texts = item_texts(items, p["item_text"], (i for s in sources for i in s))
    messages = [
        render(
            p["prompt_template"],
            history=format_behavior([texts[i] for i in s], p["history_line"]),
        )
        for s in sources
    ]
    settings = GenerationSettings.from_params(p["generation"])
    answers = llm.generate(
        messages, settings, answer_prefix=p["answer_prefix"], desc="user keywords"
    )
    finished = list(llm.last_finished)
    by_id = items_by_id(items)
    return pd.DataFrame(
        [
            user_keyword_record(user, source, prompt, answer, done, by_id, fallback_columns, p)
            | {"llm": llm.name}
            for user, source, prompt, answer, done in zip(
                users["user_id"], sources, messages, answers, finished, strict=True
            )
        ]
    )
