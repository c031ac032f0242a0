"""weighted_generation nodes on a tiny random generator and a random-head TinyClip scorer.

Besides the mechanics (one call per chunk, determinism) these pin down what the protocol needs:
only evaluation users, noise that does not depend on chunking, zero weights dropping their
condition, d_p scored against k^p and d_t against k^t, the controls' candidate counts.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from pmg_kedro.components.data.images import to_array
from pmg_kedro.components.data.splits import derangement
from pmg_kedro.components.method.pmg import PMG, PMGSettings, Variant
from pmg_kedro.pipelines.weighted_generation import nodes
from pmg_kedro.scenes import scene_conf

PARAMS = {
    "seeds": [3, 4],
    "mode": "embedding_scale",
    "sampler": "ddim",
    "steps": 3,
    "guidance_scale": 1.5,
    "weight_ratios": [[0, 4], [1, 3], [2, 2], [3, 1], [4, 0]],
    "weight_total": 2.0,
    "alpha": 0.5,
    "cosine_floor": 0.001,
    "candidates_per_batch": 40,
    "score_batch_size": 7,
    "max_condition_tokens": None,
    "figure_users": 2,
}
ABLATIONS = scene_conf()["ablations"]


@pytest.fixture(scope="module")
def scorer():
    from pmg_kedro.components.models.scorer import TinyClip

    torch.manual_seed(0)
    return TinyClip(dim=16, hidden=32, image_size=32).eval()


@pytest.fixture()
def requests_table():
    histories = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4"],
            "history": [["a"], ["b"], ["c"], ["d"]],
            "target": ["t1", "t2", "t3", "t4"],
        }
    )
    split = pd.DataFrame(
        {"user_id": ["u1", "u2", "u3", "u4"], "split": ["evaluation"] * 3 + ["train"]}
    )
    k_p = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u4"],
            "purpose": ["evaluation", "evaluation", "train"],
            "keywords": [["cat", "cute"], ["ship", "blue"], ["train", "only"]],
        }
    )
    k_t = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "keywords": [["happy"], ["sad"], ["x"]]})
    return nodes.build_generation_requests(histories, split, k_p, k_t, ITEMS, USERS, PARAMS)


# The targets' categories differ from their captions, and the users' hidden tastes from both.
ITEMS = pd.DataFrame(
    {
        "item_id": ["t1", "t2", "t3", "t4"],
        "class_name": ["dress", "bag", "coat", "sandal"],
        "caption": ["light patterned dress", "dark plain bag", "x", "y"],
    }
)
USERS = pd.DataFrame(
    {
        "user_id": ["u1", "u2", "u3", "u4"],
        "simulated": True,
        "taste_classes": [["bag", "coat"], ["dress", "shirt"], ["bag", "coat"], ["bag", "coat"]],
        "taste_brightness": ["dark", "light", "dark", "dark"],
        "taste_texture": ["plain", "patterned", "plain", "plain"],
    }
)


@pytest.fixture()
def soft():
    torch.manual_seed(1)
    return {"tensors": {"u1": torch.randn(2, 384), "u2": torch.randn(2, 384)}, "metadata": {}}


def test_requests_are_the_evaluation_users_with_both_keyword_sets(requests_table):
    assert requests_table["user_id"].tolist() == ["u1", "u2"]  # u3: no k^p; u4: a train user
    assert requests_table["preference_text"].tolist() == ["cat, cute", "ship, blue"]
    assert requests_table["target_text"].tolist() == ["happy", "sad"]


def test_requests_carry_the_users_oracle_taste_and_the_targets_category():
    histories = pd.DataFrame(
        {"user_id": ["u1", "u2"], "history": [["a"], ["b"]], "target": ["t1", "t2"]}
    )
    split = pd.DataFrame({"user_id": ["u1", "u2"], "split": ["evaluation"] * 2})
    k_p = pd.DataFrame(
        {"user_id": ["u1", "u2"], "purpose": ["evaluation"] * 2, "keywords": [["llm"], ["llm"]]}
    )
    k_t = pd.DataFrame({"user_id": ["u1", "u2"], "keywords": [["cap"], ["cap"]]})
    params = {**PARAMS, "category_column": "class_name"}
    table = nodes.build_generation_requests(histories, split, k_p, k_t, ITEMS, USERS, params)
    # the USER's hidden taste (u1: dark plain bag/coat), not the target's caption (light ... dress)
    assert table["oracle_text"].tolist() == [
        "dark, plain, bag, coat",
        "light, patterned, dress, shirt",
    ]
    assert table["category_text"].tolist() == ["dress", "bag"]  # the target's class only
    real_users = USERS.drop(columns=["taste_classes", "taste_brightness", "taste_texture"])
    plain = nodes.build_generation_requests(histories, split, k_p, k_t, ITEMS, real_users, PARAMS)
    assert plain["oracle_text"].tolist() == ["", ""] and plain["category_text"].tolist() == ["", ""]
    pog_items = ITEMS.drop(columns="class_name")  # POG items: no category column
    pog = nodes.build_generation_requests(histories, split, k_p, k_t, pog_items, USERS, params)
    assert pog["category_text"].tolist() == ["", ""]


def _six_users(params):
    users = [f"u{i}" for i in range(6)]
    histories = pd.DataFrame(
        {"user_id": users, "history": [["a"]] * 6, "target": [f"t{i}" for i in range(6)]}
    )
    split = pd.DataFrame({"user_id": users, "split": ["evaluation"] * 6})
    k_p = pd.DataFrame(
        {
            "user_id": users,
            "purpose": ["evaluation"] * 6,
            "keywords": [[f"taste {i}", "red"] for i in range(6)],
        }
    )
    k_t = pd.DataFrame({"user_id": users, "keywords": [["cap"]] * 6})
    return nodes.build_generation_requests(histories, split, k_p, k_t, ITEMS, USERS, params)


def test_the_placebo_donor_is_another_evaluation_user_drawn_by_the_seed():
    """shuffled_user: a seeded derangement of the evaluation users in their order (Table 3's
    Shuffled-user); shuffled_text: the donor's k^p. No seed or one user: no donor."""
    table = _six_users({**PARAMS, "placebo_seed": 11})
    users = table["user_id"].tolist()
    assert sorted(table["shuffled_user"]) == sorted(users)  # every user donates exactly once
    assert (table["shuffled_user"] != table["user_id"]).all()  # no user keeps its own
    assert table["shuffled_user"].tolist() == [users[d] for d in derangement(6, 11)]
    own = dict(zip(table["user_id"], table["preference_text"], strict=True))
    assert table["shuffled_text"].tolist() == [own[d] for d in table["shuffled_user"]]
    assert table["shuffled_text"].tolist() != table["preference_text"].tolist()
    again = _six_users({**PARAMS, "placebo_seed": 11})
    assert again["shuffled_user"].tolist() == table["shuffled_user"].tolist()
    other = _six_users({**PARAMS, "placebo_seed": 12})
    assert other["shuffled_user"].tolist() != table["shuffled_user"].tolist()
    unseeded = _six_users(PARAMS)
    assert (unseeded["shuffled_user"] == "").all() and (unseeded["shuffled_text"] == "").all()
    histories = pd.DataFrame({"user_id": ["u1"], "history": [["a"]], "target": ["t1"]})
    split = pd.DataFrame({"user_id": ["u1"], "split": ["evaluation"]})
    k_p = pd.DataFrame({"user_id": ["u1"], "purpose": ["evaluation"], "keywords": [["x"]]})
    k_t = pd.DataFrame({"user_id": ["u1"], "keywords": [["y"]]})
    one = nodes.build_generation_requests(
        histories, split, k_p, k_t, ITEMS, USERS, {**PARAMS, "placebo_seed": 11}
    )
    assert one["shuffled_user"].tolist() == [""] and one["shuffled_text"].tolist() == [""]
    demo = nodes.build_generation_requests(histories, split, k_p, k_t)  # the demo's one request
    assert demo["shuffled_user"].tolist() == [""]


