"""embedding_training's wiring (each scene trains on its own examples with the shared frozen LLM and
generator) and the test environment's run: E_m for exactly the evaluation users, in the generator's
text space, trained on train users only; "not applicable" where items have no images."""

import pytest
import torch

from pmg_kedro.pipelines.embedding_training import create_pipeline
from pmg_kedro.scenes import scene_conf, scene_names
from tests.pipelines.wiring import foreign_inputs, nodes_by_name

SCENES = scene_names()


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


def test_the_saved_model_reproduces_the_evaluation_users_e_m(
    test_env_default_run, test_catalog, tmp_path
):
    """The `soft_embedding_model` file, loaded with `SoftPreferenceEmbedder.from_pretrained` around
    the same frozen LLM, gives the E_m the run stored for each evaluation user (its prompt), in
    batches of the node's size: with P-Tuning v2 prefixes, E_m depends on the left padding of its
    batch (prompt positions shift against the prefixes), so other batch sizes differ by ~1e-2."""
    from pmg_kedro.components.method.pmg import PMG
    from pmg_kedro.components.method.soft_embeddings import SoftPreferenceEmbedder
    from pmg_kedro.components.models.tensor_files import write_tensors

    catalog = test_catalog()
    scene = "costume"
    saved = catalog.load(f"{scene}.soft_embedding_model")
    write_tensors(tmp_path / "model.safetensors", saved["tensors"], saved["metadata"])
    llm = catalog.load("llm")
    embedder = SoftPreferenceEmbedder.from_pretrained(tmp_path / "model.safetensors", llm)
    examples = catalog.load(f"{scene}.soft_embedding_examples")
    evaluation = examples[examples["split"] == "evaluation"]
    pmg = PMG(catalog.load("generator"), llm=llm, embedder=embedder)
    batch = catalog.load("parameters")[scene]["embedding_training"]["training"]["batch_size"]
    users, prompts = evaluation["user_id"].tolist(), evaluation["prompt"].tolist()
    soft = pmg.soft_embeddings(users, prompts, batch_size=int(batch))
    stored = catalog.load(f"{scene}.soft_embeddings")["tensors"]
    assert soft.keys() == stored.keys()
    for user, e_m in soft.items():
        # equal up to float rounding of another thread count (other batch sizes: ~1e-2 apart)
        torch.testing.assert_close(e_m, stored[user].float(), rtol=1e-4, atol=1e-5)
