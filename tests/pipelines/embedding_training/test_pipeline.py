"""embedding_training's wiring (each scene trains on its own examples with the shared frozen LLM and
generator) and the test environment's run: E_m for exactly the evaluation users, in the generator's
text space, trained on train users only; "not applicable" where items have no images."""

import pytest

from pmg_kedro.pipelines.embedding_training import create_pipeline
from pmg_kedro.scenes import SCENES, scene_conf
from tests.pipelines.wiring import foreign_inputs, nodes_by_name


def test_each_scene_reads_only_its_own_data_and_the_shared_models():
    assert foreign_inputs(create_pipeline(), {"llm", "generator"}) == []


@pytest.mark.parametrize("scene", SCENES)
def test_training_reads_the_scenes_examples_built_from_its_keywords(scene):
    nodes = nodes_by_name(create_pipeline())
    build = nodes[f"{scene}.build_soft_embedding_examples"]
    train = nodes[f"{scene}.train_soft_preference_embeddings"]
    assert f"{scene}.preference_keywords" in build.inputs
    assert f"{scene}.behavior_texts" in build.inputs
    assert train.inputs[:3] == [f"{scene}.soft_embedding_examples", "llm", "generator"]
    assert f"{scene}.soft_embeddings" in train.outputs


@pytest.mark.parametrize("scene", SCENES)
def test_the_run_trains_on_train_users_and_embeds_evaluation_users(
    scene, test_env_default_run, test_catalog
):
    catalog = test_catalog()
    split = catalog.load(f"{scene}.user_split")
    evaluation = set(split.loc[split["split"] == "evaluation", "user_id"])
    train = set(split.loc[split["split"] == "train", "user_id"])
    embeddings = catalog.load(f"{scene}.soft_embeddings")
    if scene_conf()["scenes"][scene]["item_images"] != "required":
        assert embeddings["tensors"] == {} and "not_applicable" in embeddings["metadata"]
        return
    examples = catalog.load(f"{scene}.soft_embedding_examples")
    trained_on = set(examples.loc[examples["split"] == "train", "user_id"])
    assert trained_on and trained_on <= train  # no evaluation user supervises training
    assert set(embeddings["tensors"]) == evaluation
    dim = catalog.load("generator").text_encoder.dim
    n_tokens = {tuple(t.shape) for t in embeddings["tensors"].values()}
    assert len(n_tokens) == 1 and next(iter(n_tokens))[1] == dim
