"""behavior_summarization's wiring and the test environment's run: one evaluation row per
evaluation user with their whole history, training rows only for train users, whose history stops
right before the item that supervises them."""

import pytest

from pmg_kedro.pipelines.behavior_summarization import create_pipeline
from pmg_kedro.scenes import scene_names
from tests.pipelines.wiring import foreign_inputs, nodes_by_name

SCENES = scene_names()


def test_each_scene_reads_only_its_own_data_and_the_shared_llm():
    assert foreign_inputs(create_pipeline(), {"llm"}) == []


@pytest.mark.parametrize("scene", SCENES)
def test_summaries_read_the_selected_users_and_their_captions(scene):
    nodes = nodes_by_name(create_pipeline())
    assert nodes[f"{scene}.select_users"].inputs[:2] == [
        f"{scene}.histories",
        f"{scene}.user_split",
    ]
    summarize = nodes[f"{scene}.summarize_behavior"]
    assert summarize.inputs[:3] == [f"{scene}.summarized_users", f"{scene}.item_captions", "llm"]
    assert summarize.outputs == [f"{scene}.behavior_texts", f"{scene}.item_texts"]


@pytest.mark.parametrize("scene", SCENES)
def test_the_run_has_evaluation_rows_and_leak_free_training_rows(
    scene, test_env_default_run, test_catalog
):
    catalog = test_catalog()
    split = catalog.load(f"{scene}.user_split")
    evaluation = set(split.loc[split["split"] == "evaluation", "user_id"])
    train = set(split.loc[split["split"] == "train", "user_id"])
    histories = catalog.load(f"{scene}.histories").set_index("user_id")
    texts = catalog.load(f"{scene}.behavior_texts")
    rows = texts[texts["purpose"] == "evaluation"]
    assert sorted(rows["user_id"]) == sorted(evaluation)  # each evaluation user once
    for row in rows.itertuples():
        assert list(row.history) == list(histories.loc[row.user_id, "history"])
        assert len(row.history_texts) == len(row.history)
    training = texts[texts["purpose"] != "evaluation"]
    assert set(training["user_id"]) <= train
    for row in training.itertuples():
        # the history stops right before the supervision item (items can repeat: emoticons)
        full = [*histories.loc[row.user_id, "history"], histories.loc[row.user_id, "target"]]
        n = len(row.history)
        assert n < len(full) and list(row.history) == full[:n], row.user_id
        assert full[n] == row.supervision_item, row.user_id
