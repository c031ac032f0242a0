"""The keyword LoRA adapter (issue 12): behavior windows, examples, the answer loss, training on
a tiny random Llama until it answers a planted keyword list, and the checks around its use."""

import pandas as pd
import pytest
import torch

from pmg_kedro.components.data.item_terms import decade, item_terms, items_by_id
from pmg_kedro.components.data.prompts import parse_keywords
from pmg_kedro.components.method.keyword_adapter import (
    ADAPTER_KIND,
    AdapterLeakError,
    adapted_llm,
    check_not_trained_on,
)
from pmg_kedro.components.method.keyword_adapter_examples import (
    WindowSettings,
    answer_terms,
    behavior_windows,
    build_examples,
    preference_messages,
    train_sequences,
)
from pmg_kedro.components.method.keyword_adapter_training import (
    AdapterTraining,
    _collate,
    _collate_shared,
    answer_loss,
    sample_examples,
    shared_answer_loss,
    split_validation_users,
    tokenize_examples,
    train_keyword_lora,
    window_groups,
)
from pmg_kedro.components.models.llm import LLM, GenerationSettings

from .tiny_llm import build_tiny_chat_llama

pytestmark = pytest.mark.usefixtures("one_thread")

KEYWORD_PARAMS = {
    "principle": "PRINCIPLE",
    "preference_template": "{principle}\n{history}\n{conversation}\nwhich {attribute} {examples} "
    "N={n_keywords}",
    "history_line": "- {text}",
    "conversation_template": "Chat: {conversation}",
    "answer_prefix": "Keywords:",
    "keywords_per_attribute": 3,
    "attributes": {"genre": "(kinds)", "age": "(eras)", "country": "(where)"},
    "generation": {"max_new_tokens": 8},
}
BEHAVIOR_PARAMS = {"captioner": {"template": "{title} ({year})"}, "history_text": "{item}"}


@pytest.fixture(scope="module")
def llm(tmp_path_factory) -> LLM:
    return LLM.from_pretrained(build_tiny_chat_llama(tmp_path_factory.mktemp("tiny_llama")))


@pytest.fixture()
def items():
    return pd.DataFrame(
        {
            "item_id": [str(i) for i in range(1, 8)],
            "title": ["A", "B", "C", "D", "E", "F", "G"],
            "year": [1995, 1988, 2001, 1999, None, 1994, 1972],
            "genres": [
                ["Comedy"],
                ["Drama", "Comedy"],
                ["Drama"],
                ["War"],
                ["(no genres listed)"],
                ["Drama", "War"],
                ["Western"],
            ],
        }
    )


def test_decade_and_item_terms(items):
    by_id = items_by_id(items)
    assert decade(1995) == "1990s" and decade("2001") == "2000s" and decade(None) is None
    assert item_terms(by_id.loc["2"], "year", "decade") == ["1980s"]
    assert item_terms(by_id.loc["5"], "year", "decade") == []  # no year: no term
    assert item_terms(by_id.loc["2"], "genres") == ["drama", "comedy"]
    with pytest.raises(ValueError, match="unknown transform 'century'"):
        item_terms(by_id.loc["2"], "year", "century")


def _interactions():
    # u1: 6 positives (1..6) then the target 7; u2 (evaluation): 3 items; a negative for u1.
    rows = [("u1", str(i), t, True) for t, i in enumerate([1, 2, 3, 4, 5, 6, 7])]
    rows += [("u1", "3", 3, False), ("u2", "1", 0, True), ("u2", "2", 1, True)]
    rows += [("u2", "3", 2, True)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "positive"])


HISTORIES = pd.DataFrame({"user_id": ["u1", "u2"], "history": [[], []], "target": ["7", "3"]})
SPLIT = pd.DataFrame({"user_id": ["u1", "u2"], "split": ["train", "evaluation"], "seed": 5})


def test_train_sequences_cut_the_target_and_skip_evaluation_users():
    sequences = train_sequences(_interactions(), HISTORIES, SPLIT, "positive", ["timestamp"])
    assert list(sequences) == ["u1"]  # u2 is an evaluation user
    assert sequences["u1"]["item_id"].tolist() == ["1", "2", "3", "4", "5", "6"]  # not 7


