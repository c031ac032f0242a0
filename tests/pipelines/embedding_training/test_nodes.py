"""embedding_training nodes (paper §3.3) on tiny random models and the protocol's rows.

Pins what the protocol needs: train examples come from training rows only (history[:-1], the last
history item supervises), evaluation users only score, and a scene without images writes
"not applicable" records.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pmg_kedro.components.method.soft_embeddings import paired_difference
from pmg_kedro.components.models.llm import LLM
from pmg_kedro.components.reporting.stats import minimum_detectable_effect
from pmg_kedro.pipelines.embedding_training import nodes

PARAMS = {
    "seed": 0,
    "evaluation_seeds": [0, 1],
    "prompt_template": "Items: {items}.",
    "training": {"steps": 2, "batch_size": 2, "learning_rate": 0.01, "log_every": 1},
    "sweep": "two",
    "sweeps": {
        "two": [{"n_tokens": 2, "n_prefixes": 2}, {"n_tokens": 3, "n_prefixes": 0}],
    },
}


@pytest.fixture()
def tables(tmp_path):
    ids = ["a", "b", "c", "d", "e", "f"]
    rng = np.random.default_rng(0)
    paths = []
    for i in ids:
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    items = pd.DataFrame({"item_id": ids, "caption": [f"caption {i}" for i in ids]})
    index = pd.DataFrame({"item_id": ids, "image_path": paths, "image_offset": -1})
    behavior = pd.DataFrame(
        {
            "user_id": ["t1", "t2", "e1", "e2"],
            "purpose": ["train", "train", "evaluation", "evaluation"],
            "history": [["a"], ["b", "c"], ["a", "b"], ["c"]],
            "target": ["", "", "f", "e"],
            "supervision_item": ["d", "e", "", ""],
        }
    )
    keywords = pd.DataFrame(
        {
            "user_id": ["t1", "t2", "e1", "e2"],
            "purpose": ["train", "train", "evaluation", "evaluation"],
            "keywords": [["k1"], ["k2"], ["k3"], ["k4"]],
        }
    )
    return behavior, keywords, items, index


def test_examples_train_on_training_rows_and_score_evaluation_targets(tables):
    behavior, keywords, items, index = tables
    examples = nodes.build_soft_embedding_examples(behavior, keywords, items, index, PARAMS)
    by_user = examples.set_index("user_id")
    assert by_user["split"].to_dict() == {
        "t1": "train",
        "t2": "train",
        "e1": "evaluation",
        "e2": "evaluation",
    }
    assert by_user.loc["t1", "supervision_item"] == "d"  # the training row's supervision item
    assert by_user.loc["t1", "prompt"] == "Items: caption a."  # never the supervision's caption
    assert by_user.loc["t2", "keywords_text"] == "k2"
    assert by_user.loc["e1", "supervision_item"] == "f"  # evaluation: the held-out target
    assert by_user.loc["e1", "prompt"] == "Items: caption a; caption b."
    assert by_user.loc["e1", "image_path"].endswith("f.png")


def test_no_item_images_give_an_empty_table(tables):
    behavior, keywords, items, index = tables
    examples = nodes.build_soft_embedding_examples(behavior, keywords, items, index[:0], PARAMS)
    assert examples.empty and "prompt" in examples.columns


@pytest.fixture()
def llm(tiny_llama):
    return LLM.from_pretrained(tiny_llama)


def test_training_sees_only_train_users_and_embeds_evaluation_users(
    tables, llm, tiny_generator, monkeypatch, one_thread
):
    behavior, keywords, items, index = tables
    examples = nodes.build_soft_embedding_examples(behavior, keywords, items, index, PARAMS)
    seen = []
    original = nodes.train_soft_embeddings

    def spy(model, generator, prompts, keyword_texts, images, settings):
        seen.append((list(prompts), list(keyword_texts), images.clone()))
        return original(model, generator, prompts, keyword_texts, images, settings)

    monkeypatch.setattr(nodes, "train_soft_embeddings", spy)
    model, log, report, _, embeddings, sweep = nodes.train_soft_preference_embeddings(
        examples, llm, tiny_generator, None, PARAMS
    )
    train = examples[examples["split"] == "train"]
    expected = torch.from_numpy(nodes.load_images(train.to_dict("records"), 8))
    for prompts, keyword_texts, images in seen:
        assert prompts == train["prompt"].tolist() and keyword_texts == ["k1", "k2"]
        torch.testing.assert_close(images, expected)
    assert model["metadata"]["train_users"] == ["t1", "t2"]
    assert set(embeddings["tensors"]) == {"e1", "e2"}  # evaluation users only
    assert embeddings["tensors"]["e1"].shape == (2, 384)  # the first sweep entry: L = 2
    assert set(sweep["tensors"]) == {
        f"{v}/{u}" for v in ("L2_ptuning", "L3_no_ptuning") for u in ("e1", "e2")
    }
    assert [r["sweep_entry"] for r in report["sweep_entries"]] == ["L2_ptuning", "L3_no_ptuning"]
    assert report["evaluation_users"] == 2 and report["train_users"] == 2
    row = report["sweep_entries"][0]["pmg_minus_without_embeddings"]
    assert row["users"] == 2 and row["pairs"] == 4
    assert "minimum detectable effect" in report["mde_note"] and "mde" in row
    assert set(log["sweep_entry"]) == {"L2_ptuning", "L3_no_ptuning"} and len(log) == 4


def test_a_scene_without_images_gets_not_applicable_records(llm, tiny_generator):
    empty = pd.DataFrame(columns=["user_id", "split", "prompt"])
    model, log, report, _, embeddings, sweep = nodes.train_soft_preference_embeddings(
        empty, llm, tiny_generator, None, PARAMS
    )
    assert "no images" in report["not_applicable"]
    assert model["tensors"] == {} and "not_applicable" in embeddings["metadata"]
    assert log.empty and sweep["tensors"] == {}


def test_a_neither_sweep_entry_carries_the_mde_of_its_per_user_differences():
    rng = np.random.default_rng(6)
    baseline = rng.uniform(0.2, 0.4, size=(12, 2))  # (users, seeds) losses of E_k alone
    pmg = baseline + rng.normal(0, 0.01, size=(12, 2))
    rows = [{"pmg_minus_without_embeddings": paired_difference(pmg, baseline)}]
    versus = nodes._with_verdicts(rows)[0]["pmg_minus_without_embeddings"]
    assert versus["verdict"] == "neither"
    per_user = (pmg - baseline).mean(axis=1)
    assert versus["mde"] == pytest.approx(minimum_detectable_effect(per_user)["mde"])
    assert (versus["mde_alpha"], versus["mde_power"]) == (0.05, 0.8)


def test_the_first_sweep_entry_resumes_from_the_checkpoint(tables, llm, tiny_generator, one_thread):
    """A step at learning rate 0 leaves the start: the checkpoint (a fresh start is not it)."""
    behavior, keywords, items, index = tables
    examples = nodes.build_soft_embedding_examples(behavior, keywords, items, index, PARAMS)
    trained = nodes.train_soft_preference_embeddings(examples, llm, tiny_generator, None, PARAMS)[0]
    no_steps = {**PARAMS, "training": {**PARAMS["training"], "steps": 1, "learning_rate": 0.0}}
    fresh = nodes.train_soft_preference_embeddings(examples, llm, tiny_generator, None, no_steps)
    resumed = nodes.train_soft_preference_embeddings(
        examples, llm, tiny_generator, trained, no_steps
    )
    assert set(resumed[0]["tensors"]) == set(trained["tensors"])
    for name, tensor in trained["tensors"].items():
        assert torch.equal(resumed[0]["tensors"][name], tensor), name
    assert not all(torch.equal(fresh[0]["tensors"][n], t) for n, t in trained["tensors"].items())
    # the other sweep entries (other shapes) start afresh: as without the checkpoint
    for key, tensor in fresh[5]["tensors"].items():
        if not key.startswith(resumed[0]["metadata"]["sweep_entry"] + "/"):
            assert torch.equal(resumed[5]["tensors"][key], tensor), key
