"""Table 3's sensitivity check (issue 29): the first line follows the verdict of Oracle-user (the
LEAK) against Averaged-user, the LEAK and ORACLE labels reach every output (JSON, Markdown, chart),
their pairs form a Holm family of their own, and a setting that `requires` what the data lacks is
"not applicable" with why."""

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from pmg_kedro.components.evaluation import recommendation_report as rr  # noqa: E402

SEEDS = [1, 2, 3, 4, 5]
NOISE = np.array([0.001, -0.001, 0.002, -0.002, 0.0])  # mean 0: no effect at all
SPLIT_STATS = {
    "users": 4,
    "items": 12,
    "positives_after_k_core": 40,
    "k_core": {"user_min": 3, "item_min": 2},
    "positive_rule": "every interaction",
    "train_interactions": 32,
    "validation_interactions": 4,
    "test_interactions": 4,
}
MACHINE = {"python": "3", "torch": "2", "platform": "x", "cpu": "c", "cores": 2, "torch_threads": 1}


@pytest.fixture(scope="module")
def params(project_root):
    from pmg_kedro.config_loader import project_config_loader

    loader = project_config_loader("base", project_root / "conf")
    return loader["parameters"]["costume"]["recommendation"]


def _results(params, oracle_gain: float, ran=None) -> pd.DataFrame:
    """Every setting under five seeds; Oracle-user = Averaged-user + `oracle_gain` + mean-0 noise,
    every other setting = Averaged-user + mean-0 noise."""
    rows = []
    for k, seed in enumerate(SEEDS):
        base = 0.1 + 0.01 * k
        for name in ran or params["settings"]:
            gain = oracle_gain if name == "oracle_user" else 0.0
            value = base + (0.0 if name == "averaged_user" else gain + NOISE[(k + len(name)) % 5])
            rows.append(
                {
                    "setting": name,
                    "seed": seed,
                    **dict.fromkeys(rr.METRIC_COLUMNS, value),
                    "test_users": 4,
                    "epochs": 10,
                    "seconds": 1.0,
                }
            )
    return pd.DataFrame(rows)


def _report(params, results):
    log = rr.image_log(["u0"], ["dark, plain, coat, bag"], object(), params["image_generation"])
    keywords = pd.DataFrame({"llm": ["fake"], "fallback": [False]})
    return rr.table3(
        results,
        SPLIT_STATS,
        {"item image": 12},
        log.iloc[:0],
        keywords,
        log,
        log,
        log,
        dict.fromkeys(rr.METRIC_COLUMNS, 0.05),
        True,
        MACHINE,
        {**params, "seeds": SEEDS},
    )


def test_a_leak_that_beats_averaged_user_makes_the_first_line_sensitive(params):
    report = _report(params, _results(params, oracle_gain=0.05))
    markdown = rr.markdown(report)
    first = markdown.splitlines()[0]
    assert report["sensitivity"]["sensitive"] is True
    assert first.startswith("Sensitive: the leaked oracle beats Averaged-user beyond noise")
    assert "Generated-user's distance to oracle_user is the real shortfall" in first
    assert "Generated-user - Oracle-user (LEAK: sensitivity check), recall@20: -0.05" in first
    assert rr.summary(report)["sensitivity"]["sensitive"] == 1.0


def test_a_leak_within_noise_makes_the_first_line_insensitive(params):
    report = _report(params, _results(params, oracle_gain=0.0))
    first = rr.markdown(report).splitlines()[0]
    assert report["sensitivity"]["sensitive"] is False
    assert first.startswith(
        "Insensitive: this MMGCN setup cannot reward any user image (the leaked oracle does not "
        "beat Averaged-user beyond noise"
    )
    assert first.endswith("so Generated-user's result says nothing about PMG's images.")
    assert rr.summary(report)["sensitivity"]["sensitive"] == 0.0


def test_leak_and_oracle_labels_reach_every_output(params):
    report = _report(params, _results(params, oracle_gain=0.05))
    markdown = rr.markdown(report)
    figure = rr.chart(report)
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    title = figure.axes[0].get_title()
    for name, mark in (
        ("oracle_user", "LEAK: sensitivity check"),
        ("oracle_keywords_user", "ORACLE keywords (SIMULATED users' hidden taste)"),
    ):
        label = report["settings"][name]["label"]
        assert mark in label  # the JSON's settings table
        rows = [line for line in markdown.splitlines() if line.startswith(f"| {label} ")]
        assert rows  # the Markdown's settings table (and its paired differences)
        assert label in legend and label in title  # the chart
        assert any(p["label"].startswith(label) for p in report["sensitivity"]["pairs"])
        summary = rr.summary(report)
        assert name in summary["settings"]  # MLflow


def test_the_sensitivity_pairs_do_not_change_pmgs_corrected_p_values(params):
    results = _results(params, oracle_gain=0.05)
    report = _report(params, results)
    alone = rr.paired_differences(
        results, params["report"]["paired"], params["settings"], params["report"]["confidence"]
    )
    got = [
        m["holm_p"] for p in report["paired_differences"]["pairs"] for m in p["metrics"].values()
    ]
    assert got == [m["holm_p"] for p in alone for m in p["metrics"].values()]
    family = [p for p in report["sensitivity"]["pairs"] if p["metrics"]]
    assert len(family) == len(params["report"]["sensitivity"]["paired"]) == 4


def test_a_setting_that_requires_a_hidden_taste_is_not_applicable_without_one(params):
    ran = [s for s in params["settings"] if s != "oracle_keywords_user"]
    report = _report(params, _results(params, oracle_gain=0.0, ran=ran))
    why = report["not_applicable"]["oracle_keywords_user"]["why"]
    assert why.startswith("not applicable: the users table has no hidden-taste columns")
    markdown = rr.markdown(report)
    assert f"{report['not_applicable']['oracle_keywords_user']['label']}: {why}." in markdown
    pairs = {(p["a"], p["b"]): p for p in report["sensitivity"]["pairs"]}
    assert pairs[("oracle_keywords_user", "averaged_user")]["why"] == why
    assert rr.not_applicable(params["settings"], {"oracle_keywords_user"}) == {}
    with pytest.raises(ValueError, match="unknown requires"):
        rr.not_applicable({"x": {"requires": "telepathy"}}, set())


def test_the_per_seed_cell_lists_few_seeds_and_summarises_many():
    assert rr.per_seed_cell([0.01, -0.02]) == "+0.0100, -0.0200"
    many = [0.01] * 30 + [-0.02] * 10
    assert rr.per_seed_cell(many) == "40 seeds, 30 > 0, from -0.0200 to +0.0100"
