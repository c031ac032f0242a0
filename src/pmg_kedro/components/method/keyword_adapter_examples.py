"""The keyword adapter's examples (`keyword_adapter`), from behavior alone: train users' qualifying
interactions cut into windows, each window rendered as the §3.2.2 keyword prompt per attribute and
answered by the attribute's values over the items the user chose next.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pmg_kedro.components.data.item_terms import item_terms, items_by_id
from pmg_kedro.components.data.prompts import (
    format_behavior,
    most_frequent,
    preference_prompt,
    render,
)
from pmg_kedro.components.models.captioner import metadata_captions
from pmg_kedro.components.models.params import settings_from_params

logger = logging.getLogger(__name__)

EXAMPLE_COLUMNS = [
    "scene",
    "user_id",
    "window_end",
    "attribute",
    "history",
    "next_items",
    "message",
    "answer_prefix",
    "answer",
    "system_prompt",
]


# -- prompts shared with keyword_extraction -------------------------------------------------------


def preference_messages(
    history_texts: Sequence[str],
    conversation: str,
    params: Mapping[str, Any],
    attributes: Sequence[str] | None = None,
) -> list[tuple[str, str, str]]:
    """(attribute, user message, answer prefix) of the §3.2.2 preference prompt per attribute.

    `params` is a scene's `keyword_extraction` block; `attributes` (default: all of them, in conf
    order) picks some. The keyword nodes and the adapter's examples both build prompts here, so
    the adapter learns on exactly the prompts it answers.
    """
    history = format_behavior(list(history_texts), params["history_line"])
    names = list(params["attributes"]) if attributes is None else list(attributes)
    out = []
    for attribute in names:
        message = preference_prompt(
            params["preference_template"],
            principle=params["principle"],
            attribute=attribute,
            examples=params["attributes"][attribute],
            history=history,
            conversation=conversation,
            conversation_template=params["conversation_template"],
            n_keywords=int(params["keywords_per_attribute"]),
        )
        out.append((attribute, message, render(params["answer_prefix"], attribute=attribute)))
    return out


# -- behavior windows ----------------------------------------------------------------------------


def train_sequences(
    interactions: pd.DataFrame,
    histories: pd.DataFrame,
    user_split: pd.DataFrame,
    filter_column: str | None,
    order_columns: Sequence[str],
) -> dict[str, pd.DataFrame]:
    """Per train user: their qualifying interactions in ingestion's order, held-out target cut off.

    The order and filter are ingestion's (`split_histories`): the last qualifying interaction is
    the user's target, so it is dropped, and a check that it is the target `histories` holds makes
    sure the two agree (else the split came from other data). Evaluation users give nothing.
    """
    split = user_split.set_index(user_split["user_id"].astype(str))["split"]
    train_users = set(split.index[split.eq("train")])
    targets = histories.set_index(histories["user_id"].astype(str))["target"].astype(str)
    qualifying = interactions
    if filter_column:
        qualifying = interactions[interactions[filter_column].astype(bool)]
    qualifying = qualifying[qualifying["user_id"].astype(str).isin(train_users)]
    ordered = qualifying.sort_values(["user_id", *order_columns], kind="stable")
    sequences: dict[str, pd.DataFrame] = {}
    for user_id, group in ordered.groupby("user_id", sort=True):
        user_id = str(user_id)
        if user_id not in targets.index:  # filtered out by ingestion (too short, max_users)
            continue
        held_out = str(group["item_id"].iloc[-1])
        if held_out != targets[user_id]:
            raise ValueError(
                f"histories: user {user_id}: target {targets[user_id]!r} is not the last "
                f"qualifying interaction ({held_out!r}, field item_id of interactions ordered by "
                f"{list(order_columns)}); the split must come from these interactions"
            )
        sequences[user_id] = group.iloc[:-1].reset_index(drop=True)
    return sequences


@dataclass(frozen=True)
class WindowSettings:
    """Which windows a scene's train users give (parameters `windows`)."""

    min_history: int = 3  # items before a window's end, at least
    n_history: int = 10  # items shown, at most (the paper's n = 10)
    n_next: int = 3  # items after the window whose values answer
    max_windows_per_user: int | None = 8  # a seeded draw; heavy users do not dominate
    seed: int = 0

    @classmethod
    def from_params(cls, params: Mapping | None) -> WindowSettings:
        return settings_from_params(cls, params, "keyword adapter windows")


def behavior_windows(
    sequences: Mapping[str, pd.DataFrame],
    settings: WindowSettings,
    message_column: str | None = None,
) -> pd.DataFrame:
    """Windows of every user: user_id, window_end, history, history_messages, next_items.

    A window ending at position t shows items [t - n_history, t) and is answered by the items
    [t, t + n_next); every t from `min_history` on qualifies, `max_windows_per_user` of them are
    drawn (seeded, users in sorted order, so the same data and seed give the same windows).
    """
    rng = np.random.default_rng(settings.seed)
    rows = []
    for user_id in sorted(sequences):
        seq = sequences[user_id]
        items = seq["item_id"].astype(str).tolist()
        messages = (
            seq[message_column].fillna("").astype(str).tolist()
            if message_column
            else [""] * len(items)
        )
        ends = list(range(settings.min_history, len(items)))
        if settings.max_windows_per_user is not None and len(ends) > settings.max_windows_per_user:
            ends = sorted(rng.choice(ends, size=settings.max_windows_per_user, replace=False))
        for t in ends:
            start = max(0, t - settings.n_history)
            rows.append(
                {
                    "user_id": user_id,
                    "window_end": int(t),
                    "history": items[start:t],
                    "history_messages": messages[start:t],
                    "next_items": items[t : t + settings.n_next],
                }
            )
    columns = ["user_id", "window_end", "history", "history_messages", "next_items"]
    return pd.DataFrame(rows, columns=columns)


