"""`kedro pmg add-scene` (scene_cli.py, scene_setup.py, scene_blocks.py): it checks a scene folder,
infers what the data has, writes the scene's conf under conf/<env>/ and never half-writes: a bad
folder, a taken name or conf that would not load leaves conf/ byte for byte as it was. Every test
writes into a copy of conf/ (`--conf-source`), never the project's."""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pmg_kedro.config_loader import project_config_loader
from pmg_kedro.scene_cli import pmg
from pmg_kedro.scene_setup import scene_files

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "ceramics"
sys.path.insert(0, str(ROOT / "tests" / "components" / "sources"))
from test_folder import _malformed  # noqa: E402  (one malformed copy for both tests)


@pytest.fixture
def conf(tmp_path) -> Path:
    copy = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", copy, ignore=shutil.ignore_patterns("local"))
    (copy / "local").mkdir()
    return copy


def _add(conf: Path, name: str, folder: Path, *extra: str):
    args = ["add-scene", name, "--from", str(folder), "--conf-source", str(conf), "--env", "test"]
    return CliRunner().invoke(pmg, [*args, *extra])


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_add_scene_writes_the_scene_the_config_loader_then_resolves(conf):
    result = _add(conf, "ceramics", FIXTURE, "--item-noun", "ceramic piece")
    assert result.exit_code == 0, result.output
    assert "Next: kedro run --env test --namespaces ceramics" in result.output
    assert "attributes (keyword prompts a_i): shape, glaze, maker, finish" in result.output
    assert "other item columns (kept, not asked): sku" in result.output
    params = project_config_loader("test", conf)["parameters"]
    assert params["scenes"]["ceramics"] == {
        "item_images": "required",
        "simulated_users": False,
        "hidden_tastes": False,
        "conversation": True,
        "recommendation": True,
    }
    assert set(params["scenes"]) == {"movie", "emoticon", "costume", "ceramics"}
    scene = params["ceramics"]
    assert scene["ingestion"]["attribute_columns"] == ["shape", "glaze", "maker", "finish"]
    assert scene["ingestion"]["positive_min_rating"] == 4.0
    assert list(scene["keyword_extraction"]["attributes"]) == ["shape", "glaze", "maker", "finish"]
    assert "ceramic piece" in scene["keyword_extraction"]["principle"]
    # what the scene does not set comes from scene_defaults, as for the built-in scenes
    assert scene["protocol"] == params["movie"]["protocol"]
    assert scene["weighted_generation"] == params["movie"]["weighted_generation"]
    assert scene["keyword_extraction"]["k_p"] == params["movie"]["keyword_extraction"]["k_p"]
    catalog = project_config_loader("test", conf)["catalog"]
    assert catalog["ceramics.raw_source"]["path"] == "tests/fixtures/ceramics"
    assert sorted(p.name for p in (conf / "test").glob("*scene_ceramics.yml")) == sorted(
        scene_files("ceramics")
    )


def test_a_second_add_scene_needs_force_and_keeps_other_scenes(conf):
    assert _add(conf, "ceramics", FIXTURE).exit_code == 0
    before = _digest(conf)
    again = _add(conf, "ceramics", FIXTURE, "--item-noun", "pot")
    assert again.exit_code == 1 and "--force replaces it" in again.output
    assert _digest(conf) == before
    assert _add(conf, "pottery", FIXTURE, "--no-recommendation").exit_code == 0
    forced = _add(conf, "ceramics", FIXTURE, "--item-noun", "pot", "--force")
    assert forced.exit_code == 0, forced.output
    params = project_config_loader("test", conf)["parameters"]
    assert "pot" in params["ceramics"]["keyword_extraction"]["principle"]
    assert params["scenes"]["pottery"]["recommendation"] is False
    assert "recommendation" not in params["pottery"]  # a capability switched off: no block


def test_a_malformed_folder_lists_every_defect_and_writes_nothing(conf, tmp_path):
    bad = _malformed(tmp_path)
    before = _digest(conf)
    result = _add(conf, "ceramics", bad, "--n-evaluation", "12")
    assert result.exit_code == 1
    assert _digest(conf) == before
    text = result.output
    assert "nothing was written" in text
    for expected in (
        "items.csv line 1, field 'caption': expected a name other than the reserved",
        "items.csv line 5, field 'item_id': expected an id no other row has, got 'cer-02'",
        "items.csv line 8, field 'title': expected a value",
        "items.csv line 9, field 'image'",
        "interactions.csv line 2, field 'item_id': expected an item_id listed in the items file",
        "interactions.csv line 3, field 'timestamp'",
        "interactions.csv line 4, field 'rating': expected a number, got 'one'",
        "users.csv line 1, field 'user_id': expected the column to exist",
        "cannot identify image file",
        "field 'user_id': expected more than 12 users with at least 4 qualifying interactions",
    ):
        assert expected in text, expected


def test_names_that_are_taken_or_malformed_are_refused(conf):
    before = _digest(conf)
    for name, why in (("movie", "is taken"), ("sharding", "is taken"), ("My-Shop", "lower-case")):
        result = _add(conf, name, FIXTURE)
        assert result.exit_code == 1 and why in result.output, result.output
    missing = _add(conf, "shop", conf / "nowhere")
    assert missing.exit_code == 1 and "no such folder" in missing.output
    assert _digest(conf) == before


def test_conf_that_would_not_load_is_refused_before_writing(conf):
    # a catalog file of the user's own with the scene's entry: the loader refuses a key twice
    entry = "ceramics.raw_source: {type: pmg_kedro.datasets.scene_sources.FolderSource, path: x}"
    (conf / "test" / "catalog_mine.yml").write_text(entry + "\n")
    before = _digest(conf)
    result = _add(conf, "ceramics", FIXTURE)
    assert result.exit_code == 1 and "would not load" in result.output, result.output
    assert _digest(conf) == before


def test_what_a_plain_folder_infers(conf, tmp_path):
    """No images, no ratings, no texts, an id-like column: the capabilities say so."""
    folder = tmp_path / "plain"
    folder.mkdir()
    items = ["item_id,title,genre,isbn"] + [
        f"b{k},Book {k},{'ab'[k % 2]},97{k:04d}" for k in range(8)
    ]
    (folder / "items.csv").write_text("\n".join(items) + "\n")
    rows = ["user_id,item_id,timestamp"] + [
        f"r{u},b{(u + k) % 8},{k}" for u in range(5) for k in range(6)
    ]
    (folder / "interactions.csv").write_text("\n".join(rows) + "\n")
    result = _add(conf, "books", folder, "--n-evaluation", "2")
    assert result.exit_code == 0, result.output
    params = project_config_loader("test", conf)["parameters"]
    assert params["scenes"]["books"]["item_images"] is False
    assert params["scenes"]["books"]["conversation"] is False
    assert params["books"]["ingestion"]["attribute_columns"] == ["genre"]
    assert "positive_min_rating" not in params["books"]["ingestion"]
    assert params["books"]["protocol"]["n_evaluation"] == 2
    written = yaml.safe_load((conf / "test" / scene_files("books")[0]).read_text())
    assert "metric_evaluation" not in written["books"]  # no images: no probe declared


def test_kedro_lists_the_pmg_group_in_its_own_cli(project_root):
    """`kedro pmg add-scene` is reachable through Kedro's CLI (the project's cli.py registers it)."""
    import os
    import subprocess

    kedro = Path(sys.executable).parent / "kedro"
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "PYTHONPATH": str(project_root / "src")}
    done = subprocess.run(
        [str(kedro), "pmg", "add-scene", "--help"],
        cwd=project_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "--from" in done.stdout
