"""The whole `ingestion` pipeline, every scene, in the `test` environment through a KedroSession."""

import pytest

from pmg_kedro.scenes import scene_names


@pytest.fixture(scope="module")
def ingested(run_pipeline, test_catalog):
    run_pipeline("ingestion")
    return test_catalog()


def test_movie_counts_match_movielens_latest_small(ingested):
    report = ingested.load("movie.ingestion_report")
    assert report["counts"]["users"] == 671
    assert report["counts"]["movies"] == 9066
    assert report["counts"]["ratings"] == 100004
    assert not report["simulated"]


@pytest.mark.parametrize("scene", scene_names())
def test_every_scene_has_valid_histories(ingested, scene):
    histories = ingested.load(f"{scene}.histories")
    items = set(ingested.load(f"{scene}.items")["item_id"])
    assert 0 < len(histories) <= 6  # conf/test caps the users
    for row in histories.itertuples():
        assert 1 <= len(row.history) <= 10
        assert set(row.history) <= items and row.target in items


def test_costume_is_labelled_simulated_everywhere(ingested):
    report = ingested.load("costume.ingestion_report")
    assert report["simulated"] and "SIMULATED" in report["note"]
    assert ingested.load("costume.users")["simulated"].all()
    assert ingested.load("costume.interactions")["simulated"].all()
    assert ingested.load("costume.histories")["simulated"].all()


def test_emoticon_targets_carry_the_current_message(ingested):
    histories = ingested.load("emoticon.histories")
    assert histories["target_message"].str.len().gt(0).all()
    index = ingested.load("emoticon.image_index")
    assert index["image_path"].str.endswith(".png").all()
