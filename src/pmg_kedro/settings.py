"""Project settings. https://docs.kedro.org/en/stable/kedro_project_setup/settings.html"""

import os

# Runs never wait on the network: no telemetry, no model hub (weights come from local paths).
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# MLflow's usage telemetry (tracked runs are local: conf/base/mlflow.yml).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# Idle OpenMP threads sleep instead of spinning (read when torch starts its thread pool; the
# Makefile exports it too, for runs where torch is imported before these settings).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pmg_kedro.config_loader import (  # noqa: E402
    PROJECT_CONFIG_LOADER_ARGS,
    ProjectConfigLoader,
)
from pmg_kedro.hooks import ShardingHook, disable_mlflow_telemetry, tracking_hooks  # noqa: E402
from pmg_kedro.preflight import PreflightHook  # noqa: E402
from pmg_kedro.scenes import ProjectContext  # noqa: E402

disable_mlflow_telemetry()

# Tracked runs: kedro-mlflow's hook (one MLflow run per `kedro run`, the parameters of every node)
# without its catalog sweep, and the reported metrics and figures (hooks.py). kedro-mlflow's
# plugin entry point would register its hook a second time, with the sweep. ShardingHook closes
# the per-user stages' Dask cluster when a run ends (components/sharding.py). PreflightHook stops a
# run whose models or raw data are missing before its first node, with one error (preflight.py).
HOOKS = (*tracking_hooks(), ShardingHook(), PreflightHook())
DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow", "kedro-mlflow")

# Kedro's context, which hands its environment's scenes and variants to the pipelines (scenes.py).
CONTEXT_CLASS = ProjectContext
# OmegaConfigLoader, plus each scene's parameters = `scene_defaults` + what differs (config_loader.py).
CONFIG_LOADER_CLASS = ProjectConfigLoader
CONFIG_LOADER_ARGS = PROJECT_CONFIG_LOADER_ARGS  # config_loader.py: the project's loader arguments
