"""Project hooks: tracked runs (kedro-mlflow) with their headline metrics and report figures.

kedro-mlflow's hook opens one MLflow run per `kedro run` and logs the parameters every node reads
(`ProjectMlflowHook`, registered by settings.py instead of the plugin's own entry point: see there).
`MlflowReportingHook` adds what a run reports:
  - every dataset whose name ends with `metric_summary` (metric_evaluation's headline numbers) or
    `table3_summary` (recommendation's Table 3), a JSON dict of "name": number entries (nested
    dicts join their keys with ".") -> MLflow metrics "<dataset name>.<name>"; `logs_metrics`
    says which names (tests check that registered pipelines write every one of them);
  - every `MatplotlibDataset` saved under `08_reporting` -> the PNG file(s) it wrote, as artifacts
    under their folder from `08_reporting` on (e.g. `08_reporting/movie/table1_figure.png`);
  - every loaded model that says how its compute dtype was chosen (`precision`, e.g. the LLM's
    `dtype: auto`) -> tags "precision.<dataset name>.dtype" / ".reason", with the machine's
    bfloat16 support ("machine.cpu", "machine.bf16_native", "machine.auto_cpu_dtype").
A hook rather than kedro-mlflow's Mlflow*Dataset wrappers: the catalog entries stay plain JSON and
PNG files that notebooks and reports read, and new figures or summaries need no catalog change.
Nothing happens when no MLflow run is active (tracking disabled for a pipeline).
"""

from __future__ import annotations

import logging
import math
import re
import sys
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io import AbstractVersionedDataset

try:
    from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook
except ModuleNotFoundError:  # not installed (yet): tracking_hooks() warns and leaves tracking out
    MlflowHook = object

logger = logging.getLogger(__name__)

METRIC_DATASET_SUFFIXES = ("metric_summary", "table3_summary")
REPORTING_FOLDER = "08_reporting"
# MLflow metric names: alphanumerics, "_", "-", ".", " ", ":" and "/".
_INVALID_METRIC_CHARS = re.compile(r"[^\w\-. :/]")


def disable_mlflow_telemetry() -> None:
    """Drop MLflow's usage-telemetry client when mlflow was imported before the variable was set.

    Kedro's CLI imports kedro-mlflow's commands (and so mlflow, which creates its telemetry
    client on import) before `settings.py` runs; the client reads MLFLOW_DISABLE_TELEMETRY again
    when it is re-created.
    """
    if "mlflow" in sys.modules:
        from mlflow.telemetry import set_telemetry_client

        set_telemetry_client()


def logs_metrics(dataset_name: str) -> bool:
    """Whether the reporting hook logs `dataset_name`'s numbers as MLflow metrics."""
    return dataset_name.endswith(METRIC_DATASET_SUFFIXES)


def flat_metrics(prefix: str, values: Mapping[str, Any]) -> tuple[dict[str, float], list[str]]:
    """{"<prefix>.<key>": float} for the numbers of `values` (nested dicts joined with ".").

    Returns the metrics and the keys that were not numbers (skipped; the caller logs them).
    """
    metrics: dict[str, float] = {}
    skipped: list[str] = []
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            nested, nested_skipped = flat_metrics(name, value)
            metrics.update(nested)
            skipped += nested_skipped
        elif isinstance(value, int | float) and not isinstance(value, bool):
            metrics[_INVALID_METRIC_CHARS.sub("_", name)] = float(value)
        else:
            skipped.append(name)
    return metrics, skipped


def reporting_artifact_dir(filepath: PurePosixPath) -> str | None:
    """The artifact folder of a file under `08_reporting` (from that folder on), else None."""
    parts = filepath.parts
    if REPORTING_FOLDER not in parts:
        return None
    return PurePosixPath(*parts[parts.index(REPORTING_FOLDER) : -1]).as_posix()


def saved_path(dataset: AbstractVersionedDataset) -> Path:
    """Where `dataset` has just written: its versioned path for this run, else its filepath."""
    version = dataset.resolve_save_version()
    return Path(dataset._get_versioned_path(version) if version else dataset._filepath)


class ProjectMlflowHook(MlflowHook):
    """kedro-mlflow's hook with two changes that keep runs fast and apart.

    - Its catalog sweep runs only when the catalog config declares a kedro_mlflow dataset: it
      names `Mlflow*MetricDataset` entries after their key by materialising every catalog entry,
      which imports every dataset's model library (transformers, diffusers, open_clip: ~7 s per
      run on the 2-core CPU, half of an `ingestion` run). This project logs through
      `MlflowReportingHook` instead.
    - Before each node it re-opens the run only in a thread where it is not active yet (it exists
      for ThreadRunner's threads). kedro-mlflow re-opens it in every node, which pushes the same run
      once more on MLflow's stack each time: one database round trip per node, and the run stays
      active after `kedro run`, so the next session in the same process (tests, a notebook)
      logged into it instead of starting its own.
    """

    @hook_impl
    def before_node_run(self, node: Any, catalog: Any, inputs: dict[str, Any], is_async: bool):
        import mlflow

        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            return super().before_node_run(node, catalog, inputs, is_async)
        run_id, self.run_id = self.run_id, None  # super() re-opens the run when run_id is set
        try:
            return super().before_node_run(node, catalog, inputs, is_async)
        finally:
            self.run_id = run_id

    @hook_impl
    def after_catalog_created(
        self,
        catalog: Any,
        conf_catalog: dict[str, Any],
        conf_creds: dict[str, Any],
        parameters: dict[str, Any],
        save_version: str,
        load_versions: dict[str, str],
    ) -> None:
        declared = (str(c.get("type", "")) for c in conf_catalog.values() if isinstance(c, dict))
        if any("mlflow" in t.lower() for t in declared):
            super().after_catalog_created(
                catalog, conf_catalog, conf_creds, parameters, save_version, load_versions
            )