def test_the_placebo_scores_d_p_against_the_donors_keywords(tiny_generator, soft):
    """shuffled_pmg: u1's d_p is the cosine with u2's k^p (and the reverse), d_t its own k^t;
    one user alone gets "not applicable"."""
    requests = pd.DataFrame(
        {
            "user_id": ["u1", "u2"],
            "target": ["t1", "t2"],
            "preference_text": ["cat, cute", "ship, blue"],
            "target_text": ["happy", "sad"],
            "shuffled_user": ["u2", "u1"],
            "shuffled_text": ["ship, blue", "cat, cute"],
        }
    )

    class Scorer:
        def paired_scores(self, images, text_lists, batch_size=64):
            value = {"cat, cute": 0.9, "ship, blue": 0.3, "happy": 0.2, "sad": 0.6}
            return torch.tensor([[value[t] for t in texts] for texts in text_lists])

    def scored(variant, table=requests):
        candidates, images = nodes.generate_candidates(
            table, tiny_generator, soft, PARAMS, ABLATIONS[variant]
        )
        out = nodes.score_candidates(
            candidates, images, table, Scorer(), PARAMS, ABLATIONS[variant]
        )[0]
        return out.groupby("user_id")[["d_p", "d_t"]].mean()

    assert np.allclose(scored("pmg").loc[["u1", "u2"]], [[0.9, 0.2], [0.3, 0.6]])
    assert np.allclose(scored("shuffled_pmg").loc[["u1", "u2"]], [[0.3, 0.2], [0.9, 0.6]])
    alone = requests.iloc[:1].assign(shuffled_user="", shuffled_text="")
    table, images = nodes.generate_candidates(
        alone, tiny_generator, soft, PARAMS, ABLATIONS["shuffled_pmg"]
    )
    assert table.empty and images == {}
    report = nodes.summarize_personalization(
        {**PARAMS, "placebo_seed": 5}, ABLATIONS, soft, alone, shuffled_pmg=table
    )
    assert "at least 2 evaluation users" in report["not_applicable"]["shuffled_pmg"]
    assert report["placebo_seed"] == 5


