"""model_preparation end to end in the `test` environment (its own catalog and parameters)."""

import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner

from pmg_kedro.components.generator import Generator
from pmg_kedro.components.scorer import TinyClip
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


def _catalog(project_root, env, tmp):
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


def test_paper_env_skips_without_touching_models(project_root, tmp_path):
    catalog, params = _catalog(project_root, "paper", tmp_path)
    assert params["enabled"] is False
    SequentialRunner().run(create_pipeline(), catalog)
    report = catalog.load("model_preparation_report")
    assert report["environment_trains"] is False
    assert "disabled" in report["generator_check"]["skipped"]
    assert not (tmp_path / "06_models").exists()
