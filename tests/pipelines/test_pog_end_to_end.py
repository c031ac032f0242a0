"""The default pipeline on POG-shaped costume data (tests/fixtures/pog) in the `test` environment.

POG items have no attributes beyond category and title, and POG users are real (no hidden taste):
everything downstream of ingestion must read what the data has and say "not applicable" where a
check needs what it lacks. The run uses a copy of conf/ with two files added to `test`: the costume
source pointed at a copy of the fixture, and a data root in the test's temp folder (so the run
never mixes with the Fashion-MNIST runs under data/test_env). Only the costume namespace runs.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from pmg_kedro.scenes import scene_conf

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pog"


def _clicks() -> dict[str, list[str]]:
    """user_id -> clicked item ids in order, read straight from the fixture's user_data.txt."""
    lines = (FIXTURE / "user_data.txt").read_text().splitlines()
    return {u: ids.split(";") for u, ids, _ in (line.split(",") for line in lines if line)}


def _titles() -> dict[str, str]:
    lines = (FIXTURE / "item_data.txt").read_text(encoding="utf-8").splitlines()
    return {line.split(",", 3)[0]: line.split(",", 3)[3] for line in lines if line}


@pytest.fixture(scope="module")
def pog_run(tmp_path_factory, project_root):
    """Run `__default__` (costume namespace) on a copy of the fixture; returns (catalog, pog_dir)."""
    tmp = tmp_path_factory.mktemp("pog_run")
    pog_dir = tmp / "pog"
    shutil.copytree(FIXTURE, pog_dir)
    conf = tmp / "conf"
    shutil.copytree(project_root / "conf", conf, ignore=shutil.ignore_patterns("local"))
    (conf / "local").mkdir()
    source = {
        "costume.raw_source": {
            "type": "pmg_kedro.datasets.scene_sources.CostumeSource",
            "pog_dir": str(pog_dir),
            "fashion_mnist_dir": "/nonexistent",  # POG files take precedence: never read
        }
    }
    (conf / "test" / "catalog_pog_fixture.yml").write_text(yaml.safe_dump(source))
    test_globals = yaml.safe_load((conf / "test" / "globals.yml").read_text())
    test_globals["data_root"] = str(tmp / "data")
    (conf / "test" / "globals.yml").write_text(yaml.safe_dump(test_globals))

    bootstrap_project(project_root)
    session_args = {"project_path": project_root, "env": "test", "conf_source": str(conf)}
    with KedroSession.create(**session_args) as session:
        session.run(pipeline_names=["__default__"], namespaces=["costume"])
    with KedroSession.create(**session_args) as session:
        return session.load_context().catalog, pog_dir


@pytest.fixture(scope="module")
def catalog(pog_run):
    return pog_run[0]


@pytest.fixture(scope="module")
def evaluation_users(catalog):
    split = catalog.load("costume.user_split")
    return set(split.loc[split["split"] == "evaluation", "user_id"])


def test_ingestion_reads_the_pog_files(pog_run):
    catalog, pog_dir = pog_run
    clicks = _clicks()
    items = catalog.load("costume.items")
    assert dict(zip(items["item_id"], items["title"], strict=True)) == _titles()
    assert "class_name" not in items.columns  # the paper's attribute-less items
    index = catalog.load("costume.image_index")
    assert set(index["item_id"]) == set(_titles())
    assert all(Path(p).parent == pog_dir / "images" for p in index["image_path"])
    users = catalog.load("costume.users")
    assert set(users["user_id"]) == set(clicks) and not users["simulated"].any()
    assert not {"taste_classes", "taste_brightness", "taste_texture"} & set(users.columns)
    report = catalog.load("costume.ingestion_report")
    assert report["source"] == f"POG files in {pog_dir}"
    assert report["simulated"] == bool(users["simulated"].any())
    assert report["counts"]["clicks"] == sum(len(ids) for ids in clicks.values())
    assert "note" not in report  # the SIMULATED note belongs to Fashion-MNIST users only


