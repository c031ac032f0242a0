"""Your own data, end to end: `kedro pmg add-scene` on a folder the project has never seen
(tests/fixtures/ceramics: its own item attributes, images under `photos/<shape>s/` named by an
`image` column, ISO 8601 timestamps with and without offsets, ratings, review texts in several
scripts, a BOM and CRLF line ends), then the whole default chain in the `test` environment, with
no code change. The run uses a copy of conf/ (add-scene writes into its `test` folder) and a data
root in the test's temp folder; only the new namespace runs.
"""

import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from pmg_kedro.scene_cli import pmg

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "ceramics"
SCENE = "ceramics"
ATTRIBUTES = ["shape", "glaze", "maker", "finish"]


@pytest.fixture(scope="module")
def scene_run(tmp_path_factory, project_root):
    """add-scene, then `__default__` for the scene; returns (session arguments, add-scene output)."""
    tmp = tmp_path_factory.mktemp("folder_scene")
    conf = tmp / "conf"
    shutil.copytree(project_root / "conf", conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    test_globals = yaml.safe_load((conf / "test" / "globals.yml").read_text())
    test_globals["data_root"] = str(tmp / "data")
    (conf / "test" / "globals.yml").write_text(yaml.safe_dump(test_globals))
    args = ["add-scene", SCENE, "--from", str(FIXTURE), "--env", "test", "--conf-source", str(conf)]
    added = CliRunner().invoke(pmg, [*args, "--item-noun", "ceramic piece"])
    assert added.exit_code == 0, added.output

    bootstrap_project(project_root)
    session_args = {"project_path": project_root, "env": "test", "conf_source": str(conf)}
    with KedroSession.create(**session_args) as session:
        session.run(pipeline_names=["__default__"], namespaces=[SCENE])
    return session_args, added.output


@pytest.fixture(scope="module")
def catalog(scene_run):
    with KedroSession.create(**scene_run[0]) as session:
        return session.load_context().catalog


def _positives() -> pd.DataFrame:
    """The fixture's positive interactions in time order, read independently of the project."""
    table = pd.read_csv(FIXTURE / "interactions.csv")
    table["time"] = pd.to_datetime(table["timestamp"], format="ISO8601", utc=True)
    return table[table["rating"] >= 4].sort_values(["user_id", "time"], kind="stable")


def test_add_scene_printed_what_it_found_and_the_next_command(scene_run):
    output = scene_run[1]
    assert f"Next: kedro run --env test --namespaces {SCENE}" in output
    assert "images: image column" in output and "recommendation (Table 3): yes" in output


def test_ingestion_reads_the_folder(catalog):
    items = catalog.load(f"{SCENE}.items").set_index("item_id")
    raw = pd.read_csv(FIXTURE / "items.csv", encoding="utf-8-sig", dtype=str).set_index("item_id")
    assert items["title"].to_dict() == raw["title"].to_dict()  # quoted commas, 茶碗, Ваза
    assert list(items.loc["cer-03", "finish"]) == ["matte", "crackle"]
    index = catalog.load(f"{SCENE}.image_index").set_index("item_id")["image_path"]
    assert {i: Path(p) for i, p in index.items()} == {
        i: FIXTURE / p for i, p in raw["image"].items()
    }
    users = catalog.load(f"{SCENE}.users").set_index("user_id")
    assert users.loc["u02", "country"] == "France" and not users["simulated"].any()


def test_histories_are_the_positives_in_time_order(catalog):
    histories = catalog.load(f"{SCENE}.histories").set_index("user_id")
    n_history = catalog.load(f"params:{SCENE}.ingestion")["split"]["n_history"]
    for user, rows in _positives().groupby("user_id"):
        ids = rows["item_id"].tolist()
        assert histories.at[user, "target"] == ids[-1]
        assert list(histories.at[user, "history"]) == ids[:-1][-n_history:]
        assert list(histories.at[user, "history_text"]) == rows["text"].fillna("").tolist()[:-1]


def test_the_keyword_prompts_ask_the_attribute_columns(catalog):
    preference = catalog.load(f"{SCENE}.preference_keywords")
    assert preference["attributes"].map(list).map(ATTRIBUTES.__eq__).all()
    assert preference["raw_answers"].map(len).eq(len(ATTRIBUTES)).all()
    split = catalog.load(f"{SCENE}.user_split")
    evaluation = set(split.loc[split["split"] == "evaluation", "user_id"])
    assert set(preference.loc[preference["purpose"] == "evaluation", "user_id"]) == evaluation
    target = catalog.load(f"{SCENE}.target_keywords")
    assert target["keywords"].map(lambda k: list(k)[0] == "ceramic piece").all()
    quality = catalog.load(f"{SCENE}.keyword_quality")
    assert set(quality["checks"]) == {f"target_{a}" for a in ATTRIBUTES}


def test_soft_embeddings_generation_and_table1_ran(catalog):
    report = catalog.load(f"{SCENE}.personalization_report")
    paper_variants = {"pmg", "without_embeddings", "without_keywords", "without_both"}
    assert not paper_variants & set(report["not_applicable"])  # the items have images
    summary = catalog.load(f"{SCENE}.metric_summary")
    table1 = catalog.load(f"{SCENE}.table1_report")
    assert "identity probe: not applicable" in table1  # no identity probe declared: says why
    assert "semantic probe: nearest-centroid classifier" in table1 and "items.maker" in table1
    assert summary  # the tracked summary exists


def test_table3_ran_for_the_scene(catalog):
    table3 = catalog.load(f"{SCENE}.table3_summary")
    assert table3
    assert "MMGCN" in catalog.load(f"{SCENE}.recommendation_report_markdown")


def test_viz_and_the_demo_see_the_namespace(scene_run, catalog):
    from kedro.framework.project import pipelines

    from pmg_kedro.demo.scene_data import load_scene

    with KedroSession.create(**scene_run[0]) as session:
        params = session.load_context().params
    pipelines.set_requested(None)
    assert any(n.namespace == SCENE for n in pipelines["__default__"].nodes)
    assert SCENE in params["scenes"]  # the demo lists every scene of its environment's params
    llm, generator = catalog.load("llm"), catalog.load("generator")
    data = load_scene(catalog, SCENE, params["scenes"][SCENE], llm, generator)
    assert data.ready and data.embedder is not None, data.no_embedder
    assert len(data.evaluation_users()) == params[SCENE]["protocol"]["n_evaluation"]
