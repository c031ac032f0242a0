"""recommendation's wiring (§4.5: user images from each user's TRAINING interactions, the experiment
reading every feature set) and the test environment's Table 3 run: every setting under every seed,
user images for the experiment's users."""

import pytest

from pmg_kedro.pipelines.recommendation import create_pipeline
from pmg_kedro.scenes import scenes_where
from tests.pipelines.wiring import foreign_inputs, nodes_by_name

SCENES = scenes_where("recommendation")


def test_each_scene_reads_only_its_own_data_and_the_shared_models():
    assert foreign_inputs(create_pipeline(), {"llm", "generator", "params:sharding"}) == []


@pytest.mark.parametrize("scene", SCENES)
def test_user_images_come_from_the_training_split_keywords(scene):
    nodes = nodes_by_name(create_pipeline())
    keywords = nodes[f"{scene}.extract_recommendation_keywords"]
    assert keywords.inputs[:3] == [f"{scene}.recommendation_split", f"{scene}.items", "llm"]
    images = nodes[f"{scene}.generate_recommendation_user_images"]
    assert images.inputs[:2] == [f"{scene}.recommendation_user_keywords", "generator"]
    # Oracle-keywords-user: the same node function, same generator and parameters, on the
    # hidden taste's keywords (from the users table), never on the LLM's
    oracle = nodes[f"{scene}.generate_recommendation_oracle_user_images"]
    assert oracle.func is images.func
    assert oracle.inputs == [f"{scene}.recommendation_oracle_keywords", *images.inputs[1:]]
    assert nodes[f"{scene}.oracle_recommendation_keywords"].inputs == [
        f"{scene}.recommendation_split",
        f"{scene}.users",
    ]
    experiment = nodes[f"{scene}.run_recommendation_experiment"]
    assert f"{scene}.recommendation_split" in experiment.inputs
    assert experiment.outputs == [f"{scene}.recommendation_results"]


@pytest.mark.parametrize("scene", SCENES)
def test_the_run_reports_every_setting_under_every_seed(scene, test_env_default_run, test_catalog):
    catalog = test_catalog()
    params = catalog.load("parameters")[scene]["recommendation"]
    results = catalog.load(f"{scene}.recommendation_results")
    settings = {"no_image", "item_only", "averaged_user", "generated_user"}
    settings |= {"shuffled_user", "generated_items_user"}  # the controls of issue 22
    settings |= {"oracle_user"}  # the LEAK of issue 29, and its ORACLE keywords where SIMULATED
    settings |= {"oracle_keywords_user"} if scene == "costume" else set()
    assert settings <= set(results["setting"])
    for setting in settings:
        seeds = results.loc[results["setting"] == setting, "seed"]
        assert sorted(seeds) == sorted(params["seeds"]), setting
    assert (
        results[["precision@10", "recall@10", "ndcg@10"]]
        .apply(lambda c: c.between(0, 1))
        .all()
        .all()
    )


@pytest.mark.parametrize("scene", SCENES)
def test_the_run_compares_generated_user_with_both_controls(
    scene, test_env_default_run, test_catalog
):
    catalog = test_catalog()
    features = catalog.load(f"{scene}.recommendation_user_features")
    by = {s: g.set_index("user_id")["features"] for s, g in features.groupby("setting")}
    assert set(by["shuffled_user"].index) == set(by["generated_user"].index)
    report = catalog.load(f"{scene}.recommendation_report")
    pairs = {(p["a"], p["b"]): p for p in report["paired_differences"]["pairs"]}
    for control in ("averaged_user", "shuffled_user", "generated_items_user"):
        metrics = pairs[("generated_user", control)]["metrics"]
        assert set(metrics) == set(report["settings"]["no_image"]) - {
            "label",
            "seeds",
            "mean_epochs",
            "mean_seconds",
        }
        assert all("holm_p" in m and "verdict" in m for m in metrics.values())
    assert set(report["controls"]) == {"shuffled_user", "generated_items_user"}
    markdown = catalog.load(f"{scene}.recommendation_report_markdown")
    assert "Generated-user - Shuffled-user" in markdown
    assert "Generated-user - Generated-items-user" in markdown
    summary = catalog.load(f"{scene}.table3_summary")
    assert "generated_user-shuffled_user" in summary["paired_differences"]
    assert {"shuffled_user", "generated_items_user", "oracle_user"} <= set(summary["settings"])
    assert "oracle_user-averaged_user" in summary["sensitivity"]["paired_differences"]
    assert markdown.splitlines()[0] == report["sensitivity"]["line"]
    assert "LEAK: sensitivity check" in report["settings"]["oracle_user"]["label"]