def tracking_hooks() -> tuple[Any, ...]:
    """The hooks settings.py registers: kedro-mlflow's (when installed) and the reporting one."""
    if MlflowHook is object:
        logger.warning(
            "kedro-mlflow is not installed: runs are not tracked (install the project: make setup)"
        )
        return (MlflowReportingHook(),)
    return (ProjectMlflowHook(), MlflowReportingHook())


class MlflowReportingHook:
    """Logs reported numbers as MLflow metrics and report figures as artifacts of the active run."""

    def __init__(self) -> None:
        self._catalog = None

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._catalog = catalog

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        self._catalog = None

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data: Any, node: Any) -> None:
        choice = getattr(data, "precision", None)
        mlflow = sys.modules.get("mlflow")
        if choice is None or mlflow is None or mlflow.active_run() is None:
            return
        from .components.reporting.environment import machine_description

        machine = machine_description()
        mlflow.set_tags(
            {
                f"precision.{dataset_name}.dtype": choice.dtype,
                f"precision.{dataset_name}.reason": choice.reason,
                "machine.cpu": machine["cpu"],
                "machine.bf16_native": str(machine["precision"]["bf16_native"]),
                "machine.auto_cpu_dtype": machine["precision"]["auto_cpu_dtype"],
            }
        )

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Any) -> None:
        # No MLflow run can be active if nothing imported mlflow (kedro-mlflow does, on load).
        mlflow = sys.modules.get("mlflow")
        if mlflow is None or mlflow.active_run() is None:
            return
        if logs_metrics(dataset_name):
            self._log_metrics(dataset_name, data)
        dataset = self._catalog.get(dataset_name) if self._catalog is not None else None
        if dataset is not None and _is_matplotlib(dataset):
            self._log_figure_files(dataset_name, dataset)

    @staticmethod
    def _log_metrics(dataset_name: str, data: Any) -> None:
        import mlflow

        if not isinstance(data, Mapping):
            raise TypeError(
                f"{dataset_name}: expected a dict of 'name': number entries to log as MLflow "
                f"metrics, got {type(data).__name__}"
            )
        metrics, skipped = flat_metrics(dataset_name, data)
        if skipped:
            logger.info(
                "%s: %d entries are not numbers, not logged: %s",
                dataset_name,
                len(skipped),
                skipped,
            )
        non_finite = [k for k, v in metrics.items() if not math.isfinite(v)]
        if non_finite:
            logger.warning(
                "%s: non-finite metrics logged as they are: %s", dataset_name, non_finite
            )
        mlflow.log_metrics(metrics)
        logger.info("MLflow: logged %d metrics from %s", len(metrics), dataset_name)

    @staticmethod
    def _log_figure_files(dataset_name: str, dataset: AbstractVersionedDataset) -> None:
        import mlflow

        artifact_dir = reporting_artifact_dir(PurePosixPath(dataset._filepath))
        if artifact_dir is None:
            return
        path = saved_path(dataset)
        if path.is_dir():  # a dict or list of figures: one PNG per key
            mlflow.log_artifacts(str(path), artifact_path=f"{artifact_dir}/{path.name}")
        elif path.is_file():
            mlflow.log_artifact(str(path), artifact_path=artifact_dir)
        else:
            raise FileNotFoundError(f"{dataset_name}: saved figure not found at {path}")
        logger.info("MLflow: logged %s as artifact under %s", dataset_name, artifact_dir)


def _is_matplotlib(dataset: Any) -> bool:
    # Not imported: no dataset of that class exists, and importing it would load pyplot (~1 s).
    module = sys.modules.get("kedro_datasets.matplotlib.matplotlib_dataset")
    return module is not None and isinstance(dataset, module.MatplotlibDataset)


class ShardingHook:
    """Closes the Dask cluster the per-user stages started (`components.models.sharding`), and with it
    the models its workers hold, when a run ends or fails. A cluster is started by the first
    sharded stage that needs it, so a run without one starts nothing."""

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        from .components.models.sharding import close_clusters

        close_clusters()

    @hook_impl
    def on_pipeline_error(
        self, error: Exception, run_params: dict[str, Any], pipeline: Any, catalog: Any
    ) -> None:
        from .components.models.sharding import close_clusters

        close_clusters()