def test_oracle_and_category_variants_condition_and_score_on_their_own_texts(tiny_generator, soft):
    """The oracle variant's d_p is scored against the hidden taste, a category variant's d_t
    against the category; where the scene has neither they are "not applicable"."""
    requests = pd.DataFrame(
        {
            "user_id": ["u1"],
            "target": ["t1"],
            "preference_text": ["llm words"],
            "target_text": ["happy"],
            "oracle_text": ["cat, cute"],
            "category_text": ["dress"],
        }
    )

    class Scorer:
        def paired_scores(self, images, text_lists, batch_size=64):
            value = {"cat, cute": 0.9, "llm words": 0.4, "happy": 0.2, "dress": 0.7}
            return torch.tensor([[value.get(t, 0.1) for t in texts] for texts in text_lists])

    def scored(variant):
        table, images = nodes.generate_candidates(
            requests, tiny_generator, soft, PARAMS, ABLATIONS[variant]
        )
        return nodes.score_candidates(
            table, images, requests, Scorer(), PARAMS, ABLATIONS[variant]
        )[0]

    assert np.allclose(scored("pmg")[["d_p", "d_t"]], [0.4, 0.2])
    assert np.allclose(scored("oracle_keywords")[["d_p", "d_t"]], [0.9, 0.2])
    assert np.allclose(scored("category_pmg")[["d_p", "d_t"]], [0.4, 0.7])
    assert np.allclose(scored("category_oracle_keywords")[["d_p", "d_t"]], [0.9, 0.7])
    assert np.allclose(scored("category_target_best_of_n")["d_t"], 0.7)
    # the oracle's E_k is the hidden taste's text encoding, not the LLM keywords'
    oracle = Variant.from_params(ABLATIONS["oracle_keywords"]).requests_for(requests)
    assert oracle["preference_text"].tolist() == ["cat, cute"]
    assert oracle["target_text"].tolist() == ["happy"]

    real = requests.assign(oracle_text="", category_text="")
    for variant in ("oracle_keywords", "category_pmg", "category_without_both"):
        table, images = nodes.generate_candidates(
            real, tiny_generator, soft, PARAMS, ABLATIONS[variant]
        )
        assert table.empty and images == {}
    report = nodes.summarize_personalization(
        PARAMS, ABLATIONS, soft, real, oracle_keywords=table, category_pmg=table
    )
    assert "hidden tastes" in report["not_applicable"]["oracle_keywords"]
    assert "category" in report["not_applicable"]["category_pmg"]


