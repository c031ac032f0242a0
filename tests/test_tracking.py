"""Tracked runs: the reporting hook's metrics and artifacts, a real `test` run's MLflow record, no
network, no MLflow telemetry."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are only saved here
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from kedro.framework.hooks.manager import _create_hook_manager  # noqa: E402
from kedro.io import DataCatalog, Version  # noqa: E402
from kedro.pipeline import Pipeline, node  # noqa: E402
from kedro.runner import SequentialRunner  # noqa: E402
from kedro_datasets.json import JSONDataset  # noqa: E402
from kedro_datasets.matplotlib import MatplotlibDataset  # noqa: E402

from pmg_kedro.hooks import (  # noqa: E402
    METRIC_DATASET_SUFFIXES,
    MlflowReportingHook,
    flat_metrics,
    logs_metrics,
)

SAVE_VERSION = "2026-01-01T00.00.00.000Z"
SUMMARY = {
    "lpips_history.pmg": 0.41,
    "n_users": 3,
    "ndcg@10": 0.2,  # "@" is not allowed in an MLflow metric name: "_"
    "comparisons": {"pmg-without_both/ssim": {"mean_difference": -0.02, "wilcoxon_p": 0.25}},
    "backend": "mobilenet_feature_distance",  # not a number: not a metric
    "simulated": True,  # a flag, not a metric
}


def test_flat_metrics_joins_nested_keys_and_skips_what_is_not_a_number():
    metrics, skipped = flat_metrics("movie.metric_summary", SUMMARY)
    assert metrics == {
        "movie.metric_summary.lpips_history.pmg": 0.41,
        "movie.metric_summary.n_users": 3.0,
        "movie.metric_summary.ndcg_10": 0.2,
        "movie.metric_summary.comparisons.pmg-without_both/ssim.mean_difference": -0.02,
        "movie.metric_summary.comparisons.pmg-without_both/ssim.wilcoxon_p": 0.25,
    }
    assert skipped == ["movie.metric_summary.backend", "movie.metric_summary.simulated"]


def _figure(value: float):
    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, value])
    return fig


@pytest.fixture
def mlflow_store(tmp_path):
    """A fresh SQLite tracking store; the global tracking URI is restored afterwards."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("t", artifact_location=(tmp_path / "art").as_uri())
    yield mlflow.MlflowClient(uri), experiment
    mlflow.set_tracking_uri(previous)


def _reporting_run(tmp_path: Path, hook: MlflowReportingHook) -> dict[str, Path]:
    """Runs a three-node pipeline (metric summaries and figures) with the hook registered."""
    reporting = tmp_path / "data" / "08_reporting" / "movie"
    catalog = DataCatalog(
        {
            "movie.metric_summary": JSONDataset(filepath=str(reporting / "metric_summary.json")),
            "movie.table3_summary": JSONDataset(filepath=str(reporting / "table3_summary.json")),
            "movie.personalization_report": JSONDataset(filepath=str(reporting / "report.json")),
            "movie.table1_figure": MatplotlibDataset(
                filepath=str(reporting / "table1_figure.png"), version=Version(None, SAVE_VERSION)
            ),
            "movie.sample_grids": MatplotlibDataset(filepath=str(reporting / "sample_grids")),
            "movie.candidate_strip": MatplotlibDataset(
                filepath=str(tmp_path / "data" / "07_model_output" / "movie" / "strip.png")
            ),
        }
    )
    pipeline = Pipeline(
        [
            node(
                lambda: (SUMMARY, {"ndcg@10.generated_user": 0.5}, {"chosen_d_p": 0.3}),
                None,
                ["movie.metric_summary", "movie.table3_summary", "movie.personalization_report"],
                name="summarise",
            ),
            node(
                lambda: (_figure(1.0), {"a.png": _figure(2.0), "b.png": _figure(3.0)}),
                None,
                ["movie.table1_figure", "movie.sample_grids"],
                name="plot",
            ),
            node(lambda: _figure(4.0), None, "movie.candidate_strip", name="strip"),
        ]
    )
    hook_manager = _create_hook_manager()
    hook_manager.register(hook)
    hook_manager.hook.before_pipeline_run(run_params={}, pipeline=pipeline, catalog=catalog)
    SequentialRunner().run(pipeline, catalog, hook_manager)
    hook_manager.hook.after_pipeline_run(run_params={}, pipeline=pipeline, catalog=catalog)
    return {
        "table1_figure": reporting / "table1_figure.png" / SAVE_VERSION / "table1_figure.png",
        "grid_a": reporting / "sample_grids" / "a.png",
    }


def _artifacts(client, run_id: str, path: str | None = None) -> list[str]:
    files = []
    for info in client.list_artifacts(run_id, path):
        files += _artifacts(client, run_id, info.path) if info.is_dir else [info.path]
    return files


def test_hook_logs_summaries_as_metrics_and_reporting_figures_as_artifacts(tmp_path, mlflow_store):
    import mlflow

    client, experiment = mlflow_store
    with mlflow.start_run(experiment_id=experiment) as run:
        saved = _reporting_run(tmp_path, MlflowReportingHook())
    logged = client.get_run(run.info.run_id).data.metrics
    expected, _ = flat_metrics("movie.metric_summary", SUMMARY)
    expected["movie.table3_summary.ndcg_10.generated_user"] = 0.5
    assert logged == pytest.approx(expected)
    assert sorted(_artifacts(client, run.info.run_id)) == [
        "08_reporting/movie/sample_grids/a.png",
        "08_reporting/movie/sample_grids/b.png",
        "08_reporting/movie/table1_figure.png",
    ]
    downloaded = Path(client.download_artifacts(run.info.run_id, "08_reporting", str(tmp_path)))
    assert (downloaded / "movie" / "table1_figure.png").read_bytes() == saved[
        "table1_figure"
    ].read_bytes()
    assert (downloaded / "movie" / "sample_grids" / "a.png").read_bytes() == saved[
        "grid_a"
    ].read_bytes()


