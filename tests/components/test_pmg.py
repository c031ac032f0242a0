"""The method object (paper §3, `components.method.pmg.PMG`): settings and variants refuse unknown keys,
the candidate plan of every variant, and, on the test environment's own requests, one in-memory
`personalize` call equals what the pipeline's nodes wrote (candidates, scores, choice, images)."""

import numpy as np
import pandas as pd
import pytest
import torch

from pmg_kedro.components.data.images import to_array
from pmg_kedro.components.method.pmg import (
    PMG,
    SELECTION_COLUMNS,
    PMGSettings,
    Variant,
    candidate_plan,
    noise_seed,
    requests_frame,
)
from pmg_kedro.components.method.soft_embeddings import SoftPreferenceEmbedder
from pmg_kedro.components.models.llm import LLM
from pmg_kedro.scenes import generation_variants, scene_conf

pytestmark = pytest.mark.usefixtures("one_thread")
SETTINGS = PMGSettings(
    seeds=(3, 4), steps=2, guidance_scale=1.5, candidates_per_batch=40, max_condition_tokens=None
)
REQUESTS = [
    {"user_id": "u1", "target": "t1", "preference_text": "cat, cute", "target_text": "ship"},
    {"user_id": "u2", "target": "t2", "preference_text": "red dress", "target_text": "heart"},
]


def test_settings_and_variants_refuse_unknown_keys_and_name_them():
    with pytest.raises(ValueError, match=r"unknown key\(s\) 'stpes'; allowed: .*steps"):
        PMGSettings.from_params({"stpes": 3})
    with pytest.raises(ValueError, match=r"ablations entry parameters: unknown key\(s\) 'grids'"):
        Variant.from_params({"name": "x", "grids": True})
    # the node-level key of a weighted_generation block is accepted and not kept
    settings = PMGSettings.from_params(
        {"steps": 3, "seeds": [1, 2], "figure_users": 4, "placebo_seed": 7}
    )
    assert settings.steps == 3 and settings.seeds == (1, 2)
    assert not hasattr(settings, "figure_users") and not hasattr(settings, "placebo_seed")


def test_the_grid_is_figure_7s_ratios_scaled_to_the_total():
    assert PMGSettings().grid == [(0.0, 2.0), (0.5, 1.5), (1.0, 1.0), (1.5, 0.5), (2.0, 0.0)]


@pytest.mark.parametrize("name", generation_variants())
def test_every_variant_has_its_planned_candidates(name):
    variant = Variant.from_params(scene_conf()["ablations"][name])
    plan = candidate_plan(variant, SETTINGS)
    expected = {
        "pmg": SETTINGS.grid,
        "without_embeddings": SETTINGS.grid,
        "without_keywords": SETTINGS.grid,
        "pmg_unweighted": [(1.0, 1.0)],  # the plain concatenation
        "without_both": [(0.0, 1.0)],  # one target-only image
        "target_best_of_n": [(0.0, 1.0)] * 5,  # compute-matched: as many draws as the grid
        # the positive controls plan as their namesakes: only the texts they condition on differ
        "oracle_keywords": SETTINGS.grid,
        "category_pmg": SETTINGS.grid,
        "category_oracle_keywords": SETTINGS.grid,
        "category_without_both": [(0.0, 1.0)],
        "category_target_best_of_n": [(0.0, 1.0)] * 5,
        # the PLACEBO plans as pmg: the same grid, the same compute, another user's preference
        "shuffled_pmg": SETTINGS.grid,
    }[name]
    assert [(w_p, w_t) for w_p, w_t, _ in plan] == expected
    draws = [d for _, _, d in plan]
    best_of_n = name.endswith("target_best_of_n")
    assert draws == (list(range(5)) if best_of_n else [0] * len(plan))
    assert noise_seed(7, 0) == 7 and noise_seed(7, 2) == 7002


def test_a_grid_without_a_preference_part_is_refused():
    with pytest.raises(ValueError, match="needs a preference part"):
        candidate_plan(Variant("x", keywords=False, embeddings=False, grid=True), SETTINGS)


