"""Behavior summarization nodes (paper §3.2.1) on in-memory tables of the ingestion's shape."""

import pandas as pd
import pytest

from pmg_kedro.pipelines.behavior_summarization.nodes import (
    caption_items,
    select_users,
    summarize_behavior,
)
from tests.components.tiny_llm import ScriptedLLM

LONG = "word " * 60  # 60 tokens for the scripted LLM: over the budget of 48

PARAMS = {
    "max_text_tokens": 48,
    "empty_message_text": "a chat message",
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


SPLIT = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "split": ["evaluation", "train", "train"]})
IMAGES = pd.DataFrame({"item_id": ["1f642"], "image_path": ["x.png"], "image_offset": [-1]})
PROTOCOL = {"seed": 0, "max_train_users": 10}
INGESTION = {"emoticon_map": {":)": "🙂", "XD": "😆", ":3": "😺"}}


def _selected(histories, split=SPLIT, images=IMAGES, protocol=PROTOCOL):
    return select_users(histories, split, images, INGESTION, protocol)


def test_evaluation_users_keep_their_history_and_training_rows_end_before_supervision(histories):
    histories = histories.assign(history=[["1f642", "1f602"], ["1f63a", "1f642"], ["1f642"]])
    histories["history_message"] = [["hi :)", "x"], ["meow :3", "yo"], ["ok :)"]]
    selected = _selected(histories).set_index("user_id")
    assert selected.loc["u1", "purpose"] == "evaluation"
    assert list(selected.loc["u1", "history"]) == ["1f642", "1f602"]
    assert selected.loc["u1", "target"] == "1f63a" and selected.loc["u1", "supervision_item"] == ""
    # u2 trains: the LAST history item supervises and is cut from every history column
    assert selected.loc["u2", "purpose"] == "train"
    assert selected.loc["u2", "supervision_item"] == "1f642"
    assert list(selected.loc["u2", "history"]) == ["1f63a"]
    assert list(selected.loc["u2", "history_message"]) == ["meow :3"]
    assert pd.isna(selected.loc["u2", "target"]) and pd.isna(selected.loc["u2", "target_message"])
    assert "u3" not in selected.index  # one history item: nothing left before a supervision


def test_no_item_images_no_training_rows_and_the_cap_is_seeded(histories):
    assert set(_selected(histories, images=IMAGES[:0])["purpose"]) == {"evaluation"}
    histories = histories.assign(history=[["1f642", "1f602"], ["1f63a", "1f642"], ["1f642", "a"]])
    histories["history_message"] = [["1", "2"], ["3", "4"], ["5", "6"]]
    capped = _selected(histories, protocol={"seed": 0, "max_train_users": 1})
    assert capped["purpose"].value_counts().to_dict() == {"evaluation": 1, "train": 1}
    assert capped.equals(_selected(histories, protocol={"seed": 0, "max_train_users": 1}))
    other = [_selected(histories, protocol={"seed": s, "max_train_users": 1}) for s in range(8)]
    assert {frame.loc[frame["purpose"] == "train", "user_id"].iat[0] for frame in other} == {
        "u2",
        "u3",
    }
    with pytest.raises(ValueError, match="user_split: 1 users of histories missing"):
        _selected(histories, split=SPLIT[:2])


def test_the_target_message_and_conversation_lose_the_answer(histories):
    histories = histories.assign(
        target_message=["so funny XD", ":):)", "lol😆"], target_context=["hi :3 | x", "", "a XD b"]
    )
    split = SPLIT.assign(split="evaluation")
    selected = _selected(histories, split=split).set_index("user_id")
    assert selected.loc["u1", "target_message"] == "so funny"
    assert selected.loc["u2", "target_message"] == ""
    assert selected.loc["u3", "target_message"] == "lol"
    assert selected.loc["u1", "target_context"] == "hi | x"
    assert selected.loc["u3", "target_context"] == "a b"
    # history messages are behavior, not the answer: kept
    assert list(selected.loc["u1", "history_message"]) == ["hi :)", LONG]