def test_hook_does_nothing_without_an_active_run(tmp_path, mlflow_store):
    client, experiment = mlflow_store
    _reporting_run(tmp_path, MlflowReportingHook())
    assert client.search_runs([experiment]) == []


@pytest.fixture
def no_network(monkeypatch):
    """Refuses (and records) every IPv4/IPv6 connection that is not to a loopback address."""
    attempts = []
    connect = socket.socket.connect

    def guarded(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]
            if not (host == "localhost" or host.startswith("127.") or host == "::1"):
                attempts.append(address)
                raise OSError(f"network access refused in tests: {address}")
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


def test_a_test_run_is_recorded_under_data_test_env(run_pipeline, project_root, no_network):
    from mlflow import MlflowClient

    marker = uuid.uuid4().hex  # finds this run among runs of other sessions sharing the store
    started_ms = time.time() * 1000
    run_pipeline("ingestion", runtime_params={"tracking_probe": marker})
    assert no_network == []
    import mlflow

    assert mlflow.active_run() is None, "the run stays open: the next session would log into it"

    store = project_root / "data" / "test_env" / "mlflow.db"
    client = MlflowClient(f"sqlite:///{store}")
    experiment = client.get_experiment_by_name("pmg_kedro_test")
    runs = [
        r
        for r in client.search_runs([experiment.experiment_id], "attributes.run_name = 'ingestion'")
        if r.info.start_time >= started_ms and marker in r.data.tags.get("runtime_params", "")
    ]
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["env"] == "test"
    assert Path(experiment.artifact_location.removeprefix("file://")).is_relative_to(
        project_root / "data" / "test_env"
    )
    # kedro-mlflow logs every parameter a node reads, as MLflow shows a Python value: str().
    from kedro.framework.session import KedroSession

    with KedroSession.create(project_path=project_root, env="test") as session:
        params = session.load_context().params
    for scene in ("movie", "emoticon", "costume"):
        assert run.data.params[f"{scene}.protocol"] == str(params[scene]["protocol"])


def test_every_name_the_hook_logs_is_a_json_output_of_a_registered_pipeline(
    registered_pipelines, test_catalog
):
    """A suffix no node writes (Table 3 was `table3_summary` long before any node wrote it) is a
    metric that never reaches MLflow."""
    catalog = test_catalog()
    outputs = set().union(*(p.all_outputs() for p in registered_pipelines.values()))
    for suffix in METRIC_DATASET_SUFFIXES:
        written = sorted(name for name in outputs if name.endswith(suffix))
        assert written, f"no registered pipeline writes a dataset named *{suffix}"
        for name in written:
            assert isinstance(catalog.get(name), JSONDataset), name


def test_the_test_runs_mlflow_record_holds_table3(
    test_env_default_run, registered_pipelines, test_catalog, project_root
):
    """Every scene of the recommendation pipeline logs its Table 3 numbers, as the catalog holds
    them, into the `__default__` run's MLflow record."""
    from mlflow import MlflowClient

    recommendation = registered_pipelines["recommendation"].all_outputs()
    logged = sorted(name for name in recommendation if logs_metrics(name))
    scenes = {name.split(".")[0] for name in recommendation}
    assert scenes and {name.split(".")[0] for name in logged} == scenes
    catalog = test_catalog()
    client = MlflowClient(f"sqlite:///{project_root / 'data' / 'test_env' / 'mlflow.db'}")
    metrics = client.get_run(test_env_default_run).data.metrics
    for name in logged:
        expected, _ = flat_metrics(name, catalog.load(name))
        assert any(".generated_user." in k for k in expected), name  # Table 3's own setting
        # an MDE without spread (a handful of test seeds) is NaN, logged as it is
        assert {k: metrics.get(k) for k in expected} == pytest.approx(expected, nan_ok=True), name


def test_settings_switch_mlflow_telemetry_off(tmp_path):
    # A clean process (pytest and CI variables also switch it off, so they are left out): mlflow
    # imported first, as kedro's CLI does, then the project's settings.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    probe = (
        "import mlflow\n"
        "from mlflow.telemetry import get_telemetry_client as client\n"
        "before = client() is not None\n"
        "import pmg_kedro.settings\n"
        "print('telemetry client:', before, client() is not None)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = [x for x in result.stdout.splitlines() if x.startswith("telemetry client:")]
    assert lines == ["telemetry client: True False"]


def test_the_test_runs_mlflow_record_says_which_precision_the_llm_computed_in(
    test_env_default_run, project_root
):
    """The LLM's `dtype: auto` decision and the machine's bfloat16 support are tags of the run
    (issue 28), the same decision the process made."""
    from mlflow import MlflowClient

    from pmg_kedro.components.reporting.precision import resolve_dtype

    client = MlflowClient(f"sqlite:///{project_root / 'data' / 'test_env' / 'mlflow.db'}")
    tags = client.get_run(test_env_default_run).data.tags
    assert tags["precision.llm.dtype"] == resolve_dtype("auto", "cpu").dtype
    assert tags["precision.llm.reason"] == resolve_dtype("auto", "cpu").reason
    assert tags["machine.auto_cpu_dtype"] == tags["precision.llm.dtype"]
    assert tags["machine.bf16_native"] in {"True", "False"}
