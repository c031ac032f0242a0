"""Behavior summarization nodes (paper §3.2.1): user behaviors -> short texts x_i, x^t and y.

x_i = [LLM_g(t_{h_i}), LLM_g(v_{h_i}), ...]: short item texts pass through, long ones (over a
token budget) are summarised into one sentence, images become text through the captioner;
y = the conversation summarised into one sentence.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ...components.data.answer_masking import strip_emoticons
from ...components.data.images import load_image
from ...components.data.prompts import render
from ...components.models.captioner import ImageCaptioner, metadata_captions
from ...components.models.llm import LLM, GenerationSettings

logger = logging.getLogger(__name__)

_FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s")


def _require(df: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}; found {list(df.columns)}")


def select_users(
    histories: pd.DataFrame,
    user_split: pd.DataFrame,
    image_index: pd.DataFrame,
    ingestion: dict[str, Any],
    protocol: dict[str, Any],
) -> pd.DataFrame:
    """The rows whose behavior is summarised, one per (user, purpose) (DESIGN.md §5):

    - `evaluation`: every evaluation user of the split, history and target as ingested;
    - `train`: up to `max_train_users` train users (seeded), only where items have images (the
      soft preference embeddings learn from them): history[:-1] as the history and history[-1] as
      `supervision_item`, so no text of theirs ever describes the image that supervises.
    The target message and conversation lose every emoticon of the scene's table and every emoji
    (`components.data.answer_masking`): they are the answer the emoticon scene evaluates.
    """
    _require(histories, ["user_id", "history", "target"], "histories")
    split = user_split.set_index("user_id")["split"]
    unknown = sorted(set(histories["user_id"]) - set(split.index))
    if unknown:
        raise ValueError(
            f"user_split: {len(unknown)} users of histories missing, e.g. {unknown[:5]}"
        )
    evaluation = histories[histories["user_id"].map(split).eq("evaluation")].assign(
        purpose="evaluation", supervision_item=""
    )
    train = histories[histories["user_id"].map(split).eq("train")]
    # A training row needs a supervision item and at least one item before it.
    too_short = train["history"].map(len) < 2
    if too_short.any():
        logger.info("%d train users have < 2 history items: no training row", int(too_short.sum()))
    train = train[~too_short]
    n_train = min(len(train), int(protocol["max_train_users"]))
    if image_index.empty:
        n_train = 0
        logger.info("no item images: nothing learns from train users, none selected")
    train = train.sample(n=n_train, random_state=int(protocol["seed"])) if n_train else train[:0]
    list_columns = [c for c in histories.columns if c.startswith("history")]
    target_columns = [c for c in histories.columns if c.startswith("target")]
    training = train.assign(
        purpose="train", supervision_item=train["history"].map(lambda h: str(list(h)[-1]))
    )
    for column in list_columns:
        training[column] = training[column].map(lambda values: list(values)[:-1])
    for column in target_columns:
        training[column] = None
    selected = pd.concat([evaluation, training], ignore_index=True)
    selected = selected.sort_values(["purpose", "user_id"], ignore_index=True)
    selected, masked = _mask_answers(selected, ingestion.get("emoticon_map") or {})
    logger.info(
        "selected %d evaluation and %d training users of %d (%d train users available; "
        "max_train_users=%s, seed=%s); %d target messages/conversations lost an emoticon",
        len(evaluation),
        len(training),
        len(histories),
        len(train) if n_train else int(split.eq("train").sum()),
        protocol["max_train_users"],
        protocol["seed"],
        masked,
    )
    return selected


def _mask_answers(users: pd.DataFrame, emoticon_map: dict[str, str]) -> tuple[pd.DataFrame, int]:
    """Target-side texts without the scene's emoticons or emoji; returns the table and how many
    texts changed."""
    columns = [c for c in ("target_message", "target_context") if c in users.columns]
    if not columns:
        return users, 0
    users = users.copy()
    emoticons = list(emoticon_map)
    changed = 0
    for column in columns:
        before = users[column]
        after = before.map(lambda t: strip_emoticons(t, emoticons) if isinstance(t, str) else t)
        changed += int((before.fillna("") != after.fillna("")).sum())
        users[column] = after
    return users, changed


def caption_items(
    items: pd.DataFrame, image_index: pd.DataFrame, users: pd.DataFrame, params: dict[str, Any]
) -> pd.DataFrame:
    """Text of every item the users touched: item_id, text, text_source (metadata or image caption).

    `captioner.backend: metadata` writes the text from item metadata through a template; with
    `transformers` the images of the items are captioned by a local image-to-text model and the
    caption joins the metadata text through `captioner.text_template`.
    """
    _require(items, ["item_id"], "items")
    targets = [t for t in users["target"] if isinstance(t, str) and t]
    needed = pd.unique(np.concatenate([np.concatenate(users["history"].to_numpy()), targets]))
    by_id = items.drop_duplicates("item_id").set_index("item_id", drop=False)
    unknown = sorted(set(needed) - set(by_id.index))
    if unknown:
        raise ValueError(
            f"histories: {len(unknown)} item ids not in items (field history/target), "
            f"e.g. {unknown[:5]}"
        )
    rows = by_id.loc[needed]
    config = params["captioner"]
    texts = metadata_captions(rows.to_dict("records"), config["template"])
    table = pd.DataFrame({"item_id": rows["item_id"].astype(str).to_numpy(), "text": texts})
    table["text_source"] = "metadata"

    backend = config.get("backend", "metadata")
    if backend == "transformers":
        located = image_index.drop_duplicates("item_id").set_index("item_id")
        with_image = [i for i in table["item_id"] if i in located.index]
        captioner = ImageCaptioner(
            config["model_path"],
            prompt=config.get("prompt"),
            max_new_tokens=int(config.get("max_new_tokens", 24)),
            batch_size=int(config.get("batch_size", 16)),
            dtype=config.get("dtype", "float32"),
        )
        images = [
            load_image(located.at[i, "image_path"], int(located.at[i, "image_offset"]))
            for i in with_image
        ]
        captions = dict(zip(with_image, captioner.caption(images), strict=True))
        mask = table["item_id"].isin(captions)
        table.loc[mask, "text"] = [
            render(config["text_template"], metadata=t, image_caption=captions[i])
            for i, t in zip(table.loc[mask, "item_id"], table.loc[mask, "text"], strict=True)
        ]
        table.loc[mask, "text_source"] = "image_caption"
        logger.info("captioned %d of %d items from their images", int(mask.sum()), len(table))
    elif backend != "metadata":
        raise ValueError(f"captioner.backend {backend!r}: expected 'metadata' or 'transformers'")
    return table


def _first_sentence(text: str) -> str:
    return _FIRST_SENTENCE.split(text.strip(), maxsplit=1)[0].strip() if text.strip() else ""


def _as_list(value) -> list:
    return [] if value is None else list(value)


def summarize_behavior(
    users: pd.DataFrame, item_texts: pd.DataFrame, llm: LLM, params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """x_i, x^t and y per user (§3.2.1), and the item texts with their summaries.

    Item texts and messages over `max_text_tokens` tokens and every non-empty conversation are
    summarised by LLM_g into one sentence, all in one batched generation. An empty summary keeps
    the text cut to the budget (counted and logged). Returns (behavior_texts, item_texts).
    """
    columns = _Columns.of(params)
    _require(users, columns.present(), "histories")
    summaries = _summaries(users, item_texts, columns, llm, params)

    def short(text: str) -> str:
        return summaries.get(text, text)

    item_texts = item_texts.copy()
    item_texts["original_text"] = item_texts["text"]
    item_texts["text"] = item_texts["text"].map(short)
    item_texts.loc[item_texts["text"] != item_texts["original_text"], "text_source"] = "llm_summary"
    text_of = dict(zip(item_texts["item_id"], item_texts["text"], strict=True))
    records, empty_messages = [], 0
    for row in users.itertuples(index=False):
        record, empty = _behavior_record(row._asdict(), columns, short, summaries, text_of, params)
        records.append(record)
        empty_messages += empty
    if empty_messages:
        logger.info(
            "%d target messages were only emoticons: x^t is %r for them",
            empty_messages,
            params["empty_message_text"],
        )
    return pd.DataFrame(records), item_texts


@dataclass(frozen=True)
class _Columns:
    """The histories columns a scene names (`columns`): history messages, the target message,
    the conversation; None where the scene has none."""

    history_message: str | None
    target_message: str | None
    conversation: str | None

    @classmethod
    def of(cls, params: dict[str, Any]) -> _Columns:
        columns = params.get("columns") or {}
        return cls(*(columns.get(k) for k in ("history_message", "target_message", "conversation")))

    def present(self) -> list[str]:
        return [c for c in (self.history_message, self.target_message, self.conversation) if c]

    def messages(self, row: dict) -> list[str]:
        return [str(m) for m in _as_list(row[self.history_message])] if self.history_message else []


def _summaries(users, item_texts, columns: _Columns, llm: LLM, params) -> dict[str, str]:
    """One sentence per text that needs one: item texts and messages over the token budget, and
    every conversation (always summarised, §3.2.1), each once, in one batched generation."""
    budget = int(params["max_text_tokens"])
    short_texts = list(item_texts["text"])
    for row in users.itertuples(index=False):
        row = row._asdict()
        short_texts += columns.messages(row)
        if columns.target_message and isinstance(row[columns.target_message], str):
            short_texts.append(row[columns.target_message])
    short_texts = list(dict.fromkeys(short_texts))
    long_texts = [
        t for t, n in zip(short_texts, llm.count_tokens(short_texts), strict=True) if n > budget
    ]
    conversations = []
    if columns.conversation:
        conversations = list(
            dict.fromkeys(
                str(c) for c in users[columns.conversation] if isinstance(c, str) and c.strip()
            )
        )
    prompts = [render(params["summary_prompt"], text=t) for t in long_texts]
    prompts += [render(params["conversation_prompt"], conversation=c) for c in conversations]
    settings = GenerationSettings.from_params(params["generation"])
    answers = llm.generate(prompts, settings, desc="summaries") if prompts else []
    summaries: dict[str, str] = {}
    failed = 0
    for text, answer in zip([*long_texts, *conversations], answers, strict=True):
        sentence = _first_sentence(answer)
        if not sentence:
            failed += 1
            sentence = " ".join(text.split()[:budget])
        summaries[text] = sentence
    logger.info(
        "summarised %d long texts and %d conversations (%d empty summaries kept the cut text)",
        len(long_texts),
        len(conversations),
        failed,
    )
    return summaries


def _behavior_record(
    row: dict, columns: _Columns, short, summaries, text_of, params
) -> tuple[dict, bool]:
    """One user's row (history, x_i texts, target and x^t, supervision item, y) and whether the
    target message was empty (only emoticons) and got `empty_message_text`."""
    history = [str(i) for i in _as_list(row["history"])]
    messages = [short(m) for m in columns.messages(row)] or [""] * len(history)
    if len(messages) != len(history):
        raise ValueError(
            f"histories: user {row['user_id']}: {len(history)} history items but "
            f"{len(messages)} messages (field {columns.history_message})"
        )
    target = row["target"] if isinstance(row["target"], str) and row["target"] else ""
    message = row[columns.target_message] if columns.target_message else None
    target_message = short(message) if isinstance(message, str) else ""
    empty_message = bool(columns.target_message and target and not target_message)
    if empty_message:
        target_message = params["empty_message_text"]
    value = row[columns.conversation] if columns.conversation else None
    conversation = value if isinstance(value, str) else ""  # missing (NaN/None): none
    record = {
        "user_id": str(row["user_id"]),
        "purpose": row["purpose"],
        "history": history,
        "history_texts": [
            render(params["history_text"], item=text_of[i], message=m)
            for i, m in zip(history, messages, strict=True)
        ],
        "target": target,
        # Training rows have no target: their last history item supervises, unseen here.
        "target_text": render(params["target_text"], item=text_of[target], message=target_message)
        if target
        else "",
        "supervision_item": row["supervision_item"],
        "conversation": conversation,
        "conversation_summary": summaries.get(conversation, ""),
    }
    return record, empty_message
