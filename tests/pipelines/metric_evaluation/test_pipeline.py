"""The metric_evaluation pipeline, every scene namespace, on an in-memory catalog (SequentialRunner).

costume: the full synthetic scene; emoticon: users without hidden tastes; movie: no item images and
no Table 2 images (the scene's reports must say not applicable, not fail). Then Table 1 of the
`test` environment's run carries the identity rows (issue 22).
"""

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from pmg_kedro.components.evaluation import image_evaluation
from pmg_kedro.pipelines.metric_evaluation import create_pipeline, nodes
from pmg_kedro.scenes import generation_variants, scene_conf, scene_names

from . import synthetic_scene as scene

SCENES = scene_names()
GENERATION_VARIANTS = generation_variants()

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
    # the positive controls (oracle, category target) are not run in the synthetic scene
    empty = data["pmg_selections"].iloc[0:0]
    for variant in set(GENERATION_VARIANTS) - set(scene.VARIANTS):
        data[f"{variant}_selections"], data[f"{variant}_chosen_images"] = empty, {}
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
    data |= {"fashion_mnist_train": scene.archive(8, 1), "fashion_mnist_test": scene.archive(4, 2)}
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


def test_the_placebo_rows_are_labelled_with_their_seed(run):
    """shuffled_pmg (not planted here: not applicable) is labelled PLACEBO with the seed of the
    derangement weighted_generation reported."""
    for name in SCENES:
        markdown = run.load(f"{name}.table1_report")
        assert (
            "- PLACEBO variants (shuffled_pmg): k^p and E_m of ANOTHER evaluation user" in markdown
        )
        assert f"(seeded derangement, seed {scene.PLACEBO_SEED}: " in markdown


def test_emoticon_without_hidden_tastes_says_not_applicable(run):
    table1 = run.load("emoticon.table1")
    taste = table1[(table1["metric"] == "hidden_taste_match") & (table1["variant"] == "pmg")]
    assert taste["status"].str.startswith("not applicable: no hidden tastes").all()


def test_movie_without_images_says_so_everywhere(run):
    assert nodes.NO_REFERENCE_IMAGES in run.load("movie.table1_report")
    assert "Table 2 not applicable" in run.load("movie.table2_report")
    assert run.load("movie.metric_summary")["metrics"] == {}


def test_identity_rows_in_every_scene(run):
    for name in SCENES:
        table1 = run.load(f"{name}.table1")
        identity = table1[table1["metric"] == "identity_match"]
        assert list(identity["variant"]) == list(GENERATION_VARIANTS)
    costume = run.load("costume.metric_summary")
    assert costume["identity_probe"]["status"] == "ok"
    assert "pmg-without_both/target/identity_match" in costume["comparisons"]
    assert "## Identity" in run.load("costume.table1_report")
    movie = run.load("movie.table1")
    movie = movie[(movie["metric"] == "identity_match") & (movie["variant"] == "pmg")]
    assert (movie["status"] == image_evaluation.NO_REFERENCE_IMAGES).all()


@pytest.mark.parametrize("scene_name", ["emoticon", "costume"])
def test_the_test_run_reports_identity_rows_with_the_probe_accuracy(
    scene_name, test_env_default_run, test_catalog
):
    catalog = test_catalog()
    report = catalog.load(f"{scene_name}.identity_probe")["report"]
    assert 0 <= report["held_out_accuracy"] <= 1 and report["n_held_out_images"] > 0
    table1 = catalog.load(f"{scene_name}.table1")
    identity = table1[table1["metric"] == "identity_match"]
    assert set(identity["variant"]) == set(GENERATION_VARIANTS)
    ran = identity[identity["status"] == "ok"]
    if report["status"] == "ok":
        assert ran["mean"].between(0, 1).all() and len(ran) >= 2
    else:  # refused: no number anywhere
        assert ran.empty and identity["mean"].isna().all()
    comparisons = catalog.load(f"{scene_name}.table1_comparisons")
    compared = comparisons[comparisons["metric"] == "identity_match"]
    assert {"pmg - without_both", "pmg - target_best_of_n"} <= set(compared["comparison"])
    markdown = catalog.load(f"{scene_name}.table1_report")
    assert "## Identity" in markdown and "- identity probe: " in markdown


def test_the_test_run_says_movie_has_no_identity_probe(test_env_default_run, test_catalog):
    report = test_catalog().load("movie.identity_probe")["report"]
    assert report["status"].startswith("not applicable")
