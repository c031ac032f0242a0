"""The analysis notebook runs headless (papermill) on a `test` run and shows what the run wrote."""

from __future__ import annotations

import json
import re

import nbformat
import pytest

from pmg_kedro.scenes import scene_conf

SCENE = "emoticon"  # real users with item images in the test environment
N_USERS = 2


@pytest.fixture(scope="module")
def notebook_path(project_root):
    return project_root / "notebooks" / "pmg_analysis.ipynb"


def test_environment_is_a_papermill_parameter_and_no_path_is_written_in(notebook_path):
    notebook = nbformat.read(notebook_path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    parameters = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1
    assert re.search(r'^env = "base"', parameters[0].source, re.MULTILINE)
    for cell in code:  # data is reached through the catalog only
        assert not re.search(r"data/|\.parquet|\.png|\.csv|/work/|/home/", cell.source), cell.source


@pytest.fixture(scope="module")
def executed(request, run_pipeline, test_catalog, notebook_path, project_root, tmp_path_factory):
    """The notebook run by papermill in the `test` environment, after a `__default__` test run.

    Reuses the session's default run when conftest provides one (`test_env_default_run`).
    """
    import papermill

    try:
        request.getfixturevalue("test_env_default_run")
    except pytest.FixtureLookupError:
        run_pipeline("__default__")
    output = tmp_path_factory.mktemp("notebook") / "pmg_analysis.ipynb"
    papermill.execute_notebook(
        str(notebook_path),
        str(output),
        parameters={"env": "test", "scene": SCENE, "n_users": N_USERS},
        kernel_name="python3",  # the interpreter running the tests (the project's .venv)
        cwd=str(notebook_path.parent),  # where Jupyter starts a notebook's kernel
        progress_bar=False,
        execution_timeout=300,
    )
    return nbformat.read(output, as_version=4), test_catalog()


def _outputs(notebook, output_type=None):
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output_type is None or output.output_type == output_type:
                yield output


def _shown(notebook) -> dict:
    text = "".join(o.text for o in _outputs(notebook, "stream"))
    lines = [line for line in text.splitlines() if line.startswith("shown: ")]
    assert len(lines) == 1, "the notebook's last cell prints what it showed"
    return json.loads(lines[0].removeprefix("shown: "))


def test_notebook_runs_without_errors(executed):
    notebook, _ = executed
    assert not list(_outputs(notebook, "error"))
    assert _shown(notebook)["environment"] == "test"


def test_every_table_is_a_registered_output_shown_after_a_default_run(
    executed, registered_pipelines
):
    """The notebook's table names are outputs of the registered pipelines (a renamed dataset fails
    here); after a `__default__` run each one is shown, and only a scene a pipeline does not
    instantiate says "not applicable"."""
    notebook, catalog = executed
    shown = _shown(notebook)["tables"]
    outputs = set().union(*(p.all_outputs() for p in registered_pipelines.values()))
    for name, state in shown.items():
        if state == "not applicable":
            assert name not in outputs, name
        else:
            assert state == "shown", f"{name}: {state} after a __default__ run"
            assert name in outputs and catalog.exists(name), name
    text = "".join(o.text for o in _outputs(notebook, "stream"))
    assert "has not been produced" not in text


def test_table3_is_shown_for_every_scene_of_the_recommendation_pipeline(
    executed, registered_pipelines
):
    notebook, catalog = executed
    shown = _shown(notebook)["tables"]
    recommendation = registered_pipelines["recommendation"].all_outputs()
    table3 = {name for name, state in shown.items() if state == "shown" and name in recommendation}
    scenes = {name.split(".")[0] for name in recommendation}
    assert scenes and {name.split(".")[0] for name in table3} == scenes
    markdown = [
        o.data["text/markdown"] for o in _outputs(notebook) if "text/markdown" in o.get("data", {})
    ]
    for name in table3:
        report = catalog.load(name)
        assert "Table 3" in report and report.strip() in (m.strip() for m in markdown), name


def test_users_shown_are_the_first_evaluation_users(executed):
    notebook, catalog = executed
    split = catalog.load(f"{SCENE}.user_split")
    evaluation = set(split.loc[split["split"] == "evaluation", "user_id"])
    histories = catalog.load(f"{SCENE}.histories")
    expected = [u for u in histories["user_id"] if u in evaluation][:N_USERS]
    assert expected, "the test run has no evaluation user with a history"
    assert _shown(notebook)["users"] == expected


def test_variants_are_compared_on_the_same_user_and_seed(executed):
    notebook, catalog = executed
    shown = _shown(notebook)
    variants = scene_conf("test")["ablations"]  # the notebook's environment
    images = {v: catalog.load(f"{SCENE}.{v}.chosen_images") for v in variants}
    assert shown["variants"] == [v for v in variants if images[v]]
    assert {"pmg", "without_both"} <= set(shown["variants"])
    split = catalog.load(f"{SCENE}.user_split")
    evaluation = set(split.loc[split["split"] == "evaluation", "user_id"])
    assert len(shown["paired_keys"]) == N_USERS
    for key in shown["paired_keys"]:
        assert key.split("/")[0] in evaluation
        assert all(key in images[v] for v in shown["variants"]), key
    # Two figures: the users' history/target/PMG row and the variant comparison.
    assert sum("image/png" in o.get("data", {}) for o in _outputs(notebook)) == 2


def test_the_positive_controls_are_shown_where_a_scene_has_them(executed):
    """Issue 29: the notebook shows the positive-control comparisons of Table 1 (oracle and
    category variants, taste transfer) for the costume scene's SIMULATED users, and none where a
    scene has no hidden tastes."""
    notebook, catalog = executed
    shown = _shown(notebook)["positive_controls"]
    for scene, n_rows in shown.items():
        table = catalog.load(f"{scene}.table1_comparisons")
        ok = table[table["status"] == "ok"]
        expected = ok["a"].str.contains("oracle|category") | ok["b"].str.contains("oracle|category")
        expected |= ok["reference"] == "user"
        assert n_rows == int(expected.sum()), scene
    assert shown.get("costume", 0) > 0, "costume's SIMULATED users have positive controls"
    assert shown.get("movie", 0) == 0
