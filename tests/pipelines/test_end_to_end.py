"""The default pipeline (everything but model_preparation) end to end in the `test` environment.

Asserts the protocol on what the run actually wrote: one disjoint user split per scene, nothing
that learns sees an evaluation user, the emoticon answer never reaches x^t / y / k^t, every
variant paired by (user, seed), z computed from d_p and d_t.
"""

import numpy as np
import pytest

from pmg_kedro.components.data.answer_masking import leaked_emoticons
from pmg_kedro.scenes import scene_conf

CONF = scene_conf("test")  # the environment of the run these tests read
SCENES = tuple(CONF["scenes"])


@pytest.fixture(scope="module")
def catalog(test_env_default_run, test_catalog):
    return test_catalog()


def _users(split, which):
    return set(split.loc[split["split"] == which, "user_id"])


@pytest.mark.parametrize("scene", SCENES)
def test_the_user_split_is_disjoint_and_nothing_learns_from_evaluation_users(catalog, scene):
    split = catalog.load(f"{scene}.user_split")
    histories = catalog.load(f"{scene}.histories")
    assert split["user_id"].is_unique and set(split["user_id"]) == set(histories["user_id"])
    evaluation, train = _users(split, "evaluation"), _users(split, "train")
    assert evaluation and train and not evaluation & train
    keywords = catalog.load(f"{scene}.preference_keywords")
    assert set(keywords.loc[keywords["purpose"] == "train", "user_id"]) <= train
    assert set(keywords.loc[keywords["purpose"] == "evaluation", "user_id"]) == evaluation
    examples = catalog.load(f"{scene}.soft_embedding_examples")
    model = catalog.load(f"{scene}.soft_embedding_model")
    requests = catalog.load(f"{scene}.generation_requests")
    assert set(requests["user_id"]) <= evaluation
    if catalog.load(f"{scene}.image_index").empty:
        assert "not_applicable" in model["metadata"] and examples.empty
        return
    trained_on = set(examples.loc[examples["split"] == "train", "user_id"])
    assert trained_on and trained_on <= train
    assert set(model["metadata"]["train_users"]) == trained_on
    # a training example's supervision image is its last history item; its text ends before it
    behavior = catalog.load(f"{scene}.behavior_texts").set_index(["user_id", "purpose"])
    full = histories.set_index("user_id")["history"]
    for row in examples[examples["split"] == "train"].itertuples():
        assert row.supervision_item == str(list(full[row.user_id])[-1])
        before = [str(i) for i in list(full[row.user_id])[:-1]]
        assert list(behavior.loc[(row.user_id, "train"), "history"]) == before
    embeddings = catalog.load(f"{scene}.soft_embeddings")
    n_tokens = model["tensors"]["mm_tokens"].shape[0]
    assert set(embeddings["tensors"]) == evaluation & set(requests["user_id"])
    assert all(t.shape == (n_tokens, 384) for t in embeddings["tensors"].values())


def test_the_emoticon_answer_never_reaches_the_target_side(catalog, project_root):
    import yaml

    conf = yaml.safe_load((project_root / "conf/base/parameters_ingestion.yml").read_text())
    emoticons = list(conf["emoticon"]["ingestion"]["emoticon_map"])
    behavior = catalog.load("emoticon.behavior_texts")
    target_keywords = catalog.load("emoticon.target_keywords")
    texts = [*behavior["target_text"], *behavior["conversation"]]
    texts += [*behavior["conversation_summary"], *target_keywords["raw_answer"]]
    texts += [", ".join(k) for k in target_keywords["keywords"]]
    assert texts and all(leaked_emoticons(t, emoticons) == [] for t in texts)


@pytest.mark.parametrize("scene", SCENES)
def test_every_variant_is_paired_by_user_and_seed(catalog, scene):
    requests = catalog.load(f"{scene}.generation_requests")
    report = catalog.load(f"{scene}.personalization_report")
    ablations = CONF["ablations"]
    pairs = None
    for variant in ablations:
        selections = catalog.load(f"{scene}.{variant}.selections")
        if variant in report["not_applicable"]:
            # only a variant whose inputs the scene lacks: soft embeddings (no item images), an
            # oracle (no hidden tastes), a category target (no category column), a placebo (one
            # evaluation user: nobody to take the preference of)
            why = report["not_applicable"][variant]
            assert selections.empty, variant
            preference = ablations[variant].get("preference")
            assert (
                (ablations[variant]["embeddings"] and "soft preference embeddings" in why)
                or (preference == "oracle" and "hidden tastes" in why)
                or (preference == "shuffled" and "2 evaluation users" in why)
                or (ablations[variant].get("target") == "category" and "category" in why)
            ), (variant, why)
            continue
        per_pair = selections.groupby(["user_id", "seed"])["chosen"].sum()
        assert per_pair.eq(1).all()
        assert pairs is None or set(per_pair.index) == pairs  # the same (user, seed) pairs
        pairs = set(per_pair.index)
        assert {u for u, _ in pairs} == set(requests["user_id"])
        assert {s for _, s in pairs} == set(report["seeds"]) and len(report["seeds"]) >= 2
        chosen = catalog.load(f"{scene}.{variant}.chosen_images")
        assert set(chosen) == {f"{u}/s{s}" for u, s in pairs}
        z = 0.5 * np.log(np.maximum(selections["d_p"], 1e-3))
        z += 0.5 * np.log(np.maximum(selections["d_t"], 1e-3))
        np.testing.assert_allclose(selections["z"], z, rtol=1e-6)
    assert set(catalog.load(f"{scene}.user_images")) == set(requests["user_id"])
    if "shuffled_pmg" not in report["not_applicable"]:  # the PLACEBO's donors: other users
        assert sorted(requests["shuffled_user"]) == sorted(requests["user_id"])
        assert (requests["shuffled_user"] != requests["user_id"]).all()
    if scene == "costume":  # SIMULATED users with hidden tastes, Fashion-MNIST classes
        ran = set(ablations) - set(report["not_applicable"])
        assert {
            "oracle_keywords",
            "category_pmg",
            "category_oracle_keywords",
            "shuffled_pmg",
        } <= ran


def test_costume_items_come_from_the_images_the_generator_never_saw(catalog):
    index = catalog.load("costume.image_index")
    assert index["image_path"].str.contains("t10k").all()
