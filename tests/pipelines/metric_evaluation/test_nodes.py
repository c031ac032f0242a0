"""metric_evaluation nodes on a tiny synthetic scene with planted images (synthetic_scene.py).

Planted: `pmg` chose each user's first history image and `without_both` its target image, so the
history and target metrics are known by hand; a train user has chosen rows that must be ignored.
"""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pmg_kedro.components.data.images import load_image
from pmg_kedro.components.evaluation import evaluation_report, image_evaluation, metrics
from pmg_kedro.components.evaluation.features import MobileNetFeatures
from pmg_kedro.components.reporting import stats
from pmg_kedro.components.reporting.tables import Footnotes
from pmg_kedro.pipelines.metric_evaluation import nodes

from . import synthetic_scene as scene

pytestmark = pytest.mark.usefixtures("one_thread")
PARAMS = scene.PARAMS


class MeanAbsLpips:
    """Stands in for features.Lpips: mean |a - b| per pair, so the pairs fed are checkable."""

    def distance(self, a, b):
        return (a - b).abs().mean(dim=(1, 2, 3))


class NoLpips:
    def __init__(self):
        raise FileNotFoundError("no AlexNet weights in this test")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return scene.build(tmp_path_factory.mktemp("items"))


@pytest.fixture(scope="module")
def probe(inputs):
    return nodes.fit_semantic_probe(inputs["items"], inputs["image_index"], PARAMS)


def _identity(inputs, **changes):
    params = {**PARAMS, "identity_probe": {**PARAMS["identity_probe"], **changes}}
    archives = scene.archive(8, seed=1), scene.archive(4, seed=2)
    return nodes.fit_identity_probe(inputs["items"], inputs["image_index"], *archives, params)


@pytest.fixture(scope="module")
def identity(inputs):
    return _identity(inputs)


def _evaluate(inputs, probe, lpips_class, identity=None, **changes):
    data = {k: v for k, v in {**inputs, **changes}.items() if not k.startswith("table2")}
    identity = identity or {"probe": None, "report": {"status": "not applicable: none planted"}}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(image_evaluation, "Lpips", lpips_class)
        return nodes.evaluate_chosen_images(
            semantic_probe=probe, identity_probe=identity, params=PARAMS, **data
        )


@pytest.fixture(scope="module")
def evaluated(inputs, probe, identity):
    return _evaluate(inputs, probe, MeanAbsLpips, identity)


def _array(inputs, item):
    path = inputs["image_index"].set_index("item_id").at[item, "image_path"]
    return np.asarray(load_image(path, -1, 32), dtype=np.float32).transpose(2, 0, 1) / 255


def _row(table, variant, user, seed=1):
    hit = table[
        (table["variant"] == variant) & (table["user_id"] == user) & (table["seed"] == seed)
    ]
    assert len(hit) == 1
    return hit.iloc[0]


def test_history_and_target_metrics_use_the_right_references(inputs, evaluated):
    table, _ = evaluated
    v0, v1, h0 = (_array(inputs, i) for i in ("v0", "v1", "h0"))
    row = _row(table, "pmg", "u1")  # chosen image = v0; history v0, v1 (x0 has no image)
    assert row["history_ssim"] == pytest.approx((1.0 + metrics.ssim(v0, v1)) / 2, abs=1e-6)
    assert row["target_ssim"] == pytest.approx(metrics.ssim(v0, h0), abs=1e-6)
    assert row["history_lpips"] == pytest.approx(np.abs(v0 - v1).mean() / 2, abs=1e-5)
    assert row["target_lpips"] == pytest.approx(np.abs(v0 - h0).mean(), abs=1e-5)
    model = MobileNetFeatures(32)
    distance = model.distance(torch.from_numpy(v0[None]), torch.from_numpy(v1[None])).item()
    assert row["history_mobilenet_feature_distance"] == pytest.approx(distance / 2, rel=1e-3)
    # without_both chose the target image itself
    baseline = _row(table, "without_both", "u1", seed=2)
    assert baseline["target_ssim"] == pytest.approx(1.0)
    assert baseline["target_mobilenet_feature_distance"] == pytest.approx(0.0, abs=1e-4)
    assert baseline["history_ssim"] < 0.9