def test_no_emoticon_of_the_real_table_survives_masking(project_root):
    import yaml

    from pmg_kedro.components.data.answer_masking import leaked_emoticons, strip_emoticons

    conf = yaml.safe_load((project_root / "conf/base/parameters_ingestion.yml").read_text())
    table = conf["emoticon"]["ingestion"]["emoticon_map"]
    emoticons = list(table)
    for e in emoticons:
        for text in (e, f"ok {e}", f"ok{e}", f"{e}{e}!", f"a {e[:1]}{e}{e[1:]} b", table[e]):
            masked = strip_emoticons(text, emoticons)
            assert leaked_emoticons(masked, emoticons) == [], (text, masked)


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


def _evaluation_rows(histories):
    return _selected(histories, split=SPLIT.assign(split="evaluation"))


def test_summarize_behavior_summarises_only_long_texts_and_conversations(items, histories):
    llm = ScriptedLLM([("SUMMARISE", "A long message. And more."), ("CONVERSATION", "They greet.")])
    histories = _evaluation_rows(histories)
    captions = caption_items(items, pd.DataFrame(columns=["item_id"]), histories, PARAMS)
    behavior, item_texts = summarize_behavior(histories, captions, llm, PARAMS)

    ((prompts, settings, _),) = llm.calls  # one batched call for every summary
    assert settings.max_new_tokens == 8
    assert sorted(p.split(":")[0] for p in prompts) == ["CONVERSATION", "CONVERSATION", "SUMMARISE"]
    u1 = behavior.set_index("user_id").loc["u1"]
    assert list(u1["history_texts"]) == [
        'slightly smiling face emoji (smile) with "hi :)"',
        'face with tears of joy emoji (joy, laugh) with "A long message."',  # first sentence only
    ]
    assert u1["target_text"] == "so funny"  # the message without its emoticon: the answer
    assert u1["conversation_summary"] == "They greet."
    assert behavior.set_index("user_id").at["u2", "conversation_summary"] == ""
    assert set(item_texts["text_source"]) == {"metadata"}  # short item texts pass through


def test_empty_summary_keeps_the_text_cut_to_the_budget(items, histories):
    llm = ScriptedLLM([], default="")
    histories = _evaluation_rows(histories)
    captions = caption_items(items, pd.DataFrame(columns=["item_id"]), histories, PARAMS)
    behavior, _ = summarize_behavior(histories, captions, llm, PARAMS)
    text = behavior.set_index("user_id").at["u1", "history_texts"][1]
    assert text.count("word") == 48


def test_scene_without_messages_passes_item_texts_through(items, histories):
    params = {**PARAMS, "columns": {}, "history_text": "{item}", "target_text": "{item}"}
    plain = _evaluation_rows(histories[["user_id", "history", "target"]])
    llm = ScriptedLLM([])
    captions = caption_items(items, pd.DataFrame(columns=["item_id"]), plain, params)
    behavior, _ = summarize_behavior(plain, captions, llm, params)
    assert llm.calls == []  # nothing long: no LLM call at all
    assert (
        behavior.set_index("user_id").at["u2", "target_text"]
        == "slightly smiling face emoji (smile)"
    )


def test_training_rows_never_describe_their_supervision_item(items, histories):
    histories = histories.assign(history=[["1f642", "1f602"], ["1f63a", "1f602"], ["1f642"]])
    histories["history_message"] = [["hi :)", "x"], ["meow :3", "SUPERVISION"], ["ok :)"]]
    selected = _selected(histories)
    captions = caption_items(items, pd.DataFrame(columns=["item_id"]), selected, PARAMS)
    behavior, _ = summarize_behavior(selected, captions, ScriptedLLM([]), PARAMS)
    u2 = behavior.set_index("user_id").loc["u2"]
    assert u2["purpose"] == "train" and u2["supervision_item"] == "1f602"
    text = " ".join(u2["history_texts"]) + u2["target_text"] + u2["conversation_summary"]
    assert "tears of joy" not in text and "SUPERVISION" not in text
    assert u2["history_texts"] == ['grinning cat emoji (cat, smile) with "meow :3"']
