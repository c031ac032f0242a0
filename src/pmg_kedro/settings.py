"""Project settings. https://docs.kedro.org/en/stable/kedro_project_setup/settings.html"""

import os
from pathlib import Path

from kedro.config import OmegaConfigLoader

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

from pmg_kedro.hooks import ShardingHook, disable_mlflow_telemetry, tracking_hooks  # noqa: E402

disable_mlflow_telemetry()

# Tracked runs: kedro-mlflow's hook (one MLflow run per `kedro run`, the parameters of every node)
# without its catalog sweep, and the reported metrics and figures (hooks.py). kedro-mlflow's
# plugin entry point would register its hook a second time, with the sweep. ShardingHook closes
# the per-user stages' Dask cluster when a run ends (components/sharding.py).
HOOKS = (*tracking_hooks(), ShardingHook())
DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow", "kedro-mlflow")

# The project root (this file is src/pmg_kedro/settings.py), for paths that must not depend on
# the working directory (a notebook's kernel runs in notebooks/): `${pmg.abspath:data/x}`.
PROJECT_PATH = Path(__file__).resolve().parents[2]

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Nested parameter keys of an environment (test, paper, ...) override base key by key.
    # conf/<env>/mlflow.yml overrides base key by key too (e.g. only the tracking URI).
    "merge_strategy": {"parameters": "soft", "mlflow": "soft"},
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "catalog": ["catalog*", "catalog*/**", "**/catalog*"],
        "mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"],
    },
    "custom_resolvers": {"pmg.abspath": lambda path: (PROJECT_PATH / path).as_posix()},
}