def test_requests_are_checked():
    with pytest.raises(ValueError, match="lack columns"):
        requests_frame([{"user_id": "u1", "target": "t"}])
    with pytest.raises(ValueError, match="one request per user"):
        requests_frame([REQUESTS[0], REQUESTS[0]])


def test_personalize_scores_every_candidate_and_chooses_one_per_user_and_seed(tiny_generator):
    from pmg_kedro.components.models.scorer import TinyClip

    torch.manual_seed(0)
    scorer = TinyClip(dim=16, hidden=32, image_size=32).eval()
    requests = requests_frame(REQUESTS)
    variant = Variant("without_embeddings", keywords=True, embeddings=False)
    result = PMG(tiny_generator, scorer, SETTINGS).personalize(requests, variant)
    table = result.selections
    assert list(table.columns) == SELECTION_COLUMNS
    assert len(table) == 2 * 2 * 5 and set(result.images) == set(table["image_key"])
    assert table.groupby(["user_id", "seed"])["chosen"].sum().eq(1).all()
    assert set(result.chosen) == {"u1/s3", "u1/s4", "u2/s3", "u2/s4"}
    # d_p is the cosine with the request's k^p text, d_t with its k^t text (not swapped)
    row = table.iloc[0]
    pixels = torch.from_numpy(to_array([result.images[row.image_key]]))
    d_p, d_t = scorer.paired_scores(pixels, [["cat, cute"], ["ship"]])[:, 0]
    assert float(d_p) == pytest.approx(row.d_p, abs=1e-6)
    assert float(d_t) == pytest.approx(row.d_t, abs=1e-6)
    best = table.loc[table.groupby(["user_id", "seed"])["z"].idxmax()]
    for r in best.itertuples():
        assert np.array_equal(
            np.asarray(result.chosen[f"{r.user_id}/s{r.seed}"]),
            np.asarray(result.images[r.image_key]),
        )
    assert set(result.seconds) == {"generation", "scoring_selection"}
    assert len(result.for_user("u2")) == 10


def test_the_shuffled_placebo_conditions_on_the_donors_e_m_and_keywords(tiny_generator):
    """shuffled_pmg's user A is pmg's donor B on the preference side (E_m and E_k both B's) and
    A itself on the target side, under A's own noise seeds and image keys."""
    torch.manual_seed(2)
    soft = {u: torch.randn(2, 384) for u in ("u1", "u2", "u3")}
    requests = requests_frame(
        [
            *REQUESTS,
            {"user_id": "u3", "target": "t3", "preference_text": "ships", "target_text": "sun"},
        ]
    ).assign(shuffled_user=["u2", "u3", "u1"], shuffled_text=["red dress", "ships", "cat, cute"])
    ablations = scene_conf()["ablations"]
    placebo = Variant.from_params(ablations["shuffled_pmg"])
    pmg = PMG(tiny_generator, settings=SETTINGS)
    own = pmg.conditions(requests, Variant.from_params(ablations["pmg"]), soft)
    shuffled = pmg.conditions(placebo.requests_for(requests), placebo, soft)
    key = {(r["user_id"], r["seed"], r["w_p"], r["w_t"]): r for r in own}
    donors = dict(zip(requests["user_id"], requests["shuffled_user"], strict=True))
    assert len(shuffled) == len(own)
    for row in shuffled:
        user, at = row["user_id"], (row["seed"], row["w_p"], row["w_t"])
        mine, donor = key[(user, *at)], key[(donors[user], *at)]
        assert row["image_key"] == mine["image_key"] and row["noise_seed"] == mine["noise_seed"]
        assert row["weights"] == mine["weights"]
        if row["w_p"] > 0:  # E^p = concat(E_m, E_k) of the donor
            preference = row["conditions"][0].embeddings
            torch.testing.assert_close(preference[:2], soft[donors[user]])
            torch.testing.assert_close(preference, donor["conditions"][0].embeddings)
        if row["w_t"] > 0:  # E^t stays the user's own
            torch.testing.assert_close(
                row["conditions"][-1].embeddings, mine["conditions"][-1].embeddings
            )
    # without donors (one evaluation user, no placebo seed) the placebo cannot run
    empty = requests.assign(shuffled_user="", shuffled_text="")
    assert "at least 2 evaluation users" in placebo.missing_texts(empty)
    with pytest.raises(ValueError, match="shuffled_pmg: a shuffled preference needs"):
        placebo.requests_for(requests_frame(REQUESTS))