def test_repeated_history_items_count_once_per_entry(inputs, evaluated):
    table, _ = evaluated
    d1, d2 = _array(inputs, "d1"), _array(inputs, "d2")
    row = _row(table, "pmg", "u3")  # history d1, d2, d1; chosen = d1
    assert row["history_ssim"] == pytest.approx((2.0 + metrics.ssim(d1, d2)) / 3, abs=1e-6)
    assert row["n_history_images"] == 3


def test_only_evaluation_users_and_only_the_chosen_candidate_are_evaluated(inputs, evaluated):
    table, notes = evaluated
    ran = ["pmg", "without_embeddings", "without_both", "target_best_of_n", "pmg_unweighted"]
    assert sorted(table["variant"].unique()) == sorted(ran)
    assert set(table["user_id"]) == {"u1", "u2", "u3"}  # not the train user t1
    assert notes["variants"]["pmg"]["non_evaluation_rows_left_out"] == 2
    # one row per (variant, user, seed), carrying the chosen candidate's key
    assert len(table) == len(ran) * 3 * len(scene.SEEDS)
    selections = inputs["pmg_selections"]
    chosen = selections[selections["chosen"]].set_index(["user_id", "seed"])["image_key"]
    pmg = table[table["variant"] == "pmg"].set_index(["user_id", "seed"])["image_key"]
    assert pmg.to_dict() == chosen.loc[pmg.index].to_dict()


def test_items_without_an_image_are_counted(evaluated):
    _, notes = evaluated
    refs = notes["references"]
    assert refs["history_entries"] == 8 and refs["history_entries_without_image"] == 1
    assert refs["targets_without_image"] == 0 and refs["items_without_image_examples"] == ["x0"]


def test_probe_checks_hidden_taste_target_class_and_history(probe, evaluated):
    assert probe["report"]["status"] == "ok" and probe["report"]["n_classes"] == 3
    table, notes = evaluated
    pmg = table[table["variant"] == "pmg"]  # images of the user's own taste class
    assert (pmg["predicted_label"] == pmg["user_id"].map(lambda u: scene.TASTES[u][0])).all()
    assert (pmg["history_hidden_taste_match"] == 1).all()
    assert (pmg["history_semantic_match"] == 1).all()
    assert (pmg["target_semantic_match"] == 0).all()  # the targets are of another class
    baseline = table[table["variant"] == "without_both"]
    assert (baseline["target_semantic_match"] == 1).all()
    assert (baseline["history_hidden_taste_match"] == 0).all()
    assert notes["metrics"]["history_hidden_taste_match"]["status"] == "ok"


def test_without_hidden_tastes_or_classes_the_checks_say_not_applicable(inputs, tmp_path):
    items = inputs["items"].drop(columns="class_name")
    no_probe = nodes.fit_semantic_probe(items, inputs["image_index"], PARAMS)
    assert no_probe["probe"] is None and "class_name" in no_probe["report"]["status"]
    users = inputs["users"].drop(columns="taste_classes")
    probe = nodes.fit_semantic_probe(inputs["items"], inputs["image_index"], PARAMS)
    table, notes = _evaluate(inputs, probe, NoLpips, users=users)
    status = notes["metrics"]["history_hidden_taste_match"]["status"]
    assert status.startswith("not applicable: no hidden tastes")
    assert table["history_hidden_taste_match"].isna().all()
    table1, _, markdown = nodes.build_table1(table, notes, PARAMS)
    taste = table1[(table1["metric"] == "hidden_taste_match") & (table1["variant"] == "pmg")]
    assert (taste["status"] == status).all() and taste["mean"].isna().all()
    assert "not applicable: no hidden tastes" in markdown