def test_keywords_of_a_non_evaluation_user_marked_evaluation_are_refused():
    histories = pd.DataFrame({"user_id": ["u1"], "history": [["a"]], "target": ["t"]})
    split = pd.DataFrame({"user_id": ["u1"], "split": ["train"]})
    k_p = pd.DataFrame({"user_id": ["u1"], "purpose": ["evaluation"], "keywords": [["x"]]})
    k_t = pd.DataFrame({"user_id": ["u1"], "keywords": [["y"]]})
    with pytest.raises(ValueError, match="outside the split's evaluation users"):
        nodes.build_generation_requests(histories, split, k_p, k_t, ITEMS, USERS, PARAMS)


def test_every_user_and_seed_gets_the_grid_in_one_call_per_chunk(
    tiny_generator, requests_table, soft
):
    calls = []
    original = tiny_generator.generate

    def counting(conditions, weights, **kw):
        calls.append(len(conditions))
        return original(conditions, weights, **kw)

    tiny_generator.generate = counting
    try:
        table, images = nodes.generate_candidates(
            requests_table, tiny_generator, soft, PARAMS, ABLATIONS["pmg"]
        )
    finally:
        tiny_generator.generate = original
    assert calls == [20]  # 2 users x 2 seeds x 5 weight pairs, one batch
    assert set(images) == set(table["image_key"])
    per_user_seed = table.groupby(["user_id", "seed"])["w_p"].apply(list)
    assert per_user_seed.to_dict() == {
        (u, s): [0.0, 0.5, 1.0, 1.5, 2.0] for u in ("u1", "u2") for s in (3, 4)
    }
    assert (table["noise_seed"] == table["seed"]).all()
    assert images["u1/s3/wp0.5_wt1.5"].size == (8, 8)


def test_images_do_not_depend_on_how_candidates_are_chunked(tiny_generator, requests_table, soft):
    _, whole = nodes.generate_candidates(
        requests_table, tiny_generator, soft, PARAMS, ABLATIONS["pmg"]
    )
    chunked = {**PARAMS, "candidates_per_batch": 3}
    _, parts = nodes.generate_candidates(
        requests_table, tiny_generator, soft, chunked, ABLATIONS["pmg"]
    )
    for key in whole:
        np.testing.assert_array_equal(np.asarray(whole[key]), np.asarray(parts[key]))
    # seeds differ, weights differ: different images
    assert not np.array_equal(
        np.asarray(whole["u1/s3/wp1_wt1"]), np.asarray(whole["u1/s4/wp1_wt1"])
    )
    assert not np.array_equal(
        np.asarray(whole["u1/s3/wp0_wt2"]), np.asarray(whole["u1/s3/wp2_wt0"])
    )


def _pmg_conditions(generator, requests, soft, params):
    pmg = PMG(generator, settings=PMGSettings.from_params(params))
    return pmg.conditions(requests, Variant.from_params(ABLATIONS["pmg"]), soft["tensors"])


def test_a_zero_weight_drops_its_condition(tiny_generator, requests_table, soft):
    rows = _pmg_conditions(tiny_generator, requests_table, soft, PARAMS)
    target_only = [r for r in rows if r["w_p"] == 0][0]
    preference_only = [r for r in rows if r["w_t"] == 0][0]
    both = [r for r in rows if r["w_p"] == 1.0][0]
    assert target_only["weights"] == [2.0] and len(target_only["conditions"]) == 1
    assert preference_only["weights"] == [2.0] and len(preference_only["conditions"]) == 1
    assert len(both["conditions"]) == 2
    # the preference condition is concat(E_m, E_k): L soft tokens first
    n_keywords = int(tiny_generator.encode_text(["cat, cute"]).mask.sum())
    assert preference_only["conditions"][0].embeddings.shape[0] == 2 + n_keywords
    torch.testing.assert_close(
        preference_only["conditions"][0].embeddings[:2], soft["tensors"]["u1"]
    )


