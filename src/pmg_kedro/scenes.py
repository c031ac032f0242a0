"""The scenes of the paper (§4.1.1) as Kedro namespaces: one pipeline, one instance per scene.

What each scene has (`scenes`) and which generation variants exist (`ablations`) are parameters
(conf/base/parameters_scenes.yml), read through the project's config loader like every other
parameter, so an environment (or `--params`) can change them; nodes read them as `params:scenes`
and `params:ablations`.

They also shape the pipelines: a scene is a namespace and a variant a namespace inside it, made
when the pipelines are built. Kedro builds them once per process, when something first reads
`kedro.framework.project.pipelines`, and a session reads them after it has made its context. So
the project's context (`ProjectContext`, settings.py's CONTEXT_CLASS) hands its config loader to
`use_session_conf` when it is made, and the pipelines take the scenes of the session's
environment: `kedro run --env <env>`, `kedro viz` (which turns hooks off: a hook would not do),
`kedro catalog`, the notebooks' `%reload_kedro`. A later session in the same process whose scenes
differ has the pipelines rebuilt. Without a session (`kedro registry list`, a test that builds a
pipeline) the environment is `KEDRO_ENV`, else Kedro's default run environment.

The other way, one pipeline shape for every environment with capabilities read only at run
time, would need catalog entries and parameters for every scene and variant any environment
might name, and a scene's absence (emoticon has no recommendation task) would become a node that
runs to say "not applicable" for a whole pipeline.
"""

from __future__ import annotations

import os
from typing import Any

from kedro.framework.context import KedroContext
from kedro.pipeline import Pipeline

from .config_loader import project_config_loader

_session_conf: dict[str, Any] | None = None


def _conf_of(parameters: dict[str, Any]) -> dict[str, Any]:
    return {"scenes": parameters["scenes"], "ablations": parameters["ablations"]}


def scene_conf(env: str | None = None) -> dict[str, Any]:
    """{"scenes": {scene: capabilities}, "ablations": {variant: settings}} of environment `env`,
    or (None) of the current session (module docstring)."""
    global _session_conf
    if env is not None:
        return _conf_of(project_config_loader(env)["parameters"])
    if _session_conf is None:
        _session_conf = _conf_of(project_config_loader(os.environ.get("KEDRO_ENV"))["parameters"])
    return _session_conf


def use_session_conf(config_loader: Any) -> None:
    """Take the scenes and variants of a session's config loader; pipelines built for other ones
    are rebuilt on their next read."""
    global _session_conf
    conf = _conf_of(config_loader["parameters"])
    if _session_conf is not None and conf != _session_conf:
        from kedro.framework.project import PACKAGE_NAME, pipelines

        if PACKAGE_NAME:
            pipelines.configure(f"{PACKAGE_NAME}.pipeline_registry")
    _session_conf = conf


class ProjectContext(KedroContext):
    """Kedro's context, which takes its environment's scenes and variants when it is made (before
    the session reads any pipeline, whether hooks run or not)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        use_session_conf(self.config_loader)


def scene_names() -> tuple[str, ...]:
    """The scenes, in conf order."""
    return tuple(scene_conf()["scenes"])


def generation_variants() -> tuple[str, ...]:
    """Paper Table 1's variants plus the controls, in conf order (pmg first)."""
    return tuple(scene_conf()["ablations"])


def scenes_where(capability: str) -> tuple[str, ...]:
    """Scenes whose capability is true in conf (e.g. `recommendation`)."""
    return tuple(s for s, caps in scene_conf()["scenes"].items() if caps.get(capability))


def per_scene(
    template: Pipeline,
    scenes: tuple[str, ...] | None = None,
    shared: frozenset[str] = frozenset(),
) -> Pipeline:
    """Instantiate `template` once per scene namespace (`movie.items`, `params:movie.x`, ...);
    `scenes` None: every scene.

    `shared` names datasets every scene reads as they are (models such as `llm`) and parameters
    outside the scene blocks (`params:ablations`), unprefixed.
    """
    inputs = {s for s in shared if not s.startswith("params:")} or None
    parameters = {s for s in shared if s.startswith("params:")} or None
    return sum(
        (
            Pipeline(template, namespace=scene, inputs=inputs, parameters=parameters)
            for scene in (scene_names() if scenes is None else scenes)
        ),
        start=Pipeline([]),
    )
