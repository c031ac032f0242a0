"""model_preparation end to end in the `test` environment (its own catalog and parameters); in
`paper` / `paper_random*` it must not run, keyword adapter included; in `base` it must not
rewrite the committed weights; in `reference` it writes the committed adapter. The adapter's
nodes themselves: test_keyword_adapter.py."""

import shutil

import pandas as pd
import pytest
import torch
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner

from pmg_kedro.components.models.generator import Generator
from pmg_kedro.components.models.scorer import TinyClip
from pmg_kedro.components.models.training_loop import UNTRAINED
from pmg_kedro.config_loader import project_config_loader
from pmg_kedro.datasets.model_folder import ModelFolderDataset
from pmg_kedro.pipelines.model_preparation.keyword_adapter import keyword_adapter_pipeline
from pmg_kedro.pipelines.model_preparation.nodes import (
    ModelPreparationDisabled,
    train_tiny_generator,
    train_tiny_scorer,
)
from pmg_kedro.pipelines.model_preparation.pipeline import create_pipeline
from pmg_kedro.scenes import scene_names

MODEL_PREPARATION_ENTRIES = {
    "embedded_generator",
    "embedded_scorer",
    "icon_corpus",
    "icon_corpus_counts",
    "scorer_training_history",
    "generator_training_history",
    "model_preparation_loss_curves",
    "model_preparation_sample_grids",
    "scorer_check",
    "generator_check",
    "model_preparation_report",
}
KEYWORD_ADAPTER_ENTRIES = {
    "{scene}.keyword_adapter_examples",
    "embedded_keyword_adapter",
    "keyword_adapter_card",
    "keyword_adapter_training_history",
}


def _loader(project_root, env):
    return project_config_loader(env, project_root / "conf")


def _catalog(project_root, env, tmp, redirect_models=False, names=MODEL_PREPARATION_ENTRIES):
    """The env's entries `names` with every output under `tmp`; the committed models' folders
    too when `redirect_models`, else an entry pointing at them fails the test."""
    loader = _loader(project_root, env)
    entries = {k: v for k, v in loader["catalog"].items() if k in names}
    assert set(entries) == names
    data_root = loader["globals"]["data_root"]
    for entry in entries.values():  # outputs go to tmp_path, never to the project's data/
        for key in ("filepath", "path"):
            if str(entry.get(key, "")).startswith(data_root):
                entry[key] = str(tmp / entry[key][len(data_root) :].lstrip("/"))
            if redirect_models and str(entry.get(key, "")).startswith("models/"):
                entry[key] = str(tmp / entry[key])
            assert not str(entry.get(key, "")).startswith("models/"), "committed models touched"
    catalog = DataCatalog.from_config(entries)
    catalog["params:model_preparation"] = loader["parameters"]["model_preparation"]
    return catalog, loader["parameters"]["model_preparation"]


@pytest.mark.timeout(300)
def test_model_preparation_runs_in_test_env(project_root, tmp_path):
    torch.manual_seed(0)
    catalog, params = _catalog(project_root, "test", tmp_path)
    assert params["train"] is True
    # the keyword adapter's part runs on its own in test_keyword_adapter.py (tiny random Llama)
    SequentialRunner().run(create_pipeline() - keyword_adapter_pipeline(), catalog)

    report = catalog.load("model_preparation_report")
    assert report["environment_trains"] is True
    assert report["icon_corpus"]["emoji_images"] == 300
    assert report["generator_training"]["unet_steps"] == 6
    # then the scene-concept stage, on a concept the seed held out but always_train keeps
    assert report["generator_training"]["scene_finetune_steps"] == 3
    assert report["generator_training"]["scene_finetune_concepts"] == [
        "1st place medal",
        "ATM sign",
    ]
    assert report["icon_corpus"]["heldout_concepts"] > 0
    table = catalog.load("icon_corpus").table
    assert set(table.loc[table["concept"] == "1st place medal", "split"]) == {"train"}
    assert report["scorer_check"]["chance"] > 0
    assert 0.0 <= report["generator_check"]["top1_accuracy"] <= 1.0
    assert report["generator_check"]["batch_cost"]["ratio"] > 0
    generator = catalog.load("embedded_generator")
    assert isinstance(generator, Generator)
    assert isinstance(catalog.load("embedded_scorer"), TinyClip)
    grids = list(tmp_path.glob("08_reporting/model_preparation/sample_grids/*/sample_grids/*.png"))
    assert {p.stem for p in grids} == {"heldout_captions", "emoji_concepts", "fashion_classes"}
    assert list(tmp_path.glob("08_reporting/model_preparation/loss_curves.png/*/loss_curves.png"))