def test_table1_cells_are_means_over_users_of_their_seed_means(evaluated):
    table, notes = evaluated
    table1, _, markdown = nodes.build_table1(table, notes, PARAMS)
    cell = table1[
        (table1["variant"] == "pmg")
        & (table1["reference"] == "history")
        & (table1["metric"] == "ssim")
    ].iloc[0]
    pmg = table[table["variant"] == "pmg"]
    expected = pmg.groupby("user_id")["history_ssim"].mean().mean()
    assert cell["mean"] == pytest.approx(expected) and cell["n_users"] == 3
    assert cell["ci_low"] <= cell["mean"] <= cell["ci_high"]
    assert cell["direction"] == "higher"
    again, _, _ = nodes.build_table1(table, notes, PARAMS)
    pd.testing.assert_frame_equal(again, table1)  # seeded bootstrap
    distance = table1[table1["metric"] == "mobilenet_feature_distance"]["direction"]
    assert set(distance) == {"lower"}
    for text in ("pytest synthetic scene", "32 px", "SIMULATED", "noise seeds [1, 2]", "↓", "↑"):
        assert text in markdown


def test_a_variant_that_did_not_run_is_reported_with_its_why(evaluated):
    table, notes = evaluated
    table1, comparisons, markdown = nodes.build_table1(table, notes, PARAMS)
    rows = table1[table1["variant"] == "without_keywords"]
    assert len(rows) == len(notes["metrics"]) and (rows["status"] == scene.NOT_RUN_WHY).all()
    cells = " ".join(markdown.split())  # Markdown tables pad their cells; compare the text
    assert scene.NOT_RUN_WHY in markdown and "| without_keywords |" in cells
    assert stats.mde_note("users (a user's difference: the mean over its seeds)") in markdown
    skipped = comparisons[comparisons["a"] == "without_keywords"]
    assert skipped["status"].str.contains("planted").all() and skipped["wilcoxon_p"].isna().all()


def test_the_placebo_line_names_the_shuffled_variants_and_their_seed(evaluated):
    """Only where a shuffled variant is listed; its seed where the notes carry one, never a
    made-up one."""
    _, notes = evaluated
    assert notes["placebo_seed"] == scene.PLACEBO_SEED  # from the personalization report
    variants = {**notes["variants"], "shuffled_pmg": {"status": "not applicable: planted"}}
    lines = evaluation_report.header_lines({**notes, "variants": variants}, PARAMS)
    placebo = [line for line in lines if "PLACEBO" in line]
    assert placebo == [
        "- PLACEBO variants (shuffled_pmg): k^p and E_m of ANOTHER evaluation user (seeded "
        f"derangement, seed {scene.PLACEBO_SEED}: no user keeps its own): pmg − shuffled_pmg "
        "beyond noise means the gain is the user's own; never a row PMG is judged by"
    ]
    unseeded = evaluation_report.header_lines(
        {**notes, "variants": variants, "placebo_seed": None}, PARAMS
    )
    assert "(seeded derangement: no user keeps its own)" in " ".join(unseeded)
    assert not any("PLACEBO" in line for line in evaluation_report.header_lines(notes, PARAMS))


def test_lpips_absent_is_said_and_never_substituted(inputs, probe):
    table, notes = _evaluate(inputs, probe, NoLpips)
    assert table["history_lpips"].isna().all() and table["target_lpips"].isna().all()
    table1, _, markdown = nodes.build_table1(table, notes, PARAMS)
    lpips_rows = table1[(table1["metric"] == "lpips") & (table1["variant"] != "without_keywords")]
    assert (lpips_rows["status"] == "LPIPS not available: no AlexNet weights in this test").all()
    assert lpips_rows["mean"].isna().all()
    assert "LPIPS not available: no AlexNet weights in this test" in markdown


def _planted_metrics(values: dict[tuple[str, str, int], float]) -> pd.DataFrame:
    return pd.DataFrame(
        [(v, u, s, x) for (v, u, s), x in values.items()],
        columns=["variant", "user_id", "seed", "history_ssim"],
    )


def _comparisons(image_metrics, notes, params):
    return evaluation_report.comparisons(
        image_metrics, notes, params["comparisons"], params["bootstrap"]
    )


