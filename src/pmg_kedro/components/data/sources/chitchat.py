"""Chit-chat messages (`chitchat-dataset`, MIT) and the emoticons their senders used (paper §4.1.1)."""

from __future__ import annotations

import re

import pandas as pd

from pmg_kedro.components.data.images import STANDALONE
from pmg_kedro.components.data.sources import SceneTables
from pmg_kedro.components.data.sources.emoji_images import describe


def read_messages(path: str | None = None) -> pd.DataFrame:
    """One row per message: conversation_id, turn, sender, text, timestamp (unix seconds)."""
    import json

    if path is None:
        import chitchat_dataset

        path = chitchat_dataset._PATH
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    rows = []
    for conv_id, conv in data.items():
        for turn, block in enumerate(conv["messages"]):
            for msg in block:
                rows.append((conv_id, turn, msg["sender"], msg["text"], msg["timestamp"]))
    df = pd.DataFrame(rows, columns=["conversation_id", "turn", "sender", "text", "timestamp"])
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).astype("int64") // 10**9
    return df


def emoticon_pattern(emoticons) -> re.Pattern:
    """Text emoticons as whole tokens (not inside URLs or words), longest first."""
    alternatives = "|".join(re.escape(e) for e in sorted(emoticons, key=len, reverse=True))
    return re.compile(rf"(?<!\S)({alternatives})(?=$|\s|[.,!?])")


def _context(messages: pd.DataFrame, n_turns: int) -> pd.Series:
    """The text of the previous `n_turns` messages of the same conversation, oldest first."""
    texts = messages.groupby("conversation_id", sort=False)["text"]
    shifted = [texts.shift(k) for k in range(n_turns, 0, -1)]
    joined = pd.concat(shifted, axis=1).apply(
        lambda r: " | ".join(t for t in r if isinstance(t, str)), axis=1
    )
    return joined


def build_tables(messages: pd.DataFrame, params: dict, source: str) -> SceneTables:
    """Emoticon uses as interactions (user = sender, item = emoji), users with >= min uses."""
    mapping: dict[str, str] = params["emoticon_map"]
    messages = messages.sort_values(["conversation_id", "turn", "timestamp"], kind="stable")
    messages = messages.reset_index(drop=True)
    messages["context"] = _context(messages, int(params["context_turns"]))
    emoji_info = _emoji_info(mapping)
    interactions = _emoticon_uses(messages, mapping, emoji_info)

    per_user = interactions.groupby("user_id").size()
    min_uses = int(params["min_emoticon_uses"])
    kept = per_user[per_user >= min_uses]
    interactions = interactions[interactions["user_id"].isin(kept.index)].reset_index(drop=True)
    users = pd.DataFrame({"user_id": kept.index.astype(str), "n_emoticon_uses": kept.values})
    users["simulated"] = False
    items, image_index = _emoji_items(emoji_info, mapping)
    counts = {
        "conversations": int(messages["conversation_id"].nunique()),
        "messages": len(messages),
        "senders": int(messages["sender"].nunique()),
        "senders_with_any_emoticon": len(per_user),
        "emoticon_uses": int(per_user.sum()),
        "users_kept": len(users),
        "users_filtered_below_min_uses": int((per_user < min_uses).sum()),
        "emoticon_uses_kept": len(interactions),
        "emoji": len(items),
    }
    return SceneTables(items, interactions, image_index, users, source, counts)


def _emoji_info(mapping: dict[str, str]) -> dict:
    """emoji character -> its description (name, keywords, image), for every mapped emoji."""
    emoji_info = {}
    for token, char in mapping.items():
        try:
            emoji_info[char] = describe(char)
        except ValueError as err:
            raise ValueError(
                f"emoticon map (conf parameters_ingestion.yml) entry {token!r}: {err}"
            ) from None
    return emoji_info


def _emoticon_uses(messages: pd.DataFrame, mapping: dict[str, str], emoji_info) -> pd.DataFrame:
    """One row per emoticon in a message: the sender, the emoji, when, the message, its context
    and its order (message index, then position in the message)."""
    pattern = emoticon_pattern(mapping)
    uses = []
    for row in messages.itertuples():
        for position, match in enumerate(pattern.finditer(row.text)):
            info = emoji_info[mapping[match.group(1)]]
            uses.append(
                (
                    row.sender,
                    info.item_id,
                    row.timestamp,
                    match.group(1),
                    row.text,
                    row.context,
                    row.conversation_id,
                    row.Index * 100 + position,
                )
            )
    columns = ["user_id", "item_id", "timestamp", "emoticon", "message", "context"]
    interactions = pd.DataFrame(uses, columns=[*columns, "conversation_id", "order"])
    interactions["timestamp"] = interactions["timestamp"].astype("int64")
    interactions["simulated"] = False
    return interactions


def _emoji_items(emoji_info, mapping: dict[str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The emoji as items (name, keywords, the emoticons mapped to it, caption) and their
    image index."""
    infos = sorted(emoji_info.values(), key=lambda i: i.item_id)
    items = pd.DataFrame(
        {
            "item_id": [i.item_id for i in infos],
            "emoji": [i.char for i in infos],
            "title": [i.name for i in infos],
            "keywords": [list(i.keywords) for i in infos],
            "emoticons": [sorted(t for t, c in mapping.items() if c == i.char) for i in infos],
        }
    )
    items["caption"] = items["title"] + " emoji"
    image_index = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "image_path": [i.image_path for i in infos],
            "image_offset": STANDALONE,
        }
    )
    return items, image_index