def test_train_sequences_refuse_a_split_from_other_data():
    histories = HISTORIES.assign(target=["6", "3"])
    with pytest.raises(ValueError, match=r"user u1: target '6' is not the last .*'7'"):
        train_sequences(_interactions(), histories, SPLIT, "positive", ["timestamp"])


def test_windows_show_at_most_n_items_and_answer_with_the_next_ones():
    sequences = train_sequences(_interactions(), HISTORIES, SPLIT, "positive", ["timestamp"])
    settings = WindowSettings(min_history=2, n_history=3, n_next=2, max_windows_per_user=None)
    windows = behavior_windows(sequences, settings)
    assert windows["window_end"].tolist() == [2, 3, 4, 5]
    assert windows["history"].tolist() == [
        ["1", "2"],
        ["1", "2", "3"],
        ["2", "3", "4"],
        ["3", "4", "5"],
    ]
    assert windows["next_items"].tolist() == [["3", "4"], ["4", "5"], ["5", "6"], ["6"]]
    capped = behavior_windows(sequences, WindowSettings(2, 3, 2, max_windows_per_user=2, seed=1))
    assert len(capped) == 2 and set(capped["window_end"]) <= {2, 3, 4, 5}
    again = behavior_windows(sequences, WindowSettings(2, 3, 2, max_windows_per_user=2, seed=1))
    assert capped["window_end"].tolist() == again["window_end"].tolist()  # seeded


def test_answer_terms_are_most_frequent_first_ties_in_order_seen(items):
    by_id = items_by_id(items)
    # drama x3 (2, 3, 6), comedy x1 (2), war x2 (4, 6): drama, war, comedy
    assert answer_terms(["2", "3", "4", "6"], by_id, "genres", None, 3) == [
        "drama",
        "war",
        "comedy",
    ]
    assert answer_terms(["2", "3", "4", "6"], by_id, "genres", None, 1) == ["drama"]
    assert answer_terms(["5"], by_id, "genres", None, 3, ignore=["(no genres listed)"]) == []
    assert answer_terms(["1", "4", "6", "2"], by_id, "year", "decade", 2) == ["1990s", "1980s"]


def test_examples_use_keyword_extractions_prompt_and_the_next_items_values(items):
    windows = pd.DataFrame(
        {
            "user_id": ["u1", "u1"],
            "window_end": [2, 3],
            "history": [["1", "2"], ["1", "2", "5"]],
            "history_messages": [["", ""], ["", "", ""]],
            "next_items": [["3", "6"], ["5"]],
        }
    )
    supervision = {
        "genre": {"column": "genres", "ignore": ["(no genres listed)"]},
        "age": {"column": "year", "transform": "decade", "top": 1},
    }
    examples, counts = build_examples(
        "movie", windows, items, supervision, KEYWORD_PARAMS, BEHAVIOR_PARAMS
    )
    # window 2 answers genre and age; window 3's next item has no genre and no year: nothing
    assert examples[["window_end", "attribute", "answer"]].values.tolist() == [
        [2, "genre", "drama, war"],
        [2, "age", "2000s"],  # top 1 of 2000s (item 3) and 1990s (item 6): first seen
    ]
    assert counts["left_out"] == ["country"]
    assert counts["windows_without_answer_per_attribute"] == {"genre": 1, "age": 1}
    expected = preference_messages(["A (1995.0)", "B (1988.0)"], "", KEYWORD_PARAMS, ["genre"])
    assert examples.loc[0, ["attribute", "message", "answer_prefix"]].tolist() == list(expected[0])
    assert "- A (1995.0)\n- B (1988.0)" in examples.loc[0, "message"]


def test_examples_refuse_an_attribute_the_prompts_do_not_ask(items):
    with pytest.raises(ValueError, match=r"attributes \['colour'\] are not asked"):
        build_examples(
            "movie",
            pd.DataFrame(columns=["user_id", "history", "history_messages", "next_items"]),
            items,
            {"colour": {"column": "genres"}},
            KEYWORD_PARAMS,
            BEHAVIOR_PARAMS,
        )