def test_comparisons_pair_by_user_and_noise_seed():
    # without_both lacks seed 2 of u1: u1 pairs on seed 1 only (0.5 - 0.4 = 0.1)
    values = {
        ("pmg", "u1", 1): 0.5,
        ("pmg", "u1", 2): 0.9,
        ("pmg", "u2", 1): 0.3,
        ("pmg", "u2", 2): 0.3,
        ("without_both", "u1", 1): 0.4,
        ("without_both", "u2", 1): 0.1,
        ("without_both", "u2", 2): 0.2,
    }
    spec = {"reference": "history", "metric": "ssim", "name": "SSIM", "direction": "higher"}
    notes = {
        "variants": {"pmg": {"status": "ok"}, "without_both": {"status": "ok"}},
        "metrics": {"history_ssim": {**spec, "status": "ok"}},
    }
    params = {**PARAMS, "comparisons": [["pmg", "without_both"]]}
    result = _comparisons(_planted_metrics(values), notes, params).iloc[0]
    assert result["mean_difference"] == pytest.approx((0.1 + 0.15) / 2)
    assert result["n_users"] == 2 and result["status"] == "ok"


def test_a_variant_better_for_every_user_is_favoured_with_a_small_p():
    rng = np.random.default_rng(0)
    values = {}
    for i in range(10):
        for seed in (1, 2):
            base = rng.uniform(0.1, 0.3)
            values[("without_both", f"u{i}", seed)] = base
            values[("pmg", f"u{i}", seed)] = base + 0.05 + 0.01 * rng.random()
    spec = {"reference": "history", "metric": "ssim", "name": "SSIM", "direction": "higher"}
    notes = {
        "variants": {"pmg": {"status": "ok"}, "without_both": {"status": "ok"}},
        "metrics": {"history_ssim": {**spec, "status": "ok"}},
    }
    params = {**PARAMS, "comparisons": [["pmg", "without_both"]]}
    result = _comparisons(_planted_metrics(values), notes, params).iloc[0]
    assert result["ci_low"] > 0 and result["verdict"] == "pmg"
    assert result["wilcoxon_p"] == pytest.approx(2 / 2**10)
    assert result["holm_p"] == pytest.approx(2 / 2**10)  # one comparison in this table
    lower = {**spec, "direction": "lower", "status": "ok"}
    notes["metrics"]["history_ssim"] = lower  # the same numbers as a distance favour the baseline
    assert _comparisons(_planted_metrics(values), notes, params).iloc[0]["verdict"] == (
        "without_both"
    )


def test_a_neither_comparison_shows_the_mde_of_its_per_user_differences():
    # no effect, a spread over users: "neither", and its MDE is that of the per-user differences
    # (seed means), not of the per-image values nor of the (user, seed) differences
    rng = np.random.default_rng(4)
    values = {}
    for i in range(8):
        for seed in (1, 2):
            base = rng.uniform(0.1, 0.3)
            values[("without_both", f"u{i}", seed)] = base
            values[("pmg", f"u{i}", seed)] = base + rng.normal(0, 0.05)
    spec = {"reference": "history", "metric": "ssim", "name": "SSIM", "direction": "higher"}
    notes = {
        "variants": {"pmg": {"status": "ok"}, "without_both": {"status": "ok"}},
        "metrics": {"history_ssim": {**spec, "status": "ok"}},
    }
    params = {**PARAMS, "comparisons": [["pmg", "without_both"]]}
    table = _comparisons(_planted_metrics(values), notes, params)
    result = table.iloc[0]
    per_user = pd.Series(
        {
            f"u{i}": np.mean(
                [values[("pmg", f"u{i}", s)] - values[("without_both", f"u{i}", s)] for s in (1, 2)]
            )
            for i in range(8)
        }
    )
    expected = stats.minimum_detectable_effect(per_user)
    assert result["verdict"] == "neither"
    assert result["mde"] == pytest.approx(expected["mde"], rel=1e-9)
    assert (result["mde_alpha"], result["mde_power"]) == (0.05, 0.8)
    row = evaluation_report._comparison_row(next(table.itertuples()), notes, Footnotes())
    assert f"neither (MDE {expected['mde']:.4f})" in row


