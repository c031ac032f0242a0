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


def test_make_runs_params_leave_out_movies_table_3_and_the_zero_shot_column(tmp_path, project_root):
    """`make run` passes RUN_PARAMS (Makefile) to `kedro run`: the default environment's
    pipelines lose movie's recommendation nodes and nothing else, and no scene asks for the
    keyword-quality report's zero-shot LLM column; `make run-full` keeps both."""
    from kedro.framework.cli.utils import _split_params
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    makefile = (project_root / "Makefile").read_text().splitlines()
    (line,) = [line for line in makefile if line.startswith("RUN_PARAMS ?=")]
    runtime_params = _split_params(None, None, line.split("?=", 1)[1].strip())
    bootstrap_project(project_root)
    conf = tmp_path / "conf"
    shutil.copytree(project_root / "conf", conf, symlinks=True)
    (conf / "local").mkdir(exist_ok=True)
    (conf / "local" / "globals.yml").write_text(yaml.safe_dump({"data_root": str(tmp_path)}))

    def nodes(params):
        with KedroSession.create(
            project_path=project_root, conf_source=str(conf), runtime_params=params
        ) as session:
            parameters = session.load_context().params
            compared = {
                s: parameters[s]["keyword_extraction"]["quality"]["compare_llm_adapter"]
                for s in scene_names()
            }
            return (
                {n.name for n in pipelines["__default__"].nodes},
                {n.name for n in pipelines["recommendation"].nodes},
                compared,
            )

    full, full_recommendation, full_compared = nodes(None)
    quick, quick_recommendation, quick_compared = nodes(runtime_params)
    movie_table_3 = {n for n in full_recommendation if n.startswith("movie.")}
    assert movie_table_3 and quick_recommendation == full_recommendation - movie_table_3
    assert quick == full - movie_table_3
    assert set(full_compared.values()) == {"none"} and set(quick_compared.values()) == {None}
