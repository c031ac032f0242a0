"""The default pipeline (everything but model_preparation) end to end in the `test` environment.

Asserts on what the method promises downstream of the keywords: soft embeddings for the scenes
with images, one chosen candidate per user and variant, z computed from d_p and d_t, reports.
"""

import numpy as np
import pytest

from pmg_kedro.scenes import SCENES, scenes_with_images


@pytest.fixture(scope="module")
def catalog(run_pipeline, test_catalog):
    run_pipeline("__default__")
    return test_catalog()


@pytest.mark.parametrize("scene", scenes_with_images())
def test_soft_embeddings_have_the_adapter_shape(catalog, scene):
    adapter = catalog.load(f"{scene}.soft_embedding_model")
    embeddings = catalog.load(f"{scene}.soft_embeddings")
    n_tokens = adapter["tensors"]["mm_tokens"].shape[0]
    assert embeddings["tensors"], "no user got soft embeddings"
    for tensor in embeddings["tensors"].values():
        assert tensor.shape == (n_tokens, 384)  # (L, MiniLM width)
    report = catalog.load(f"{scene}.soft_embedding_report")
    row = report["variants"][0]
    assert np.isfinite([row["heldout_loss_pmg"], row["heldout_loss_without_embeddings"]]).all()


@pytest.mark.parametrize("scene", SCENES)
def test_one_chosen_candidate_per_user_and_variant(catalog, scene):
    variants = ["without_embeddings", "without_both"]
    if scene in scenes_with_images():
        variants += ["pmg", "without_keywords"]
    requests = catalog.load(f"{scene}.generation_requests")
    for variant in variants:
        selections = catalog.load(f"{scene}.{variant}.selections")
        assert selections.groupby("user_id")["chosen"].sum().eq(1).all()
        assert set(selections["user_id"]) == set(requests["user_id"])
        chosen = catalog.load(f"{scene}.{variant}.chosen_images")
        assert set(chosen) == set(requests["user_id"])
        z = 0.5 * np.log(np.maximum(selections["d_p"], 1e-3))
        z += 0.5 * np.log(np.maximum(selections["d_t"], 1e-3))
        np.testing.assert_allclose(selections["z"], z, rtol=1e-6)
    report = catalog.load(f"{scene}.personalization_report")
    assert {r["variant"] for r in report["variants"]} == set(variants)
    assert set(catalog.load(f"{scene}.user_images")) == set(requests["user_id"])


def test_costume_taste_recovery_is_reported_as_simulated(catalog):
    report = catalog.load("costume.taste_recovery_report")
    assert report["simulated"] is True
    assert 0.0 <= report["classifier_accuracy_on_real_items"] <= 1.0
    assert set(report["variants"]) >= {"without_both", "without_embeddings"}