def test_a_scene_without_item_images_says_so(inputs, tmp_path):
    empty_index = inputs["image_index"].iloc[0:0]
    probe = nodes.fit_semantic_probe(inputs["items"], empty_index, PARAMS)
    assert probe["report"]["status"] == nodes.NO_REFERENCE_IMAGES
    table, notes = _evaluate(inputs, probe, NoLpips, image_index=empty_index)
    assert notes["references"]["status"] == nodes.NO_REFERENCE_IMAGES
    table1, _, markdown = nodes.build_table1(table, notes, PARAMS)
    ran = table1[table1["variant"] == "pmg"]
    assert (ran["status"] == nodes.NO_REFERENCE_IMAGES).all()
    assert nodes.NO_REFERENCE_IMAGES in markdown


def test_chosen_must_be_unique_per_user_and_seed(inputs, probe):
    selections = inputs["pmg_selections"].copy()
    selections["chosen"] = True
    with pytest.raises(ValueError, match=r"pmg\.selections: 'chosen' must be True exactly once"):
        _evaluate(inputs, probe, NoLpips, pmg_selections=selections)


def test_table2_has_the_paper_shape_and_says_when_it_is_empty(inputs, probe):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(image_evaluation, "Lpips", NoLpips)
        args = [inputs[k] for k in ("histories", "user_split", "items", "image_index", "users")]
        table, notes = nodes.evaluate_table2_images(
            *args, probe, inputs["table2_selections"], inputs["table2_images"], PARAMS
        )
        assert set(table["user_id"]) == {"u1", "u2", "u3"} and notes["status"] == "ok"
        table2, markdown = nodes.build_table2(table, notes, PARAMS)
        ssim = table2[table2["metric"] == "ssim"].set_index(["p_tuning", "n_tokens"])
        l4 = table[(table["n_tokens"] == 4)].groupby("user_id")["history_ssim"].mean().mean()
        assert ssim.loc[(True, 4), "mean"] == pytest.approx(l4)
        assert ssim.loc[(True, 4), "mean"] > ssim.loc[(False, 8), "mean"]  # planted
        cells = " ".join(markdown.split())  # Markdown tables pad their cells; compare the text
        assert "| on |" in cells and "| off |" in cells and "L = 16" in markdown
        empty, empty_notes = nodes.evaluate_table2_images(
            *args, probe, inputs["table2_selections"].iloc[0:0], {}, PARAMS
        )
        _, empty_markdown = nodes.build_table2(empty, empty_notes, PARAMS)
    assert "Table 2 not applicable" in empty_markdown


def test_selection_scatter_recomputes_the_choice_per_alpha(inputs):
    candidates = inputs["pmg_selections"]
    at_run_alpha = evaluation_report.choice_at(candidates, 0.5, 0.001)
    assert (at_run_alpha == candidates["chosen"]).all()
    only_d_p = evaluation_report.choice_at(candidates, 1.0, 0.001)
    best_d_p = candidates.groupby(["user_id", "seed"])["d_p"].transform("max") == candidates["d_p"]
    assert (only_d_p == best_d_p).all()
    selections = {
        v: inputs[f"{v}_selections"] for v in scene.ABLATIONS if scene.ABLATIONS[v]["grid"]
    }
    fig = nodes.plot_selection_scatter(
        scene.ABLATIONS, scene.WEIGHTED_GENERATION, PARAMS, **selections
    )
    assert len(fig.axes) == 3 and "pmg candidates" in fig._suptitle.get_text()


def test_figures_show_history_target_and_variants_with_simulated_labels(inputs):
    args = [inputs[k] for k in ("histories", "user_split", "users", "image_index")]
    chosen = {v: inputs[f"{v}_chosen_images"] for v in ("without_both", "pmg")}
    fig = nodes.plot_comparison_figure(*args, scene.WEIGHTED_GENERATION, PARAMS, **chosen)
    assert len(fig.axes) == 2 * (3 + 1 + 2)  # 2 users x (3 history, target, 2 variants)
    assert "SIMULATED" in fig.axes[0].get_ylabel()
    chosen = {v: inputs[f"{v}_chosen_images"] for v in ("without_embeddings", "pmg")}
    fig = nodes.plot_embedding_figure(*args, scene.WEIGHTED_GENERATION, PARAMS, **chosen)
    assert len(fig.axes) == 2 * (3 + 1 + 2 * 2)  # every seed of both variants
    titles = [ax.get_title() for ax in fig.axes[:8]]
    assert titles[4:] == ["without_embeddings\ns1", "pmg\ns1", "without_embeddings\ns2", "pmg\ns2"]