def test_the_condition_budget_cuts_the_keywords_not_the_soft_tokens(
    tiny_generator, requests_table, soft
):
    budget = {**PARAMS, "max_condition_tokens": 3}
    rows = _pmg_conditions(tiny_generator, requests_table, soft, budget)
    preference = [r for r in rows if r["w_t"] == 0][0]["conditions"][0]
    assert preference.embeddings.shape[0] == 3
    torch.testing.assert_close(preference.embeddings[:2], soft["tensors"]["u1"])


def test_controls_have_the_planned_candidates(tiny_generator, requests_table, soft):
    baseline, base_images = nodes.generate_candidates(
        requests_table, tiny_generator, soft, PARAMS, ABLATIONS["without_both"]
    )
    assert baseline[["user_id", "seed", "w_p", "w_t"]].values.tolist() == [
        ["u1", 3, 0.0, 1.0],
        ["u1", 4, 0.0, 1.0],
        ["u2", 3, 0.0, 1.0],
        ["u2", 4, 0.0, 1.0],
    ]
    best_of_n, best_images = nodes.generate_candidates(
        requests_table, tiny_generator, soft, PARAMS, ABLATIONS["target_best_of_n"]
    )
    assert best_of_n.groupby(["user_id", "seed"]).size().eq(5).all()  # as many as the grid
    assert best_of_n["noise_seed"].nunique() == 2 * 5
    assert (best_of_n["w_p"] == 0).all()
    # draw 0 of the compute-matched control is the baseline's image itself
    np.testing.assert_array_equal(
        np.asarray(best_images["u1/s3/wp0_wt1"]), np.asarray(base_images["u1/s3/wp0_wt1"])
    )
    unweighted, _ = nodes.generate_candidates(
        requests_table, tiny_generator, soft, PARAMS, ABLATIONS["pmg_unweighted"]
    )
    assert unweighted[["w_p", "w_t"]].drop_duplicates().values.tolist() == [[1.0, 1.0]]


def test_a_variant_needing_soft_embeddings_is_not_applicable_without_them(
    tiny_generator, requests_table
):
    missing = {"tensors": {}, "metadata": {"not_applicable": "no images"}}
    table, images = nodes.generate_candidates(
        requests_table, tiny_generator, missing, PARAMS, ABLATIONS["pmg"]
    )
    assert table.empty and images == {}
    report = nodes.summarize_personalization(PARAMS, ABLATIONS, missing, requests_table, pmg=table)
    assert "no images" in report["not_applicable"]["pmg"]


class _TextScorer:
    """Cosine = 0.9 for the text 'cat, cute', 0.2 for 'happy', 0.1 otherwise, for every image:
    which text each cosine was computed against is visible in the values."""

    def paired_scores(self, images, text_lists, batch_size=64):
        value = {"cat, cute": 0.9, "happy": 0.2}
        return torch.tensor([[value.get(t, 0.1) for t in texts] for texts in text_lists])


def test_d_p_is_scored_against_the_preference_and_d_t_against_the_target(
    tiny_generator, requests_table, soft
):
    table, images = nodes.generate_candidates(
        requests_table, tiny_generator, soft, PARAMS, ABLATIONS["pmg"]
    )
    scored, _ = nodes.score_candidates(
        table, images, requests_table, _TextScorer(), PARAMS, ABLATIONS["pmg"]
    )
    u1 = scored[scored["user_id"] == "u1"]
    assert np.allclose(u1["d_p"], 0.9) and np.allclose(u1["d_t"], 0.2)


