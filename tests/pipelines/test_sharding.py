"""The per-user stages sharded (components/sharding.py), run through Kedro sessions on copies of the
test environment's data: on a local Dask cluster of two workers they write what the in-process
sharded run writes, bit for bit; a worker killed while its shard runs loses nothing (the first
stages only); a run stopped after some shards, started again, reuses them.

Each run recomputes the costume scene's sharded nodes (keywords, the `pmg` variant's candidates
and scores, per-image metrics, recommendation's user keywords, user and history-item images and its MMGCN runs) from the data of the
session's test-environment run, in its own data root (a copy), with 2 users per shard.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest

from pmg_kedro.components.method.pmg import PMG
from pmg_kedro.components.models.sharding import ShardFailed

SCENE = "costume"
NODES = [
    f"{SCENE}.{name}"
    for name in (
        "extract_preference_keywords",
        "extract_target_keywords",
        "pmg.generate_candidates",
        "pmg.score_candidates",
        "evaluate_chosen_images",
        "extract_recommendation_keywords",
        "generate_recommendation_user_images",
        "generate_recommendation_history_item_images",
        "run_recommendation_experiment",
    )
]
TABLES = [
    "preference_keywords",
    "target_keywords",
    "pmg.candidates",
    "pmg.selections",
    "image_metrics",
    "recommendation_user_keywords",
    "recommendation_results",  # one MMGCN run per task (its `seconds` column is wall time)
]
IMAGES = [
    "pmg.candidate_images",
    "pmg.chosen_images",
    "recommendation_user_images",
    "recommendation_history_item_images",
]
SHARDS = {"shard_size": 2}
# The killed-worker run: the first sharded stages only (the worker dies in the first one; the
# later stages would show nothing more about a lost worker, and the cluster run covers them).
KILLED_NODES = NODES[:4]
KILLED_OUTPUTS = ["preference_keywords", "target_keywords", "pmg.candidates", "pmg.selections"]
KILLED_OUTPUTS += ["pmg.candidate_images", "pmg.chosen_images"]


class Project:
    """The project's conf with the test environment's data root moved to a copy of its data."""

    def __init__(self, root, project_root):
        self.conf = root / "conf"
        self.data = root / "data"
        shutil.copytree(project_root / "conf", self.conf, symlinks=True)
        (self.conf / "test" / "globals.yml").write_text(f"data_root: {self.data}\n")
        shutil.copytree(project_root / "data" / "test_env", self.data)
        self.project_root = project_root

    def session(self, runtime_params=None):
        from kedro.framework.session import KedroSession
        from kedro.framework.startup import bootstrap_project

        bootstrap_project(self.project_root)
        return KedroSession.create(
            project_path=self.project_root,
            env="test",
            conf_source=str(self.conf),
            runtime_params=runtime_params,
        )

    def run(self, sharding, node_names=NODES):
        with self.session({"sharding": sharding}) as session:
            session.run(node_names=node_names)

    def outputs(self, names=TABLES + IMAGES):
        with self.session() as session:
            catalog = session.load_context().catalog
            return {name: catalog.load(f"{SCENE}.{name}") for name in names}


def assert_same(written, expected):
    for name, value in expected.items():
        if name in IMAGES:
            assert written[name].keys() == value.keys(), name
            for key, image in value.items():
                np.testing.assert_array_equal(
                    np.asarray(written[name][key]), np.asarray(image), err_msg=f"{name} {key}"
                )
        else:
            wall_time = [c for c in ("seconds",) if c in value.columns]
            pd.testing.assert_frame_equal(
                written[name].drop(columns=wall_time),
                value.drop(columns=wall_time),
                check_exact=True,
                obj=name,
            )


def assert_every_user_once(written, project):
    with project.session() as session:
        catalog = session.load_context().catalog
        split = catalog.load(f"{SCENE}.user_split")
    evaluation = sorted(split.loc[split["split"] == "evaluation", "user_id"])
    assert len(evaluation) > 2, "more users than one shard holds"
    target = written["target_keywords"]["user_id"]
    assert sorted(target) == evaluation and target.is_unique
    selections = written["pmg.selections"]
    chosen = selections[selections["chosen"]]
    assert chosen.groupby(["user_id", "seed"]).size().eq(1).all()
    assert sorted(chosen["user_id"].unique()) == evaluation
    if "recommendation_user_keywords" in written:
        assert written["recommendation_user_keywords"]["user_id"].is_unique


@pytest.fixture(scope="module")
def in_process(test_env_default_run, tmp_path_factory, project_root):
    """The sharded nodes in this process, 2 users per shard: what every other run must write."""
    project = Project(tmp_path_factory.mktemp("in_process"), project_root)
    project.run(SHARDS)
    return project.outputs()


def test_a_local_cluster_of_two_workers_writes_what_the_in_process_run_writes(
    in_process, tmp_path_factory, project_root, caplog
):
    project = Project(tmp_path_factory.mktemp("cluster"), project_root)
    with caplog.at_level(logging.INFO, logger="pmg_kedro.components.models.sharding"):
        project.run({**SHARDS, "cluster": "local", "workers": 2})
    assert "on a local Dask cluster (2 workers)" in caplog.text
    assert "sharding: cluster closed" in caplog.text
    written = project.outputs()
    assert_same(written, in_process)
    assert_every_user_once(written, project)


def test_a_worker_killed_while_its_shard_runs_loses_nothing(
    in_process, tmp_path_factory, project_root, caplog
):
    from distributed import Client, LocalCluster

    project = Project(tmp_path_factory.mktemp("killed"), project_root)
    killed = []
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        done = threading.Event()

        def kill_a_busy_worker():
            while not done.is_set() and not killed:
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    pids = client.run(os.getpid, workers=busy[:1])
                    for pid in pids.values():
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                time.sleep(0.02)

        killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
        killer.start()
        try:
            with caplog.at_level(logging.INFO, logger="pmg_kedro.components.models.sharding"):
                project.run({**SHARDS, "cluster": cluster.scheduler_address}, KILLED_NODES)
        finally:
            done.set()
            killer.join()
    assert killed, "a worker was killed while it ran a shard"
    computed = [r.getMessage() for r in caplog.records if " shards of up to " in r.getMessage()]
    assert len(computed) == len(KILLED_NODES), computed  # every stage ran its shards on the cluster
    assert not any(line.endswith(", 0 to compute") for line in computed), computed
    written = project.outputs(KILLED_OUTPUTS)
    assert_same(written, {name: in_process[name] for name in KILLED_OUTPUTS})
    assert_every_user_once(written, project)


def test_a_run_stopped_after_some_shards_reuses_them_when_started_again(
    in_process, tmp_path_factory, project_root, monkeypatch, caplog
):
    project = Project(tmp_path_factory.mktemp("restarted"), project_root)
    generate, calls = PMG.generate, []

    def stops_at_the_second_shard(self, requests, *args, **kwargs):
        calls.append(list(requests["user_id"]))
        if len(calls) == 2:
            raise RuntimeError("the machine went down")
        return generate(self, requests, *args, **kwargs)

    monkeypatch.setattr(PMG, "generate", stops_at_the_second_shard)
    with pytest.raises(
        ShardFailed,
        match=r"pmg.candidates: shard 2/2 \(users \[.+\]\) failed on this process: "
        r"RuntimeError: the machine went down",
    ):
        project.run(SHARDS)
    monkeypatch.setattr(PMG, "generate", generate)
    with caplog.at_level(logging.INFO, logger="pmg_kedro.components.models.sharding"):
        project.run(SHARDS)
    assert "pmg.candidates: 3 users in 2 shards of up to 2 on this process; 1 reused" in caplog.text
    assert_same(project.outputs(), in_process)
    # every stage's shards are named by their inputs alone: a third run computes nothing
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pmg_kedro.components.models.sharding"):
        project.run(SHARDS)
    planned = [r.getMessage() for r in caplog.records if " shards of up to " in r.getMessage()]
    assert len(planned) == len(NODES)
    assert all(line.endswith(", 0 to compute") for line in planned), planned
