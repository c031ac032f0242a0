"""The scenes of the paper (§4.1.1) as Kedro namespaces: one pipeline, one instance per scene.

What each scene has and which generation variants exist are declared in
`conf/base/parameters_scenes.yml`; pipelines read it here once, when they are built, so that the
pipeline's shape comes from conf, not from file paths or scene names in code.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from kedro.pipeline import Pipeline

SCENES_FILE = Path(__file__).resolve().parents[2] / "conf" / "base" / "parameters_scenes.yml"


@cache
def scene_conf() -> dict[str, Any]:
    """`conf/base/parameters_scenes.yml`: {"scenes": {...}, "ablations": {...}}."""
    if not SCENES_FILE.is_file():
        raise FileNotFoundError(f"scene capabilities not found: {SCENES_FILE}")
    return yaml.safe_load(SCENES_FILE.read_text())


SCENES: tuple[str, ...] = tuple(scene_conf()["scenes"])
# Paper Table 1's variants plus the controls, in conf order (pmg first).
GENERATION_VARIANTS: tuple[str, ...] = tuple(scene_conf()["ablations"])


def scenes_where(capability: str) -> tuple[str, ...]:
    """Scenes whose capability is true in conf (e.g. `recommendation`)."""
    return tuple(s for s, caps in scene_conf()["scenes"].items() if caps.get(capability))


def per_scene(
    template: Pipeline, scenes: tuple[str, ...] = SCENES, shared: frozenset[str] = frozenset()
) -> Pipeline:
    """Instantiate `template` once per scene namespace (`movie.items`, `params:movie.x`, ...).

    `shared` names datasets every scene reads as they are (models such as `llm`) and parameters
    outside the scene blocks (`params:ablations`), unprefixed.
    """
    inputs = {s for s in shared if not s.startswith("params:")} or None
    parameters = {s for s in shared if s.startswith("params:")} or None
    return sum(
        (
            Pipeline(template, namespace=scene, inputs=inputs, parameters=parameters)
            for scene in scenes
        ),
        start=Pipeline([]),
    )
