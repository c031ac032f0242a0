"""The project's config loader: Kedro's `OmegaConfigLoader`, with per-scene parameters written once.

A scene's parameters are what every scene shares plus what differs for it. The shared part of a
block is written once, under `scene_defaults`, in the block's own file:

    scene_defaults:                     # parameters_protocol.yml
      protocol: {seed: 2024, n_evaluation: 64, max_train_users: 96}
    emoticon:
      protocol: {n_evaluation: 44}      # what differs for this scene

After base and the run's environment are merged (key by key, settings.py), every scene listed
under `scenes` (parameters_scenes.yml) gets `<scene>.<block>`: `scene_defaults.<block>` merged
with what the scene sets itself, dict by dict. Nodes read `params:<scene>.<block>` as before;
`scene_defaults` itself is not a parameter. Three rules:
  - a scene's own value beats a default, whichever environment sets either: an environment that
    changes a value for every scene writes it under `scene_defaults` and, for a scene whose base
    block sets that value itself, under the scene too;
  - a block named like a scene capability (`recommendation`) goes only to the scenes where that
    capability is true (a scene where it is false has no such block, whatever it sets itself);
  - a default `scene: null` becomes the scene's name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.config import OmegaConfigLoader

SCENE_DEFAULTS = "scene_defaults"


def merged(defaults: Any, own: Any) -> Any:
    """`own` over `defaults`, dict by dict (any other value of `own`, lists included, replaces)."""
    if isinstance(defaults, dict) and isinstance(own, dict):
        return {
            **{k: merged(v, own[k]) if k in own else v for k, v in defaults.items()},
            **{k: v for k, v in own.items() if k not in defaults},
        }
    return own


def expand_scene_defaults(parameters: dict[str, Any]) -> dict[str, Any]:
    """`parameters` with `scene_defaults` merged into every scene's blocks (module docstring)."""
    if SCENE_DEFAULTS not in parameters:
        return parameters
    defaults = parameters[SCENE_DEFAULTS]
    scenes = parameters.get("scenes")
    if not isinstance(scenes, dict) or not scenes:
        raise ValueError(
            f"parameters: `{SCENE_DEFAULTS}` needs the scenes it applies to under `scenes` "
            "(conf/base/parameters_scenes.yml)"
        )
    expanded = {k: v for k, v in parameters.items() if k != SCENE_DEFAULTS}
    for scene, capabilities in scenes.items():
        own = dict(expanded.get(scene) or {})
        for block, shared in defaults.items():
            if block in capabilities and not capabilities[block]:
                own.pop(block, None)  # what the scene sets for it, too: the task is switched off
                continue
            values = merged(shared, own.get(block) or {})
            if isinstance(values, dict) and "scene" in values and values["scene"] is None:
                values["scene"] = scene
            own[block] = values
        expanded[scene] = own
    return expanded


class ProjectConfigLoader(OmegaConfigLoader):
    """`OmegaConfigLoader` whose `parameters` have `scene_defaults` merged into every scene."""

    def __getitem__(self, key: str) -> dict[str, Any]:
        config = super().__getitem__(key)
        return expand_scene_defaults(config) if key == "parameters" else config


# The project root (this file is src/pmg_kedro/config_loader.py), for paths that must not depend
# on the working directory (a notebook's kernel runs in notebooks/): `${pmg.abspath:data/x}`.
PROJECT_PATH = Path(__file__).resolve().parents[2]
# settings.py's CONFIG_LOADER_ARGS: defined here so that loaders made outside a session (tests,
# benchmarks, the pipelines' scenes) are built exactly as a session's, without importing settings.
PROJECT_CONFIG_LOADER_ARGS = {
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


def project_config_loader(
    env: str | None = None,
    conf_source: str | Path | None = None,
    runtime_params: dict[str, Any] | None = None,
) -> OmegaConfigLoader:
    """The config loader a session of `env` uses (settings.py's class and arguments) over the
    project's `conf/` (or `conf_source`); `env` None: Kedro's default run environment."""
    return ProjectConfigLoader(
        conf_source=str(conf_source or PROJECT_PATH / "conf"),
        env=env,
        runtime_params=runtime_params,
        **PROJECT_CONFIG_LOADER_ARGS,
    )