def test_histories_follow_the_click_order(catalog):
    histories = catalog.load("costume.histories").set_index("user_id")
    n_history = catalog.load("params:costume.ingestion")["split"]["n_history"]
    for user, ids in _clicks().items():
        assert histories.at[user, "target"] == ids[-1]
        assert list(histories.at[user, "history"]) == ids[:-1][-n_history:]
    assert not histories["simulated"].any()


def test_the_user_split_is_disjoint_and_sized_by_the_protocol(catalog, evaluation_users):
    split = catalog.load("costume.user_split")
    protocol = catalog.load("params:costume.protocol")
    assert set(split["user_id"]) == set(_clicks()) and split["user_id"].is_unique
    assert len(evaluation_users) == protocol["n_evaluation"]
    assert set(split["split"]) == {"train", "evaluation"}


def test_keyword_quality_says_which_checks_do_not_apply(catalog, evaluation_users):
    quality = catalog.load("costume.keyword_quality")
    assert not quality["simulated_users"] and "SIMULATED" not in quality["scene_note"]
    assert quality["n_users"] == len(evaluation_users)
    assert quality["checks"] == {}
    not_applicable = quality["not_applicable"]
    for check in ("taste_class", "taste_brightness", "taste_texture"):
        assert not_applicable[check].startswith("users are real, not simulated")
    for column in ("class_name", "brightness_level", "texture_level"):
        assert not_applicable[f"baseline:{column}"] == (f"the items table has no column '{column}'")
    markdown = catalog.load("costume.keyword_quality_report")
    assert "- taste_class: not applicable: users are real, not simulated" in markdown


def test_keywords_exist_for_every_evaluation_user(catalog, evaluation_users):
    preference = catalog.load("costume.preference_keywords")
    evaluated = preference[preference["purpose"] == "evaluation"]
    assert set(evaluated["user_id"]) == evaluation_users
    assert evaluated["keywords"].map(len).gt(0).all()
    target = catalog.load("costume.target_keywords").set_index("user_id")
    assert set(target.index) == evaluation_users
    for user in evaluation_users:
        assert target.at[user, "target"] == _clicks()[user][-1]
        assert list(target.at[user, "keywords"])[0] == "costume"


def _n_candidates(ablation: dict, n_grid: int) -> int:
    if ablation["grid"] or ablation.get("candidates") == "grid":
        return n_grid
    return int(ablation.get("candidates", 1))


def test_every_variant_generates_for_every_evaluation_user_and_seed(catalog, evaluation_users):
    params = catalog.load("params:costume.weighted_generation")
    report = catalog.load("costume.personalization_report")
    # POG items have images, so every variant applies but the positive controls: POG users have
    # no hidden taste (no oracle) and POG items no Fashion-MNIST class (no category target)
    ablations = scene_conf()["ablations"]
    controls = {
        v
        for v, a in ablations.items()
        if a.get("preference") == "oracle" or a.get("target") == "category"
    }
    assert set(report["not_applicable"]) == controls
    pairs = {(u, s) for u in evaluation_users for s in params["seeds"]}
    floor, alpha = params["cosine_floor"], params["alpha"]
    for variant in set(ablations) - controls:
        selections = catalog.load(f"costume.{variant}.selections")
        per_pair = selections.groupby(["user_id", "seed"])["chosen"]
        assert per_pair.sum().eq(1).all() and set(per_pair.sum().index) == pairs, variant
        n = _n_candidates(scene_conf()["ablations"][variant], len(params["weight_ratios"]))
        assert per_pair.size().eq(n).all(), variant
        z = alpha * np.log(np.maximum(selections["d_p"], floor))
        z += (1 - alpha) * np.log(np.maximum(selections["d_t"], floor))
        np.testing.assert_allclose(selections["z"], z, rtol=1e-6)
        chosen = catalog.load(f"costume.{variant}.chosen_images")
        assert set(chosen) == {f"{u}/s{s}" for u, s in pairs}
        assert all(image.mode == "RGB" for image in chosen.values())
    assert set(catalog.load("costume.user_images")) == evaluation_users