def _examples(n_users: int, scene: str = "movie", answer: str = "comedy , drama"):
    return pd.DataFrame(
        {
            "scene": scene,
            "user_id": [f"{scene}{u % n_users}" for u in range(3 * n_users)],
            "window_end": list(range(3 * n_users)),
            "attribute": "genre",
            "history": [["1"]] * (3 * n_users),
            "next_items": [["2"]] * (3 * n_users),
            "message": [f"the user likes {w} and war" for w in ["horror", "cat", "sad"] * n_users],
            "answer_prefix": "Keywords:",
            "answer": answer,
            "system_prompt": "",
        }
    )


def test_validation_users_are_held_out_per_scene():
    examples = pd.concat([_examples(5, "movie"), _examples(2, "costume")], ignore_index=True)
    train, held = split_validation_users(examples, n_users=3, seed=0)
    held_users = held.groupby("scene")["user_id"].nunique().to_dict()
    assert held_users == {"movie": 3, "costume": 1}  # one costume user still trains
    assert not set(train["user_id"]) & set(held["user_id"])
    assert len(train) + len(held) == len(examples)


def test_sampling_follows_the_scene_weights():
    examples = pd.concat([_examples(20, "movie"), _examples(20, "costume")], ignore_index=True)
    sampled = sample_examples(examples, 40, {"movie": 0.75, "costume": 0.25}, seed=0)
    assert sampled["scene"].value_counts().to_dict() == {"movie": 30, "costume": 10}
    assert len(sample_examples(examples, 500, None, seed=0)) == 120  # at most all of them


def test_tokens_are_the_generation_prompt_then_the_answer_and_eos(llm):
    example = _examples(1).iloc[:1]
    ((tokens, n_prompt),) = tokenize_examples(llm, example)
    prompt = llm.encode([llm.chat_prompt(example["message"].iloc[0]) + "Keywords:"])
    assert tokens[:n_prompt] == prompt["input_ids"][0].tolist()  # exactly what `generate` feeds
    answer = llm.tokenizer.convert_ids_to_tokens(tokens[n_prompt:])
    assert answer == ["comedy", ",", "drama", llm.tokenizer.eos_token]


def test_answer_loss_is_the_causal_lm_loss_on_the_answer_tokens_only(llm):
    examples = _examples(2)
    examples.loc[1, "message"] = "cat"  # a shorter prompt: right padding in the batch
    tokenized = tokenize_examples(llm, examples.iloc[:2])
    batch = _collate(tokenized, [0, 1], llm.tokenizer.pad_token_id)
    loss, n = answer_loss(llm.model, batch)
    labels = batch["input_ids"].masked_fill(~batch["answer_mask"], -100)
    with torch.no_grad():
        reference = llm.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels
        ).loss
    assert n == 8  # two answers of 3 tokens + EOS
    assert float(loss.detach()) / n == pytest.approx(float(reference), rel=1e-5)