def _tree(folder):
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_the_pipeline_holds_the_keyword_adapter():
    names = {n.name for n in create_pipeline().nodes}
    assert {n.name for n in keyword_adapter_pipeline().nodes} < names
    assert "keyword_adapter_training" in names and "movie.keyword_adapter_examples" in names


@pytest.mark.parametrize("env", ["paper", "paper_random", "paper_random_tiny"])
def test_disabled_env_stops_at_the_first_node_untouched(project_root, tmp_path, env):
    """paper / paper_random*: no placeholder run; every first node (the corpus, each scene's
    keyword adapter examples) stops it on its own, and nothing is written."""
    names = MODEL_PREPARATION_ENTRIES | KEYWORD_ADAPTER_ENTRIES
    catalog, params = _catalog(project_root, env, tmp_path, redirect_models=True, names=names)
    assert params["enabled"] is False
    parameters = _loader(project_root, env)["parameters"]
    pipeline = create_pipeline()
    for name in pipeline.inputs() - set(catalog.keys()):  # behavior and LLM: never read
        value = pd.DataFrame()
        if name.startswith("params:"):
            scene, _, block = name.removeprefix("params:").partition(".")
            value = parameters[scene][block] if block else parameters[scene]
        catalog[name] = MemoryDataset(value, copy_mode="assign")
    committed = _tree(project_root / "models" / "embedded")
    roots = [n for n in pipeline.nodes if not set(n.inputs) & pipeline.all_outputs()]
    assert {n.name for n in roots} == {
        "build_icon_corpus",
        *(f"{scene}.keyword_adapter_examples" for scene in scene_names()),
    }
    for part in [*(Pipeline([root]) for root in roots), pipeline]:
        with pytest.raises(ModelPreparationDisabled, match="model_preparation.enabled is false"):
            SequentialRunner().run(part, catalog)
    assert list(tmp_path.rglob("*")) == []
    assert _tree(project_root / "models" / "embedded") == committed


def test_reference_writes_the_committed_keyword_adapter(project_root):
    """reference trains the adapter into models/embedded/keyword_adapter/ (what keyword_extraction
    loads); base writes its "not trained" note under the data root, never over the committed one."""
    for env, trains in (("reference", True), ("base", False)):
        loader = _loader(project_root, env)
        catalog = loader["catalog"]
        assert loader["parameters"]["keyword_adapter_training"]["train"] is trains
        written = catalog["embedded_keyword_adapter"]["filepath"]
        card = catalog["keyword_adapter_card"]["filepath"]
        committed = catalog["keyword_adapter"]["filepath"]
        assert (written == committed) is trains
        assert card.endswith("keyword_adapter/MODEL_CARD.md")
        assert card.startswith("models/embedded/") is trains


def test_base_measures_the_committed_weights_without_rewriting_them(project_root, tmp_path):
    """base: the training nodes return UNTRAINED and saving it leaves the folder's bytes."""
    params = _loader(project_root, "base")["parameters"]["model_preparation"]
    assert params["enabled"] is True and params["train"] is False
    folder = tmp_path / "scorer"
    shutil.copytree(project_root / "models" / "embedded" / "scorer", folder)
    before = _tree(folder)
    for train in (train_tiny_scorer, train_tiny_generator):
        model, history = train(None, params)
        assert model is UNTRAINED and "committed weights are kept" in history["skipped"]
        ModelFolderDataset(path=str(folder), kind="scorer").save(model)
    assert _tree(folder) == before


def test_the_generator_learns_every_emoji_of_the_emoticon_scene(project_root):
    """The concepts kept out of the held-out split and fine-tuned on are exactly the emoticon
    scene's emoji (ingestion's emoticon_map, named as the items are): a scene emoji added there
    and not here fails."""
    from pmg_kedro.components.data.sources.emoji_images import describe
    from pmg_kedro.components.models.icon_corpus import base_concept

    parameters = _loader(project_root, "base")["parameters"]
    scene = {
        base_concept(describe(char).name)
        for char in parameters["emoticon"]["ingestion"]["emoticon_map"].values()
    }
    assert len(scene) == 15
    prep = parameters["model_preparation"]
    assert set(prep["icon_corpus"]["always_train"]) == scene
    assert set(prep["generator"]["scene_finetune"]["concepts"]) == scene
    assert prep["generator"]["start_from"] is None  # a full retrain unless asked
