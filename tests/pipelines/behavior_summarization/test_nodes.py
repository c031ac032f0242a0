"""Behaviour summarization nodes (paper §3.2.1) on in-memory tables of the ingestion's shape."""

import pandas as pd
import pytest

from pmg_kedro.pipelines.behavior_summarization.nodes import (
    caption_items,
    select_users,
    summarize_behaviour,
)
from tests.components.tiny_llm import ScriptedLLM

LONG = "word " * 60  # 60 tokens for the scripted LLM: over the budget of 48

PARAMS = {
    "max_users": 2,
    "seed": 0,
    "max_text_tokens": 48,
    "summary_prompt": "SUMMARISE: {text}",
    "conversation_prompt": "CONVERSATION: {conversation}",
    "generation": {"max_new_tokens": 8, "repetition_penalty": 1.1, "batch_size": 4},
    "captioner": {"backend": "metadata", "template": "{title} emoji ({keywords})"},
    "history_text": '{item} with "{message}"',
    "target_text": "{message}",
    "columns": {
        "history_message": "history_message",
        "target_message": "target_message",
        "conversation": "target_context",
    },
}


@pytest.fixture()
def items():
    return pd.DataFrame(
        {
            "item_id": ["1f642", "1f602", "1f63a"],
            "title": ["slightly smiling face", "face with tears of joy", "grinning cat"],
            "keywords": [["smile"], ["joy", "laugh"], ["cat", "smile"]],
            "caption": [
                "slightly smiling face emoji",
                "face with tears of joy emoji",
                "grinning cat emoji",
            ],
        }
    )


@pytest.fixture()
def histories():
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3"],
            "history": [["1f642", "1f602"], ["1f63a"], ["1f642"]],
            "target": ["1f63a", "1f642", "1f602"],
            "history_message": [["hi :)", LONG], ["meow :3"], ["ok :)"]],
            "target_message": ["so funny XD", "bye :)", "lol"],
            "target_context": ["how are you | fine", "", "a | b"],
        }
    )


def test_select_users_is_seeded_sorted_and_complete_without_a_cap(histories):
    first = select_users(histories, PARAMS)
    assert len(first) == 2 and list(first["user_id"]) == sorted(first["user_id"])
    assert first.equals(select_users(histories, PARAMS))
    assert list(select_users(histories, {**PARAMS, "max_users": None})["user_id"]) == [
        "u1",
        "u2",
        "u3",
    ]
    with pytest.raises(ValueError, match="histories: missing columns \\['target'\\]"):
        select_users(histories.drop(columns="target"), PARAMS)


def test_caption_items_writes_metadata_text_for_the_items_users_touched(items, histories):
    table = caption_items(items, pd.DataFrame(columns=["item_id"]), histories.iloc[:2], PARAMS)
    assert set(table["item_id"]) == {"1f642", "1f602", "1f63a"}
    assert (
        table.set_index("item_id").at["1f602", "text"]
        == "face with tears of joy emoji (joy, laugh)"
    )
    assert set(table["text_source"]) == {"metadata"}


def test_caption_items_names_unknown_items(items, histories):
    bad = histories.assign(target=["nope", "1f642", "1f602"])
    with pytest.raises(ValueError, match="not in items.*nope"):
        caption_items(items, pd.DataFrame(columns=["item_id"]), bad, PARAMS)
    with pytest.raises(ValueError, match="captioner.backend"):
        caption_items(
            items,
            pd.DataFrame(),
            histories,
            {**PARAMS, "captioner": {"backend": "x", "template": "{title}"}},
        )


def test_summarize_behaviour_summarises_only_long_texts_and_conversations(items, histories):
    llm = ScriptedLLM([("SUMMARISE", "A long message. And more."), ("CONVERSATION", "They greet.")])
    captions = caption_items(items, pd.DataFrame(columns=["item_id"]), histories, PARAMS)
    behaviour, item_texts = summarize_behaviour(histories, captions, llm, PARAMS)

    ((prompts, settings, _),) = llm.calls  # one batched call for every summary
    assert settings.max_new_tokens == 8
    assert sorted(p.split(":")[0] for p in prompts) == ["CONVERSATION", "CONVERSATION", "SUMMARISE"]
    u1 = behaviour.set_index("user_id").loc["u1"]
    assert list(u1["history_texts"]) == [
        'slightly smiling face emoji (smile) with "hi :)"',
        'face with tears of joy emoji (joy, laugh) with "A long message."',  # first sentence only
    ]
    assert u1["target_text"] == "so funny XD"  # the message, never the target emoticon
    assert u1["conversation_summary"] == "They greet."
    assert behaviour.set_index("user_id").at["u2", "conversation_summary"] == ""
    assert set(item_texts["text_source"]) == {"metadata"}  # short item texts pass through


def test_empty_summary_keeps_the_text_cut_to_the_budget(items, histories):
    llm = ScriptedLLM([], default="")
    captions = caption_items(items, pd.DataFrame(columns=["item_id"]), histories, PARAMS)
    behaviour, _ = summarize_behaviour(histories, captions, llm, PARAMS)
    text = behaviour.set_index("user_id").at["u1", "history_texts"][1]
    assert text.count("word") == 48


def test_scene_without_messages_passes_item_texts_through(items, histories):
    params = {**PARAMS, "columns": {}, "history_text": "{item}", "target_text": "{item}"}
    plain = histories[["user_id", "history", "target"]]
    llm = ScriptedLLM([])
    captions = caption_items(items, pd.DataFrame(columns=["item_id"]), plain, params)
    behaviour, _ = summarize_behaviour(plain, captions, llm, params)
    assert llm.calls == []  # nothing long: no LLM call at all
    assert (
        behaviour.set_index("user_id").at["u2", "target_text"]
        == "slightly smiling face emoji (smile)"
    )
