"""Project settings. https://docs.kedro.org/en/stable/kedro_project_setup/settings.html"""

import os

from kedro.config import OmegaConfigLoader

# Runs never wait on the network: no telemetry, no model hub (weights come from local paths).
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads sleep instead of spinning (read when torch starts its thread pool; the
# Makefile exports it too, for runs where torch is imported before these settings).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Nested parameter keys of an environment (test, paper, ...) override base key by key.
    "merge_strategy": {"parameters": "soft"},
    "config_patterns": {
        "parameters": ["parameters*", "parameters*/**", "**/parameters*"],
        "catalog": ["catalog*", "catalog*/**", "**/catalog*"],
    },
}