def answer_terms(
    next_items: Sequence[str],
    by_id: pd.DataFrame,
    column: str,
    transform: str | None,
    k: int,
    ignore: Sequence[str] = (),
) -> list[str]:
    """The `k` most frequent values of `column` over the next items (ties: first seen)."""
    skip = {v.lower() for v in ignore}
    values = [
        v
        for item_id in next_items
        for v in item_terms(by_id.loc[str(item_id)], column, transform)
        if v not in skip
    ]
    return most_frequent(values, k)


def _answer(next_items, by_id: pd.DataFrame, supervision: Mapping[str, Any], k: int) -> list[str]:
    """One attribute's answer over the next items, as its `supervision` entry says."""
    return answer_terms(
        next_items,
        by_id,
        supervision["column"],
        supervision.get("transform"),
        min(k, int(supervision.get("top", k))),
        supervision.get("ignore", ()),
    )


def _supervised(scene: str, supervision, attributes, items: pd.DataFrame) -> dict[str, Mapping]:
    """The supervision entries whose item column the items have (the others are logged); an
    attribute the keyword prompts do not ask is an error."""
    unknown = set(supervision) - set(attributes)
    if unknown:
        raise ValueError(
            f"keyword_adapter.{scene}.supervision: attributes {sorted(unknown)} are not asked by "
            f"keyword_extraction (attributes {list(attributes)})"
        )
    supervised = {a: s for a, s in supervision.items() if s["column"] in items.columns}
    missing = sorted(set(supervision) - set(supervised))
    if missing:
        logger.info(
            "%s: items lack the columns of attributes %s: no examples for them", scene, missing
        )
    return supervised


def build_examples(
    scene: str,
    windows: pd.DataFrame,
    items: pd.DataFrame,
    supervision: Mapping[str, Mapping[str, Any]],
    keyword_params: Mapping[str, Any],
    behavior_params: Mapping[str, Any],
    max_message_words: int = 30,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One example per (window, supervised attribute); returns (examples, counts).

    `supervision` maps an attribute of the scene's keyword prompt to the item column that answers
    it (`column`, optional `transform` such as `decade`, `ignore` values, `top`: how many values
    answer, default keywords_per_attribute). History texts are the
    items' metadata captions through behavior summarization's templates (x_i of §3.2.1); messages
    are cut to `max_message_words` words (summarization shortens long ones with LLM_g, which
    training does not run). Training windows carry no conversation y.
    """
    supervised = _supervised(scene, supervision, keyword_params["attributes"], items)
    by_id = items_by_id(items)
    captions = dict(
        zip(
            by_id.index,
            metadata_captions(by_id.to_dict("records"), behavior_params["captioner"]["template"]),
            strict=True,
        )
    )
    k = int(keyword_params["keywords_per_attribute"])
    system_prompt = (keyword_params.get("generation") or {}).get("system_prompt") or ""
    rows, empty = [], dict.fromkeys(supervised, 0)
    for window in tqdm(
        windows.itertuples(index=False),
        total=len(windows),
        desc=f"adapter examples ({scene})",
        disable=len(windows) < 1000,
    ):
        texts = [
            render(
                behavior_params["history_text"],
                item=captions[i],
                message=" ".join(m.split()[:max_message_words]),
            )
            for i, m in zip(window.history, window.history_messages, strict=True)
        ]
        answers = {a: _answer(window.next_items, by_id, s, k) for a, s in supervised.items()}
        asked = [a for a in supervised if answers[a]]
        for a in supervised:
            empty[a] += not answers[a]
        rows += [
            {
                "scene": scene,
                "user_id": window.user_id,
                "window_end": window.window_end,
                "attribute": attribute,
                "history": list(window.history),
                "next_items": list(window.next_items),
                "message": message,
                "answer_prefix": prefix,
                "answer": ", ".join(answers[attribute]),
                "system_prompt": system_prompt,
            }
            for attribute, message, prefix in preference_messages(texts, "", keyword_params, asked)
        ]
    examples = pd.DataFrame(rows, columns=EXAMPLE_COLUMNS)
    counts = {
        "windows": len(windows),
        "users": int(windows["user_id"].nunique()) if len(windows) else 0,
        "examples": len(examples),
        "examples_per_attribute": examples["attribute"].value_counts().to_dict(),
        "windows_without_answer_per_attribute": empty,
        "supervised": {a: dict(s) for a, s in supervised.items()},
        "left_out": [a for a in keyword_params["attributes"] if a not in supervised],
    }
    logger.info("%s: keyword adapter examples %s", scene, counts)
    return examples, counts
