"""Shared by the pipelines' wiring tests: a registered pipeline's nodes by their namespaced name."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from pmg_kedro.scenes import scene_names

MODELS = {"llm", "generator", "scorer", "keyword_adapter"}


def nodes_by_name(pipeline: Pipeline) -> dict:
    return {node.name: node for node in pipeline.nodes}


def foreign_inputs(pipeline: Pipeline, shared: set[str]) -> list[tuple[str, str]]:
    """(node, input) pairs where a scene's node reads another scene's data or a model/parameter
    block outside `shared`: each scene instance must read only its own namespace."""
    leaks = []
    for node in pipeline.nodes:
        scene = node.name.split(".")[0]
        for name in node.inputs:
            own = name.startswith(f"{scene}.") or name.startswith(f"params:{scene}.")
            if not own and name not in shared:
                leaks.append((node.name, name))
    return leaks


def every_scene(names: set[str]) -> set[str]:
    return {f"{scene}.{n}" for scene in scene_names() for n in names}
