"""The shard engine in this process: shards of whole users in order, results kept and reused by
what they were computed from, a failing shard named by its users, models loaded once per process
from their definitions. tests/pipelines/test_sharding.py runs the stages on a Dask cluster."""

import logging

import pandas as pd
import pytest

from pmg_kedro.components.models import sharding
from pmg_kedro.components.models.sharding import (
    ModelDefinition,
    ShardFailed,
    ShardSettings,
    attach_definition,
    run_shards,
    split_users,
    worker_model,
)

ROWS = pd.DataFrame(
    {"user_id": ["a", "a", "b", "c", "c", "d", "e"], "value": [1, 2, 3, 4, 5, 6, 7]}
)


def total_per_user(rows, offset):
    return rows.groupby("user_id", sort=False)["value"].sum().add(offset).reset_index()


def test_shards_hold_whole_users_in_their_order():
    shards = split_users(ROWS, 2)
    assert [list(s["user_id"]) for s in shards] == [["a", "a", "b"], ["c", "c", "d"], ["e"]]
    assert pd.concat(shards).equals(ROWS)
    with pytest.raises(KeyError, match="no 'user' column"):
        split_users(ROWS, 2, "user")


def test_settings_are_checked():
    with pytest.raises(ValueError, match="needs a shard_size"):
        ShardSettings.from_params({"cluster": "local"})
    with pytest.raises(ValueError, match=r"sharding parameters: unknown key\(s\)"):
        ShardSettings.from_params({"clusters": "local"})
    with pytest.raises(ValueError, match="positive number of users"):
        ShardSettings.from_params({"shard_size": 0})
    assert not ShardSettings.from_params(None).sharded


def test_one_call_without_shards_and_the_same_rows_in_shards():
    whole = run_shards(ShardSettings(), "s", ROWS, total_per_user, data={"offset": 10})
    assert len(whole) == 1
    parts = run_shards(ShardSettings(shard_size=2), "s", ROWS, total_per_user, data={"offset": 10})
    assert len(parts) == 3
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole[0])


def test_finished_shards_are_reused_and_changed_inputs_recomputed(tmp_path, caplog):
    calls = []

    def counted(rows, offset):
        calls.append(list(rows["user_id"].unique()))
        return total_per_user(rows, offset)

    settings = ShardSettings(shard_size=2, folder=str(tmp_path))
    with caplog.at_level(logging.INFO, logger="pmg_kedro.components.models.sharding"):
        first = run_shards(settings, "stage", ROWS, counted, data={"offset": 1})
        again = run_shards(settings, "stage", ROWS, counted, data={"offset": 1})
    assert len(calls) == 3 and all(a.equals(b) for a, b in zip(first, again, strict=True))
    assert "3 shards of up to 2 on this process; 3 reused from" in caplog.text
    # one user's rows changed: only that shard runs again; other data: every shard
    changed = ROWS.assign(value=ROWS["value"].where(ROWS["user_id"] != "e", 70))
    run_shards(settings, "stage", changed, counted, data={"offset": 1})
    assert calls[3:] == [["e"]]
    run_shards(settings, "stage", ROWS, counted, data={"offset": 2})
    assert len(calls) == 7


def test_a_failing_shard_fails_the_stage_with_its_users_and_cause(tmp_path):
    def fails_on_d(rows, offset):
        if "d" in set(rows["user_id"]):
            raise ValueError("user d has no history")
        return total_per_user(rows, offset)

    settings = ShardSettings(shard_size=2, folder=str(tmp_path))
    with pytest.raises(
        ShardFailed,
        match=r"stage: shard 2/3 \(users \['c', 'd'\]\) failed on "
        r"this process: ValueError: user d has no history",
    ):
        run_shards(settings, "stage", ROWS, fails_on_d, data={"offset": 0})
    assert len(list((tmp_path / "stage").glob("*.pkl"))) == 1  # shard 1 was kept


def test_a_cluster_refuses_a_model_it_cannot_load_itself():
    settings = ShardSettings(cluster="tcp://127.0.0.1:1", shard_size=2)
    with pytest.raises(ValueError, match="model 'llm' .* has no catalog definition"):
        run_shards(settings, "stage", ROWS, total_per_user, models={"llm": object()})


class Model:
    pass


LOADS = []


def load_model(config):
    LOADS.append(dict(config))
    return Model()


def test_a_process_loads_each_definition_once_and_releases_it():
    sharding.release_models()
    definition = ModelDefinition(load_model, {"path": "models/x"})
    first = worker_model(definition)
    assert worker_model(definition) is first and LOADS == [{"path": "models/x"}]
    assert getattr(first, sharding.DEFINITION_ATTRIBUTE) == definition
    other = worker_model(ModelDefinition(load_model, {"path": "models/y"}))
    assert other is not first and sharding.release_models() == 2
    assert sharding.model_key(attach_definition(Model(), definition)) == definition.key


def weighted_total(rows, weights):
    import torch

    assert weights.dtype == torch.bfloat16  # arrived as it was sent
    return rows.assign(weighted=rows["value"] * float(weights.float().sum()))


def worker_malloc_setting():
    import os

    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_a_local_cluster_takes_bfloat16_data_and_its_workers_keep_glibcs_malloc():
    """The keyword adapter's LoRA tensors are bfloat16, which Dask's tensor serialisation (via
    NumPy) cannot send: `make run` failed at costume's keywords until the shared data travelled
    as one pickle. And the workers start without Dask's MALLOC_TRIM_THRESHOLD_, which made their
    batched matmuls 2.7x slower than this process's (sharding.WORKER_ENVIRONMENT)."""
    import torch

    weights = torch.full((3, 4), 0.5, dtype=torch.bfloat16)
    here = run_shards(
        ShardSettings(shard_size=2), "stage", ROWS, weighted_total, data={"weights": weights}
    )
    settings = ShardSettings(cluster="local", workers=2, shard_size=2)
    try:
        there = run_shards(settings, "stage", ROWS, weighted_total, data={"weights": weights})
        client = sharding.cluster_client(settings)
        assert set(client.run(worker_malloc_setting).values()) == {None}
        assert len(client.scheduler_info()["workers"]) == 2
    finally:
        sharding.close_clusters()
    assert len(there) == 3
    for mine, theirs in zip(here, there, strict=True):
        pd.testing.assert_frame_equal(mine, theirs)
    assert pd.concat(there)["weighted"].tolist() == [6.0 * v for v in ROWS["value"]]