def test_candidates_do_not_depend_on_the_chunk_size(tiny_generator):
    requests = requests_frame(REQUESTS)
    variant = Variant("without_embeddings", keywords=True, embeddings=False)
    _, whole = PMG(tiny_generator, settings=SETTINGS).generate(requests, variant)
    small = SETTINGS.replace(candidates_per_batch=3)
    _, parts = PMG(tiny_generator, settings=small).generate(requests, variant)
    assert whole.keys() == parts.keys()
    for key in whole:
        np.testing.assert_array_equal(np.asarray(whole[key]), np.asarray(parts[key]))


def test_render_same_noise_ignores_batching_and_distinct_noise_differs(tiny_generator):
    pmg = PMG(tiny_generator)
    texts = ["cat", "red dress", "ship"]
    kwargs = {"seed": 0, "steps": 2, "guidance_scale": 1.5}
    one_call = pmg.render(texts, **kwargs)
    batched = pmg.render(texts, batch_size=1, **kwargs)
    assert one_call.shape == (3, 3, 8, 8)
    # the same noise and text: equal up to float rounding of other batch shapes
    torch.testing.assert_close(one_call, batched, rtol=0, atol=1e-5)
    grid = pmg.render(["cat"], repeats=2, same_noise=False, **kwargs)
    assert grid.shape[0] == 2 and not torch.equal(grid[0], grid[1])


def test_soft_embeddings_are_e_m_per_user(tiny_llama, tiny_generator):
    llm = LLM.from_pretrained(tiny_llama)
    embedder = SoftPreferenceEmbedder(llm, n_tokens=3, n_prefixes=0, out_dim=384).eval()
    pmg = PMG(tiny_generator, llm=llm, embedder=embedder)
    soft = pmg.soft_embeddings(["u1", "u2", "u3"], ["likes cats", "red dresses", "ships"], 2)
    assert list(soft) == ["u1", "u2", "u3"] and soft["u1"].shape == (3, 384)
    assert not torch.equal(soft["u1"], soft["u2"])
    with torch.no_grad():
        torch.testing.assert_close(soft["u2"], embedder(["red dresses"])[0].float())
    with pytest.raises(ValueError, match="needs an embedder"):
        PMG(tiny_generator).soft_embeddings(["u1"], ["x"])


# -- the method object equals the pipeline -----------------------------------------------------
@pytest.mark.parametrize("variant", ["pmg", "target_best_of_n"])
def test_personalize_equals_what_the_pipeline_nodes_wrote(
    test_env_default_run, test_catalog, variant
):
    """The test environment's costume requests, E_m, generator and scorer: one `personalize` call
    gives the candidates, scores, choices and images the two nodes wrote (through PNG files)."""
    catalog = test_catalog()
    scene = "costume"
    parameters = catalog.load("parameters")
    params = parameters[scene]
    requests = catalog.load(f"{scene}.generation_requests")
    soft = catalog.load(f"{scene}.soft_embeddings")["tensors"]
    pmg = PMG(
        catalog.load("generator"),
        catalog.load("scorer"),
        PMGSettings.from_params(params["weighted_generation"]),
    )
    result = pmg.personalize(requests, Variant.from_params(parameters["ablations"][variant]), soft)
    written = catalog.load(f"{scene}.{variant}.selections")
    pd.testing.assert_frame_equal(
        result.selections.reset_index(drop=True), written.reset_index(drop=True), check_dtype=False
    )
    chosen = catalog.load(f"{scene}.{variant}.chosen_images")
    assert chosen.keys() == result.chosen.keys()
    for key, image in result.chosen.items():
        np.testing.assert_array_equal(np.asarray(image), np.asarray(chosen[key]))
