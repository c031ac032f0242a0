"""Scenes and variants come through the config loader of the session's environment, and the
pipelines take their shape from them."""

from __future__ import annotations

import shutil

import yaml
from kedro.framework.session import KedroSession

from pmg_kedro.scenes import scene_conf, scene_names


def _namespaces(pipeline) -> set[str]:
    return {node.namespace.split(".")[0] for node in pipeline.nodes}


def test_an_environment_changes_the_scenes_and_so_the_pipelines(tmp_path, project_root):
    """An environment switches costume's recommendation off: its session's pipelines and
    parameters have no costume recommendation; the next session of `test` has it again."""
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project_root)
    conf = tmp_path / "conf"
    shutil.copytree(project_root / "conf", conf, symlinks=True)
    env = conf / "no_costume_ranking"
    env.mkdir()
    (env / "parameters_scenes.yml").write_text(
        yaml.safe_dump({"scenes": {"costume": {"recommendation": False}}})
    )
    # Its MLflow store (kedro-mlflow sets it up with the context) stays out of the project.
    (env / "globals.yml").write_text(yaml.safe_dump({"data_root": str(tmp_path / "data")}))

    def session(env: str):
        return KedroSession.create(project_path=project_root, env=env, conf_source=str(conf))

    with session("no_costume_ranking") as narrow:
        params = narrow.load_context().params
        assert _namespaces(pipelines["recommendation"]) == {"movie"}
        assert "recommendation" not in params["costume"]
        assert scene_conf()["scenes"]["costume"]["recommendation"] is False
    with session("test") as usual:
        params = usual.load_context().params
        assert _namespaces(pipelines["recommendation"]) == {"movie", "costume"}
        assert params["costume"]["recommendation"]["seeds"] == [2024, 2025]
    assert _namespaces(pipelines["ingestion"]) == set(scene_names())