def _window_examples():
    """Two windows (histories of different lengths), three attributes each."""
    rows = []
    for end, history in ((4, ["cat , sad", "war"]), (7, ["horror", "comedy", "drama , cry"])):
        for attribute, message, prefix in preference_messages(history, "", KEYWORD_PARAMS):
            rows.append(
                {"scene": "movie", "user_id": "u", "window_end": end, "attribute": attribute,
                 "message": message, "answer_prefix": prefix, "system_prompt": "",
                 "answer": {"genre": "comedy , war", "age": "dark", "country": "cat"}[attribute]}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_shared_prefix_loss_equals_the_loss_of_whole_sequences(llm):
    examples = _window_examples()
    tokenized = tokenize_examples(llm, examples)
    groups = window_groups(examples)
    assert groups == [[0, 1, 2], [3, 4, 5]]
    pad = llm.tokenizer.pad_token_id
    batch = _collate_shared(tokenized, groups, pad)
    # the history runs once per window: fewer tokens than six whole sequences
    run = int(batch["prefix_mask"].sum() + batch["attention_mask"].sum())
    assert run < sum(len(t) for t, _ in tokenized) * 0.7
    shared, n = shared_answer_loss(llm.model, batch)
    whole, m = answer_loss(llm.model, _collate(tokenized, list(range(6)), pad))
    assert n == m == sum(len(t) - p for t, p in tokenized)
    assert float(shared.detach()) == pytest.approx(float(whole.detach()), rel=1e-5)


def test_training_teaches_the_planted_answer_and_leaves_the_llm_untouched(llm):
    before = {k: v.clone() for k, v in llm.model.state_dict().items()}
    examples = _examples(4)
    settings = AdapterTraining(
        r=8, alpha=16, dropout=0.0, last_layers=None, steps=40, batch_size=4, lr=2e-2,
        warmup_steps=2, time_limit_minutes=5, log_every=10, seed=0, torch_threads=None,
        save_dtype="float32",
    )  # fmt: skip
    tensors, history = train_keyword_lora(llm, examples, _examples(1, answer="war"), settings)
    assert all(torch.equal(before[k], v) for k, v in llm.model.state_dict().items())
    assert history["steps_done"] == 40 and not history["stopped_by_time_limit"]
    assert history["loss_log"][-1]["loss"] < history["loss_log"][0]["loss"]
    assert all(".lora_A." in k or ".lora_B." in k for k in tensors)
    adapter = {
        "tensors": tensors,
        "metadata": {
            "kind": ADAPTER_KIND,
            "lora_config": history["lora_config"],
            "base_model": {"name": llm.name, "hidden_size": 32, "num_layers": 2},
        },
    }
    settings_g = GenerationSettings(max_new_tokens=6, repetition_penalty=1.0, batch_size=4)
    prompts = ["the user likes sad and war", "which movie poster does the user like"]
    answers = adapted_llm(llm, adapter).generate(prompts, settings_g, answer_prefix="Keywords:")
    assert [parse_keywords(a) for a in answers] == [["comedy", "drama"]] * 2
    zero_shot = llm.generate(prompts, settings_g, answer_prefix="Keywords:")
    assert [parse_keywords(a) for a in zero_shot] != [["comedy", "drama"]] * 2


def test_training_stops_at_the_time_limit(llm):
    settings = AdapterTraining(
        r=2, steps=5, batch_size=2, time_limit_minutes=0.0, torch_threads=None
    )
    _, history = train_keyword_lora(llm, _examples(2), _examples(1), settings)
    assert history["stopped_by_time_limit"] and history["steps_done"] == 0


def test_lora_config_puts_the_adapter_in_the_top_layers():
    config = AdapterTraining(r=4, alpha=8, last_layers=3).lora_config(num_layers=30)
    assert config["layers_to_transform"] == [27, 28, 29]
    assert "layers_to_transform" not in AdapterTraining(last_layers=None).lora_config(30)
    with pytest.raises(
        ValueError, match=r"keyword adapter training parameters: unknown key\(s\) 'rank'"
    ):
        AdapterTraining.from_params({"rank": 4})


def test_evaluating_a_user_the_adapter_trained_on_is_refused():
    metadata = {"trained_users": {"movie": ["7", "9"]}, "split_seed": {"movie": 2024}}
    check_not_trained_on(metadata, "movie", ["1", "2"], "here")
    check_not_trained_on(metadata, "costume", ["7"], "here")  # another scene's users
    with pytest.raises(AdapterLeakError, match=r"here: .*trained on 1 of these users .*\['9'\]"):
        check_not_trained_on(metadata, "movie", ["1", "9"], "here")


def test_an_untrained_or_foreign_adapter_is_refused(llm):
    with pytest.raises(ValueError, match="not a trained keyword adapter"):
        adapted_llm(llm, {"tensors": {}, "metadata": {"kind": f"{ADAPTER_KIND}_not_trained"}})
    foreign = {
        "tensors": {"x": torch.zeros(1)},
        "metadata": {
            "kind": ADAPTER_KIND,
            "base_model": {"name": "llama-2-7b", "hidden_size": 4096, "num_layers": 32},
        },
    }
    with pytest.raises(ValueError, match="a LoRA adapter only fits the model it was trained on"):
        adapted_llm(llm, foreign)