def test_summary_is_json_and_carries_the_headline_numbers(evaluated, probe, identity, inputs):
    table, notes = evaluated
    table1, comparisons, _ = nodes.build_table1(table, notes, PARAMS)
    table2 = pd.DataFrame(columns=["sweep_entry", *evaluation_report.CELL_COLUMNS])
    summary = nodes.summarize_metric_evaluation(
        table1, comparisons, table2, notes, {"status": "not applicable: none"}, probe, identity
    )
    json.dumps(summary, allow_nan=False)
    cell = table1[
        (table1["variant"] == "pmg")
        & (table1["reference"] == "target")
        & (table1["metric"] == "ssim")
    ].iloc[0]
    assert summary["metrics"]["pmg/target/ssim"]["mean"] == pytest.approx(cell["mean"])
    assert "pmg-without_both/history/ssim" in summary["comparisons"]
    assert summary["not_applicable"] == {"without_keywords": scene.NOT_RUN_WHY}
    assert summary["n_simulated_users"] == 3
    assert summary["identity_probe"]["held_out_accuracy"] == identity["report"]["held_out_accuracy"]
    assert "pmg/target/identity_match" in summary["metrics"]
    assert "pmg-target_best_of_n/target/identity_match" in summary["comparisons"]


# -- identity probe (issue 22) ------------------------------------------------------------------


def test_the_identity_probe_is_validated_on_held_out_augmentations(identity):
    report = identity["report"]
    assert report["status"] == "ok" and report["held_out_accuracy"] >= 0.8
    assert report["classes"] == ["disc", "horizontal", "vertical"]
    # 12 real item images: 24 training augmentations each (seed 0), 8 held out (seed 1)
    assert report["n_fit_images"] == 12 * 24 and report["n_held_out_images"] == 12 * 8
    assert "(seed 0)" in report["fit"] and "(seed 1)" in report["held_out"]


def test_identity_rows_name_the_target_class(identity, evaluated):
    table, notes = evaluated
    assert notes["metrics"]["target_identity_match"]["status"] == "ok"
    pmg = table[table["variant"] == "pmg"]  # the first history image: another class than the target
    assert (pmg["identity_label"] == pmg["user_id"].map(lambda u: scene.TASTES[u][0])).all()
    assert (pmg["target_identity_match"] == 0).all()
    baseline = table[table["variant"] == "without_both"]  # the target image itself
    assert (baseline["target_identity_match"] == 1).all()
    table1, comparisons, markdown = nodes.build_table1(table, notes, PARAMS)
    rows = table1[table1["metric"] == "identity_match"].set_index("variant")
    assert rows.loc["pmg", "mean"] == 0 and rows.loc["without_both", "mean"] == 1
    assert "## Identity" in markdown and "identity probe: small CNN" in markdown
    compared = comparisons[comparisons["metric"] == "identity_match"].set_index("comparison")
    assert compared.loc["pmg - without_both", "mean_difference"] == -1
    assert compared.loc["pmg - without_both", "verdict"] in ("neither", "without_both") or (
        compared.loc["pmg - without_both", "verdict"].startswith("tests disagree")
    )
    # Holm runs over every comparison of the table, the identity rows included
    ok = comparisons[comparisons["status"] == "ok"]
    assert (ok["holm_p"] >= ok["wilcoxon_p"]).all() and len(compared) == 3


def test_a_probe_below_the_bar_gives_no_number(inputs, probe):
    refused = _identity(inputs, min_accuracy=1.01)
    accuracy = refused["report"]["held_out_accuracy"]
    why = f"not applicable: accuracy {accuracy:.3f} below the bar 1.01"
    assert refused["report"]["status"] == why
    table, notes = _evaluate(inputs, probe, NoLpips, refused)
    assert "target_identity_match" not in table or table["target_identity_match"].isna().all()
    table1, comparisons, markdown = nodes.build_table1(table, notes, PARAMS)
    rows = table1[(table1["metric"] == "identity_match") & (table1["variant"] == "pmg")]
    assert (rows["status"] == why).all() and rows["mean"].isna().all()
    assert why in markdown
    compared = comparisons[comparisons["metric"] == "identity_match"].set_index("comparison")
    assert compared.loc["pmg - target_best_of_n", "status"] == why
    assert compared["holm_p"].isna().all() and compared["verdict"].isna().all()


