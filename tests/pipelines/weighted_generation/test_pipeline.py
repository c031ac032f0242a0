"""weighted_generation's wiring (every variant scores its own candidates against the scene's
requests, with its own ablation) and the test environment's run against the protocol: every
evaluation user, every seed, one choice per (user, seed), the same users in every variant."""

import pytest

from pmg_kedro.pipelines.weighted_generation import create_pipeline
from pmg_kedro.scenes import generation_variants, scene_names
from tests.pipelines.wiring import foreign_inputs, nodes_by_name

GENERATION_VARIANTS, SCENES = generation_variants(), scene_names()

SHARED = {"generator", "scorer", "params:ablations", "params:sharding"} | {
    f"params:ablations.{v}" for v in GENERATION_VARIANTS
}


def test_each_scene_reads_only_its_own_data_and_the_shared_models():
    assert foreign_inputs(create_pipeline(), SHARED) == []


@pytest.mark.parametrize("scene", SCENES)
def test_each_variant_generates_and_scores_its_own_candidates(scene):
    nodes = nodes_by_name(create_pipeline())
    for v in GENERATION_VARIANTS:
        generate, score = (
            nodes[f"{scene}.{v}.generate_candidates"],
            nodes[f"{scene}.{v}.score_candidates"],
        )
        assert generate.inputs == [
            f"{scene}.generation_requests",
            "generator",
            f"{scene}.soft_embeddings",
            f"params:{scene}.weighted_generation",
            f"params:ablations.{v}",
            "params:sharding",
        ]
        assert generate.outputs == [f"{scene}.{v}.candidates", f"{scene}.{v}.candidate_images"]
        assert score.inputs == [
            f"{scene}.{v}.candidates",
            f"{scene}.{v}.candidate_images",
            f"{scene}.generation_requests",
            "scorer",
            f"params:{scene}.weighted_generation",
            f"params:ablations.{v}",
            "params:sharding",
        ]
        assert score.outputs == [f"{scene}.{v}.selections", f"{scene}.{v}.chosen_images"]
    report = nodes[f"{scene}.summarize_personalization"]
    assert {f"{scene}.{v}.selections" for v in GENERATION_VARIANTS} <= set(report.inputs)


@pytest.mark.parametrize("scene", SCENES)
def test_the_run_generates_for_every_evaluation_user_and_seed(
    scene, test_env_default_run, test_catalog
):
    catalog = test_catalog()
    params = catalog.load("parameters")[scene]["weighted_generation"]
    split = catalog.load(f"{scene}.user_split")
    requests = catalog.load(f"{scene}.generation_requests")
    evaluation = set(split.loc[split["split"] == "evaluation", "user_id"])
    assert set(requests["user_id"]) == evaluation  # every evaluation user, no other
    ran = []
    for v in GENERATION_VARIANTS:
        table = catalog.load(f"{scene}.{v}.selections")
        if table.empty:
            continue
        ran.append(v)
        assert set(table["user_id"]) == evaluation, v
        assert sorted(table["seed"].unique()) == sorted(params["seeds"]), v
        assert table.groupby(["user_id", "seed"])["chosen"].sum().eq(1).all(), v
    assert {"pmg", "without_both", "target_best_of_n"} & set(ran)
    user_images = catalog.load(f"{scene}.user_images")
    assert set(user_images) == evaluation
