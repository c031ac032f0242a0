"""weighted_generation nodes on a tiny random generator and a random-head TinyClip scorer."""

import numpy as np
import pandas as pd
import pytest
import torch

from pmg_kedro.pipelines.weighted_generation import nodes

PARAMS = {
    "seed": 3,
    "max_users": 10,
    "mode": "embedding_scale",
    "steps": 3,
    "guidance_scale": 1.5,
    "weight_ratios": [[0, 4], [1, 3], [2, 2], [3, 1], [4, 0]],
    "weight_total": 2.0,
    "alpha": 0.5,
    "cosine_floor": 0.001,
    "candidates_per_batch": 40,
    "baseline_variant": "without_both",
    "figure_users": 2,
}
PMG = {"name": "pmg", "keywords": True, "embeddings": True}
BASELINE = {"name": "without_both", "keywords": False, "embeddings": False}


@pytest.fixture(scope="module")
def scorer():
    from pmg_kedro.components.scorer import TinyClip

    torch.manual_seed(0)
    return TinyClip(dim=16, hidden=32, image_size=32).eval()


@pytest.fixture()
def requests_table():
    histories = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3"],
            "history": [["a"], ["b"], ["c"]],
            "target": ["t1", "t2", "t3"],
        }
    )
    k_p = pd.DataFrame({"user_id": ["u1", "u2"], "keywords": [["cat", "cute"], ["ship", "blue"]]})
    k_t = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "keywords": [["happy"], ["sad"], ["x"]]})
    return nodes.build_generation_requests(histories, k_p, k_t, PARAMS)


@pytest.fixture()
def soft():
    torch.manual_seed(1)
    return {"tensors": {"u1": torch.randn(2, 384), "u2": torch.randn(2, 384)}, "metadata": {}}


def test_requests_keep_users_with_both_keyword_sets(requests_table):
    assert requests_table["user_id"].tolist() == ["u1", "u2"]
    assert requests_table["preference_text"].tolist() == ["cat, cute", "ship, blue"]
    assert requests_table["target_text"].tolist() == ["happy", "sad"]


def test_the_whole_grid_of_every_user_is_one_denoising_call(tiny_generator, requests_table, soft):
    calls = []
    original = tiny_generator.generate

    def counting(conditions, weights, **kw):
        calls.append(len(conditions))
        return original(conditions, weights, **kw)

    tiny_generator.generate = counting
    try:
        table, images = nodes.generate_candidates(requests_table, tiny_generator, PARAMS, PMG, soft)
    finally:
        tiny_generator.generate = original
    assert calls == [10]  # 2 users x 5 weight pairs, one batch
    assert len(table) == 10 and set(images) == set(table["image_key"])
    assert table.groupby("user_id")["w_p"].apply(list).to_dict() == {
        "u1": [0.0, 0.5, 1.0, 1.5, 2.0],
        "u2": [0.0, 0.5, 1.0, 1.5, 2.0],
    }
    assert images["u1/wp0.5_wt1.5"].size == (8, 8)


def test_generation_is_deterministic_and_weights_change_the_image(
    tiny_generator, requests_table, soft
):
    _, first = nodes.generate_candidates(requests_table, tiny_generator, PARAMS, PMG, soft)
    _, second = nodes.generate_candidates(requests_table, tiny_generator, PARAMS, PMG, soft)
    for key in first:
        assert np.array_equal(np.asarray(first[key]), np.asarray(second[key]))
    assert not np.array_equal(np.asarray(first["u1/wp0_wt2"]), np.asarray(first["u1/wp2_wt0"]))


def test_baseline_has_one_target_only_candidate_per_user(tiny_generator, requests_table):
    table, _ = nodes.generate_candidates(requests_table, tiny_generator, PARAMS, BASELINE)
    assert table[["user_id", "w_p", "w_t"]].values.tolist() == [["u1", 0.0, 1.0], ["u2", 0.0, 1.0]]


def test_a_variant_with_embeddings_needs_them(tiny_generator, requests_table):
    with pytest.raises(ValueError, match="needs soft embeddings"):
        nodes.generate_candidates(requests_table, tiny_generator, PARAMS, PMG, None)


def test_scoring_picks_one_argmax_z_per_user(tiny_generator, requests_table, soft, scorer):
    table, images = nodes.generate_candidates(requests_table, tiny_generator, PARAMS, PMG, soft)
    scored, chosen = nodes.score_candidates(table, images, requests_table, scorer, PARAMS)
    assert scored.groupby("user_id")["chosen"].sum().tolist() == [1, 1]
    assert set(chosen) == {"u1", "u2"}
    expected = 0.5 * np.log(np.maximum(scored["d_p"], 1e-3)) + 0.5 * np.log(
        np.maximum(scored["d_t"], 1e-3)
    )
    np.testing.assert_allclose(scored["z"], expected)
    for user, group in scored.groupby("user_id"):
        best = group.loc[group["z"].idxmax(), "image_key"]
        assert np.array_equal(np.asarray(chosen[user]), np.asarray(images[best]))
    assert scored["d_p"].between(-1, 1).all() and scored["d_t"].between(-1, 1).all()

    baseline_table, baseline_images = nodes.generate_candidates(
        requests_table, tiny_generator, PARAMS, BASELINE
    )
    baseline, _ = nodes.score_candidates(
        baseline_table, baseline_images, requests_table, scorer, PARAMS
    )
    report = nodes.summarize_personalization(PARAMS, scored, baseline)
    rows = {r["variant"]: r for r in report["variants"]}
    assert rows["pmg"]["d_p"] == pytest.approx(scored[scored["chosen"]]["d_p"].mean(), abs=1e-5)
    gain = report["versus_baseline"]["pmg"]["d_p_gain"]
    assert gain == pytest.approx(rows["pmg"]["d_p"] - rows["without_both"]["d_p"], abs=1e-4)
    figure = nodes.plot_weight_strips(scored, images, PARAMS)
    assert len(figure.axes) == 2 * 5


def test_user_only_images_use_the_preference_condition(tiny_generator, requests_table, soft):
    images = nodes.generate_user_images(requests_table, tiny_generator, PARAMS, soft)
    assert set(images) == {"u1", "u2"}
    keywords_only = nodes.generate_user_images(requests_table, tiny_generator, PARAMS)
    assert not np.array_equal(np.asarray(images["u1"]), np.asarray(keywords_only["u1"]))