def test_the_archive_probe_fits_on_one_split_and_is_measured_on_the_other(inputs):
    probe = _identity(inputs, source="labelled_archive")
    report = probe["report"]
    assert report["fit"].startswith("planted archive 1: 8 images per class")
    assert report["held_out"].startswith("planted archive 2: 4 images per class")
    assert report["n_fit_images"] == 24 and report["n_held_out_images"] == 12
    items = inputs["items"].assign(class_name="sweater")  # a class the archive does not have
    archives = scene.archive(8, seed=1), scene.archive(4, seed=2)
    params = {
        **PARAMS,
        "identity_probe": {**PARAMS["identity_probe"], "source": "labelled_archive"},
    }
    missing = nodes.fit_identity_probe(items, inputs["image_index"], *archives, params)
    assert missing["probe"] is None and "['sweater'] are no class" in missing["report"]["status"]


def test_a_missing_archive_makes_only_its_probe_not_applicable(inputs, tmp_path):
    from pmg_kedro.datasets.scene_sources import FashionMNISTClasses

    absent = FashionMNISTClasses(str(tmp_path), "train").load()  # no archive in this folder
    assert absent["images"] is None and "is missing" in absent["source"]
    params = {
        **PARAMS,
        "identity_probe": {**PARAMS["identity_probe"], "source": "labelled_archive"},
    }
    report = nodes.fit_identity_probe(
        inputs["items"], inputs["image_index"], absent, absent, params
    )["report"]
    assert report["status"].startswith("not applicable: Fashion-MNIST file")


def test_without_a_declared_probe_images_or_labels_identity_is_not_applicable(inputs):
    assert _identity(inputs, source=None)["report"]["status"].startswith(
        "not applicable: no identity probe declared"
    )
    archives = scene.archive(2, seed=1), scene.archive(2, seed=2)
    empty = nodes.fit_identity_probe(
        inputs["items"], inputs["image_index"].iloc[0:0], *archives, PARAMS
    )
    assert empty["report"]["status"] == nodes.NO_REFERENCE_IMAGES
    unlabelled = nodes.fit_identity_probe(
        inputs["items"].drop(columns="class_name"), inputs["image_index"], *archives, PARAMS
    )
    assert unlabelled["probe"] is None and "class_name" in unlabelled["report"]["status"]


def test_a_neither_row_is_set_against_the_papers_effect_and_its_mde():
    """Table 1's note: the paper's effect beside a "neither" row's MDE, "could have" only where the
    paper's effect is at least the MDE; rows with a verdict or without a paper effect say nothing."""
    from pmg_kedro.components.evaluation.evaluation_report import _paper_effect_lines

    rows = pd.DataFrame(
        [
            ("pmg - without_both", "history", "ssim", "ok", "neither", 0.02),
            ("pmg - without_both", "target", "ssim", "ok", "neither", 0.002),
            ("pmg - without_both", "history", "mobilenet_feature_distance", "ok", "neither", 0.1),
            ("pmg - target_best_of_n", "history", "ssim", "ok", "neither", 0.001),
        ],
        columns=["comparison", "reference", "metric", "status", "verdict", "mde"],
    )
    effects = {
        "pmg - without_both": {
            "history/ssim": {"effect": 0.0109, "source": "paper"},
            "target/ssim": {"effect": 0.0033, "source": "paper"},
        }
    }
    lines = [line for line in _paper_effect_lines(rows, effects) if line.startswith("- ")]
    assert len(lines) == 2
    assert "history ssim" in lines[0] and "could not have seen" in lines[0]  # 0.0109 < 0.02
    assert "target ssim" in lines[1] and "could have seen" in lines[1]  # 0.0033 >= 0.002
    assert _paper_effect_lines(rows.assign(verdict="pmg"), effects) == []
