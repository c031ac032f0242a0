"""The metric_evaluation pipeline, every scene namespace, on an in-memory catalog (SequentialRunner).

costume: the full synthetic scene; emoticon: users without hidden tastes; movie: no item images and
no Table 2 images (the scene's reports must say not applicable, not fail).
"""

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from pmg_kedro.components import image_evaluation
from pmg_kedro.pipelines.metric_evaluation import create_pipeline, nodes
from pmg_kedro.scenes import GENERATION_VARIANTS, SCENES, scene_conf

from . import synthetic_scene as scene

pytestmark = pytest.mark.usefixtures("one_thread")
OUTPUTS = (
    "table1",
    "table1_comparisons",
    "table1_report",
    "table2",
    "table2_report",
    "metric_summary",
    "comparison_figure",
    "embedding_figure",
    "selection_scatter",
)


def _scene_inputs(name, data):
    if name == "emoticon":
        data["users"] = data["users"].drop(columns="taste_classes")
    if name == "movie":
        data["image_index"] = data["image_index"].iloc[0:0]
        data["table2_selections"] = data["table2_selections"].iloc[0:0]
        data["table2_images"] = {}
    renamed = {}
    for key, value in data.items():
        for suffix in ("selections", "chosen_images"):
            variant = key.removesuffix(f"_{suffix}")
            if variant in GENERATION_VARIANTS and key.endswith(f"_{suffix}"):
                key = f"{variant}.{suffix}"
        renamed[f"{name}.{key}"] = value
    renamed[f"params:{name}.metric_evaluation"] = {**scene.PARAMS, "scene": name}
    renamed[f"params:{name}.weighted_generation"] = scene.WEIGHTED_GENERATION
    return renamed


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    pipeline = create_pipeline()
    data = {"params:ablations": scene_conf()["ablations"], "params:sharding": {"cluster": "none"}}
    for name in SCENES:
        data |= _scene_inputs(name, scene.build(tmp_path_factory.mktemp(name)))
    missing = sorted(pipeline.inputs() - set(data))
    assert not missing, f"pipeline inputs without test data: {missing}"
    outputs = {f"{s}.{o}" for s in SCENES for o in OUTPUTS}
    catalog = DataCatalog({k: MemoryDataset(v) for k, v in data.items()})
    for name in outputs:
        catalog[name] = _KeptDataset()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(image_evaluation, "Lpips", _NoLpips)
        SequentialRunner().run(pipeline, catalog)
    return catalog


class _KeptDataset(MemoryDataset):
    """Keeps its data after the run (the runner releases datasets once nothing reads them)."""

    def _release(self) -> None:
        pass


class _NoLpips:
    def __init__(self):
        raise FileNotFoundError("no AlexNet weights in this test")


def test_every_scene_gets_every_table_and_figure(run):
    for name in SCENES:
        summary = run.load(f"{name}.metric_summary")
        assert summary["scene"] == name and summary["n_evaluation_users"] == 3
        table1 = run.load(f"{name}.table1")
        assert list(table1["variant"].unique()) == list(GENERATION_VARIANTS)
        assert run.load(f"{name}.comparison_figure").axes


def test_costume_reports_numbers_and_simulated_users(run):
    summary = run.load("costume.metric_summary")
    assert summary["metrics"]["pmg/history/ssim"]["n_users"] == 3
    assert summary["metrics"]["pmg/history/hidden_taste_match"]["mean"] == 1.0
    assert "SIMULATED" in run.load("costume.table1_report")
    assert summary["table2_status"] == "ok"


def test_emoticon_without_hidden_tastes_says_not_applicable(run):
    table1 = run.load("emoticon.table1")
    taste = table1[(table1["metric"] == "hidden_taste_match") & (table1["variant"] == "pmg")]
    assert taste["status"].str.startswith("not applicable: no hidden tastes").all()


def test_movie_without_images_says_so_everywhere(run):
    assert nodes.NO_REFERENCE_IMAGES in run.load("movie.table1_report")
    assert "Table 2 not applicable" in run.load("movie.table2_report")
    assert run.load("movie.metric_summary")["metrics"] == {}
