"""model_preparation end to end in the `test` environment (its own catalog and parameters); in
`paper` / `paper_random*` it must not run; in `base` it must not rewrite the committed weights."""

import shutil

import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner

from pmg_kedro.components.generator import Generator
from pmg_kedro.components.scorer import TinyClip
from pmg_kedro.datasets.model_folder import KEEP_EXISTING, ModelFolderDataset
from pmg_kedro.pipelines.model_preparation.nodes import (
    ModelPreparationDisabled,
    train_tiny_generator,
    train_tiny_scorer,
)
from pmg_kedro.pipelines.model_preparation.pipeline import create_pipeline
from pmg_kedro.settings import CONFIG_LOADER_ARGS

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


def _catalog(project_root, env, tmp, redirect_models=False):
    """The env's model_preparation entries with every output under `tmp`; the committed models'
    folders too when `redirect_models`, else an entry pointing at them fails the test."""
    loader = OmegaConfigLoader(
        conf_source=str(project_root / "conf"),
        env=env,
        base_env="base",
        default_run_env=env,
        merge_strategy=CONFIG_LOADER_ARGS["merge_strategy"],
        config_patterns=CONFIG_LOADER_ARGS["config_patterns"],
        runtime_params={},
    )
    entries = {k: v for k, v in loader["catalog"].items() if k in MODEL_PREPARATION_ENTRIES}
    assert set(entries) == MODEL_PREPARATION_ENTRIES
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
    SequentialRunner().run(create_pipeline(), catalog)

    report = catalog.load("model_preparation_report")
    assert report["environment_trains"] is True
    assert report["icon_corpus"]["emoji_images"] == 300
    assert report["generator_training"]["unet_steps"] == 6
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


@pytest.mark.parametrize("env", ["paper", "paper_random", "paper_random_tiny"])
def test_disabled_env_stops_at_the_first_node_untouched(project_root, tmp_path, env):
    """paper / paper_random*: no placeholder run; the first node stops it, nothing is written."""
    catalog, params = _catalog(project_root, env, tmp_path, redirect_models=True)
    assert params["enabled"] is False
    committed = _tree(project_root / "models" / "embedded")
    with pytest.raises(ModelPreparationDisabled, match="model_preparation.enabled is false"):
        SequentialRunner().run(create_pipeline(), catalog)
    assert list(tmp_path.rglob("*")) == []
    assert _tree(project_root / "models" / "embedded") == committed


def test_base_measures_the_committed_weights_without_rewriting_them(project_root, tmp_path):
    """base: the training nodes return KEEP_EXISTING and saving it leaves the folder's bytes."""
    loader = OmegaConfigLoader(
        conf_source=str(project_root / "conf"),
        env="base",
        base_env="base",
        default_run_env="base",
        merge_strategy=CONFIG_LOADER_ARGS["merge_strategy"],
        config_patterns=CONFIG_LOADER_ARGS["config_patterns"],
    )
    params = loader["parameters"]["model_preparation"]
    assert params["enabled"] is True and params["train"] is False
    folder = tmp_path / "scorer"
    shutil.copytree(project_root / "models" / "embedded" / "scorer", folder)
    before = _tree(folder)
    for train in (train_tiny_scorer, train_tiny_generator):
        model, history = train(None, params)
        assert model is KEEP_EXISTING and "committed weights are kept" in history["skipped"]
        ModelFolderDataset(path=str(folder), kind="scorer").save(model)
    assert _tree(folder) == before