def test_scoring_picks_one_candidate_per_user_and_seed(
    tiny_generator, requests_table, soft, scorer
):
    table, images = nodes.generate_candidates(
        requests_table, tiny_generator, soft, PARAMS, ABLATIONS["pmg"]
    )
    scored, chosen = nodes.score_candidates(
        table, images, requests_table, scorer, PARAMS, ABLATIONS["pmg"]
    )
    assert scored.groupby(["user_id", "seed"])["chosen"].sum().eq(1).all()
    assert set(chosen) == {"u1/s3", "u1/s4", "u2/s3", "u2/s4"}
    expected = 0.5 * np.log(np.maximum(scored["d_p"], 1e-3)) + 0.5 * np.log(
        np.maximum(scored["d_t"], 1e-3)
    )
    np.testing.assert_allclose(scored["z"], expected)
    for (user, seed), group in scored.groupby(["user_id", "seed"]):
        best = group.loc[group["z"].idxmax(), "image_key"]
        np.testing.assert_array_equal(
            np.asarray(chosen[f"{user}/s{seed}"]), np.asarray(images[best])
        )
    # paired cosines equal the full cosine matrix's matching entries
    pixels = torch.from_numpy(to_array([images[k] for k in scored["image_key"][:3]]))
    full = scorer.score(pixels, ["cat, cute"])[:, 0].numpy()
    np.testing.assert_allclose(scored["d_p"][:3], full, rtol=1e-5, atol=1e-6)

    best, best_images = nodes.generate_candidates(
        requests_table, tiny_generator, soft, PARAMS, ABLATIONS["target_best_of_n"]
    )
    best_scored, _ = nodes.score_candidates(
        best, best_images, requests_table, scorer, PARAMS, ABLATIONS["target_best_of_n"]
    )
    for _, group in best_scored.groupby(["user_id", "seed"]):
        assert group.loc[group["chosen"], "d_t"].iat[0] == group["d_t"].max()

    report = nodes.summarize_personalization(
        PARAMS, ABLATIONS, soft, requests_table, pmg=scored, target_best_of_n=best_scored
    )
    assert report["variants"]["pmg"]["candidates_per_user_and_seed"] == 5
    assert report["variants"]["pmg"]["chosen_d_p"] == pytest.approx(
        scored.loc[scored["chosen"], "d_p"].mean(), abs=1e-5
    )
    figure = nodes.plot_weight_strips(
        {"pmg": ABLATIONS["pmg"]}, PARAMS, pmg_selections=scored, pmg_candidate_images=images
    )
    assert len(figure.axes) == 2 * 5


def test_user_only_images_use_the_preference_condition(tiny_generator, requests_table, soft):
    images = nodes.generate_user_images(requests_table, tiny_generator, soft, PARAMS)
    assert set(images) == {"u1", "u2"}
    none = {"tensors": {}, "metadata": {"not_applicable": "no images"}}
    keywords_only = nodes.generate_user_images(requests_table, tiny_generator, none, PARAMS)
    assert not np.array_equal(np.asarray(images["u1"]), np.asarray(keywords_only["u1"]))


def test_table2_images_per_sweep_entry(tiny_generator, requests_table, soft):
    sweep = {
        "tensors": {
            **{f"L2_ptuning/{u}": t for u, t in soft["tensors"].items()},
            **{f"L4_no_ptuning/{u}": torch.randn(4, 384) for u in soft["tensors"]},
        },
        "metadata": {"sweep_entries": ["L2_ptuning", "L4_no_ptuning"]},
    }
    table, images = nodes.generate_table2_images(requests_table, tiny_generator, sweep, PARAMS)
    assert len(table) == 2 * 2 * 2 and set(images) == set(table["image_key"])
    assert table.groupby("sweep_entry")["n_tokens"].first().to_dict() == {
        "L2_ptuning": 2,
        "L4_no_ptuning": 4,
    }
    assert table.groupby("sweep_entry")["p_tuning"].first().to_dict() == {
        "L2_ptuning": True,
        "L4_no_ptuning": False,
    }
    empty, none = nodes.generate_table2_images(
        requests_table, tiny_generator, {"tensors": {}, "metadata": {}}, PARAMS
    )
    assert empty.empty and none == {}
