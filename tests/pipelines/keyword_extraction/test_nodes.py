"""Keyword extraction nodes (paper §3.2.2) with a scripted LLM: prompts, parsing, merge, fallback
rule, target prefix, and the quality report's arithmetic."""

import threading

import numpy as np
import pandas as pd
import pytest

from pmg_kedro.components.data.item_terms import fallback_keywords, items_by_id
from pmg_kedro.components.evaluation.keyword_quality import bootstrap_share
from pmg_kedro.components.method.keyword_adapter import AdapterLeakError
from pmg_kedro.components.reporting.stats import minimum_detectable_effect
from pmg_kedro.pipelines.keyword_extraction.nodes import (
    extract_comparison_keywords,
    extract_preference_keywords,
    extract_target_keywords,
    plot_keyword_quality,
    report_keyword_quality,
)
from tests.components.tiny_llm import ScriptedLLM

GEN = {"max_new_tokens": 8, "repetition_penalty": 1.1, "batch_size": 8}
CHECKS = [
    {
        "name": "history_genres",
        "description": "top-2 history genres",
        "source": "history",
        "column": "genres",
        "top": 2,
        "attribute": "genre",
        "budget": 2,
        "baseline": {"column": "genres"},
    },
    {
        "name": "target_genres",
        "description": "target genres",
        "source": "target",
        "column": "genres",
        "attribute": "genre",
        "budget": 2,
        "baseline": {"column": "genres"},
    },
]
NO_ADAPTER = {"tensors": {}, "metadata": {}}  # llm_adapter: none never reads it
PARAMS = {
    "llm_adapter": "none",
    "scene": "movie",
    "k_p": 4,
    "k_t": 2,
    "keywords_per_attribute": 3,
    "max_keyword_words": 4,
    "generation": GEN,
    "target_generation": GEN,
    "principle": "PRINCIPLE",
    "preference_template": "{principle}\n{history}\n{conversation}\nATTR={attribute} {examples} N={n_keywords}",
    "history_line": "- {text}",
    "conversation_template": "Chat: {conversation}",
    "answer_prefix": "{attribute} keywords:",
    "attributes": {"genre": "(kinds of story)", "director": "(who directed)"},
    "target_template": "TARGET {target} N={n_keywords}{examples}",
    "target_examples": "",
    "target_answer_prefix": "Keywords:",
    "target_prefix": ["movie poster", "{title}"],
    "fallback_columns": ["genres"],
    "target_fallback_columns": ["genres"],
    "quality": {
        "threshold": 0.8,
        "text_encoder_path": None,
        "seed": 3,
        "bootstrap_resamples": 500,
        "compare_llm_adapter": "none",
        "note": "real users",
        "simulated_note": "SIMULATED users",
        "checks": CHECKS,
    },
}


@pytest.fixture()
def items():
    return pd.DataFrame(
        {
            "item_id": ["1", "2", "3", "4"],
            "title": ["Toy Story", "Heat", "Alien", "Casino"],
            "genres": [
                ["Animation", "Comedy"],
                ["Crime", "Thriller"],
                ["Horror", "Sci-Fi"],
                ["Crime", "Drama"],
            ],
        }
    )


@pytest.fixture()
def behavior():
    return pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "history": [["1", "1", "2"], ["2", "4"], ["3"]],
            "history_texts": [
                ["Toy Story: Animation, Comedy"] * 2 + ["Heat: Crime"],
                ["Heat: Crime", "Casino: Crime"],
                ["Alien: Horror"],
            ],
            "target": ["2", "1", "3"],
            "target_text": ["Heat: Crime", "Toy Story: Animation", "Alien: Horror"],
            "conversation": ["", "", "hello"],
            "conversation_summary": ["", "", "They say hello."],
            "purpose": "evaluation",
        }
    )


LLM_RULES = [
    (r"Toy Story.*ATTR=genre", "1. Animation\n2. comedies\n3. Comedy\n4. family"),
    (r"Toy Story.*ATTR=director", "John Lasseter, Who directed"),
    (r"Heat: Crime\n- Casino.*ATTR=genre", "Crime, thriller, crime drama, gangster"),
    (r"TARGET Heat", "Heat, city lights, night, guns"),
    (r"TARGET Toy Story", "The movie poster is a picture of many things that are nice to see"),
]


def test_preference_keywords_merge_dedupe_cut_and_fallback(behavior, items):
    llm = ScriptedLLM(LLM_RULES, default="I cannot answer that question about this user, sorry.")
    result = extract_preference_keywords(behavior, items, llm, NO_ADAPTER, PARAMS).set_index(
        "user_id"
    )

    # One batched call per distinct answer prefix (one per attribute), every user in each.
    assert [(len(p), prefix) for p, _, prefix in llm.calls] == [
        (3, "genre keywords:"),
        (3, "director keywords:"),
    ]
    assert "Chat: They say hello." in llm.calls[0][0][2] and "Chat:" not in llm.calls[0][0][0]

    a = result.loc["a"]
    # Round robin over attributes, "comedies" = "comedy", the echo "who directed" dropped, K_p=4.
    assert list(a["keywords"]) == ["animation", "john lasseter", "comedies", "family"]
    assert a["n_parsed"] == 4 and not a["fallback"]
    assert set(result["llm_adapter"]) == {"none"}  # zero-shot: the adapter is never read
    assert list(a["raw_answers"])[1] == "John Lasseter, Who directed"
    assert [list(p) for p in a["parsed"]] == [
        ["animation", "comedies", "family"],
        ["john lasseter"],
    ]

    # c: nothing parses -> fallback rule: most frequent history genres, flagged, never dropped.
    c = result.loc["c"]
    assert c["fallback"] and list(c["keywords"]) == ["horror", "sci-fi"] and c["n_parsed"] == 0
    assert len(result) == 3


def test_target_keywords_prefix_cut_and_fallback(behavior, items):
    llm = ScriptedLLM(LLM_RULES, default="")
    result = extract_target_keywords(behavior, items, llm, PARAMS).set_index("user_id")
    # The title in the answer repeats the prefix and is skipped; K_t = 2.
    assert list(result.at["a", "keywords"]) == ["movie poster", "Heat", "city lights", "night"]
    b = result.loc["b"]  # one long sentence: nothing parses -> the target's genres, flagged
    assert b["fallback"] and list(b["keywords"]) == [
        "movie poster",
        "Toy Story",
        "animation",
        "comedy",
    ]
    assert result.at["a", "raw_answer"] == "Heat, city lights, night, guns"


def test_target_fallback_uses_message_words_when_no_item_columns(behavior, items):
    params = {**PARAMS, "target_fallback_columns": [], "target_prefix": ["emoji"]}
    result = extract_target_keywords(behavior, items, ScriptedLLM([]), params).set_index("user_id")
    assert list(result.at["c", "keywords"]) == ["emoji", "alien", "horror"]


def _preference(adapter, genre, age, keywords, fallback, purpose=("evaluation",) * 3):
    """A preference-keyword table of users a, b, c: parsed genre and age answers per user."""
    return pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "purpose": list(purpose),
            "keywords": keywords,
            "attributes": [["genre", "age"]] * 3,
            "raw_answers": [["x", "y"]] * 3,
            "parsed": [[g, a] for g, a in zip(genre, age, strict=True)],
            "n_parsed": [len(k) for k in keywords],
            "fallback": fallback,
            "llm_adapter": adapter,
        }
    )


# Zero-shot: a names "animated comedy"; b "romance"; c parsed nothing (fallback keywords).
ZERO_SHOT = _preference(
    "none",
    genre=[["pixar", "animated comedy"], ["romance"], []],
    age=[["90s"], [], ["1970s"]],
    keywords=[["pixar", "animated comedy", "90s"], ["romance"], ["horror"]],
    fallback=[False, False, True],
)
LORA = _preference(
    "lora",
    genre=[["comedy", "drama", "crime"], ["crime", "drama"], ["drama", "horror"]],
    age=[["1990s"], ["1980s"], ["1970s"]],
    keywords=[["comedy", "1990s", "drama"], ["crime", "1980s"], ["drama", "1970s"]],
    fallback=[False, False, False],
)
TARGET = pd.DataFrame(
    {"user_id": ["a", "b", "c"], "fallback": [False, True, False], "n_parsed": [2, 0, 1]}
)
REAL_USERS = pd.DataFrame({"user_id": ["a", "b", "c"], "simulated": False})
DECADE = {
    "name": "target_decade",
    "description": "target decade",
    "source": "target",
    "column": "year",
    "transform": "decade",
    "match": "exact",
    "attribute": "age",
    "budget": 1,
    "baseline": {"column": "year", "transform": "decade"},
}
QUALITY_PARAMS = {**PARAMS, "quality": {**PARAMS["quality"], "checks": [*CHECKS, DECADE]}}


def _years(items):
    return items.assign(year=[1995, 1995, 1979, 1995])


def test_quality_report_compares_methods_at_an_equal_budget(behavior, items):
    report, markdown = report_keyword_quality(
        LORA, ZERO_SHOT, TARGET, behavior, _years(items), REAL_USERS, QUALITY_PARAMS
    )
    assert report["methods"] == {
        "llm_zero_shot": "zero-shot LLM",
        "llm_lora": "LoRA LLM",
        "baseline": "no-LLM baseline",
    }
    history = report["checks"]["history_genres"]["methods"]
    # top-2 history genres: a animation, comedy; b crime, thriller; c horror, sci-fi.
    # zero-shot B=2: a "animated comedy" names comedy; b romance; c nothing parsed.
    assert history["llm_zero_shot"]["share_exact"] == pytest.approx(1 / 3, abs=1e-3)
    assert history["llm_lora"]["share_exact"] == 1.0
    assert history["baseline"]["share"] == 1.0  # the baseline is the history genres themselves
    assert history["baseline"]["share_ci95"] == [1.0, 1.0]
    # the whole k^p (unequal budget): a and c (c by the fallback rule); without fallback a of a, b
    assert history["llm_zero_shot"]["share_all_keywords"] == pytest.approx(2 / 3, abs=1e-3)
    assert history["llm_zero_shot"]["share_all_keywords_without_fallback_users"] == 0.5

    target = report["checks"]["target_genres"]
    # Targets: a -> Heat (crime, thriller), b -> Toy Story, c -> Alien (horror, sci-fi). LoRA's
    # third genre for a is "crime": cut by B = 2, so only c names its target.
    assert target["methods"]["llm_lora"]["share_exact"] == pytest.approx(1 / 3, abs=1e-3)
    assert target["methods"]["baseline"]["share_exact"] == pytest.approx(1 / 3, abs=1e-3)
    # three users, one hit: a resample holds 0, 1, 2 or 3 hits
    assert target["methods"]["baseline"]["share_exact_ci95"] == [0.0, 1.0]
    assert target["budget"] == 2 and target["attribute"] == "genre"

    decade = report["checks"]["target_decade"]
    # targets' decades 1990s, 1990s, 1970s; LoRA a and c; zero-shot only c ("90s" is not
    # "1990s", and exact match only); baseline: most frequent history decade, all three.
    assert decade["methods"]["llm_lora"]["share"] == pytest.approx(2 / 3, abs=1e-3)
    assert decade["methods"]["llm_zero_shot"]["share"] == pytest.approx(1 / 3, abs=1e-3)
    assert decade["methods"]["baseline"]["share"] == 1.0
    differences = decade["paired_differences"]
    assert differences["llm_lora - baseline"]["mean"] == pytest.approx(-1 / 3, abs=1e-3)
    assert differences["llm_lora - llm_zero_shot"]["mean"] == pytest.approx(1 / 3, abs=1e-3)
    # one user of three differs: no test can reach 0.05, and the Holm p is at least the raw p
    lora_vs_zero = differences["llm_lora - llm_zero_shot"]
    assert lora_vs_zero["wilcoxon_p"] == pytest.approx(1.0)
    assert lora_vs_zero["holm_p"] >= lora_vs_zero["wilcoxon_p"]
    assert lora_vs_zero["verdict"] == "neither"
    assert "Holm-corrected" in markdown and "verdict" in markdown
    assert decade["match"] == "exact"

    assert report["preference_keywords"]["llm_zero_shot"]["n_fallback_users"] == 1
    assert report["preference_keywords"]["llm_lora"]["empty_answer_share_per_attribute"] == {
        "genre": 0.0,
        "age": 0.0,
    }
    assert report["preference_keywords"]["llm_zero_shot"]["empty_answer_share_per_attribute"] == {
        "genre": pytest.approx(1 / 3, abs=1e-3),
        "age": pytest.approx(1 / 3, abs=1e-3),
    }
    assert report["target_keywords"]["n_fallback_users"] == 1
    assert report["scene_note"] == "real users" and report["not_applicable"] == {}
    cells = " ".join(markdown.split())  # Markdown tables pad their cells; compare the text
    assert "| zero-shot LLM | LoRA LLM | no-LLM baseline |" in cells
    assert "| target_decade: target decade | 3 | age, 1 | 0.33 [" in cells


def test_a_neither_difference_carries_the_mde_of_its_per_user_differences(
    behavior, items, monkeypatch
):
    """Eight planted users per check: the MDE is that of the per-user hit differences (their SD
    is not the SD of either method's hits)."""
    from pmg_kedro.components.evaluation import keyword_quality

    lora = [True, True, True, True, False, False, False, True]
    zero_shot = [True, False, True, False, False, True, False, True]
    planted = pd.DataFrame(
        {"user_id": [f"u{i}" for i in range(8)]}
        | {
            f"{k}_{m}": hits
            for k, hits in (("llm_lora", lora), ("llm_zero_shot", zero_shot))
            for m in ("hit", "exact", "all_keywords")
        }
        | {"llm_lora_fallback": False, "llm_zero_shot_fallback": False}
        | {"baseline_hit": zero_shot, "baseline_exact": zero_shot}
    )
    monkeypatch.setattr(keyword_quality, "_measure", lambda *args: planted)
    report, markdown = report_keyword_quality(
        LORA, ZERO_SHOT, TARGET, behavior, _years(items), REAL_USERS, QUALITY_PARAMS
    )
    entry = report["checks"]["target_genres"]["paired_differences"]["llm_lora - llm_zero_shot"]
    differences = np.array(lora, dtype=float) - np.array(zero_shot, dtype=float)
    expected = minimum_detectable_effect(differences)
    assert entry["verdict"] == "neither"
    assert entry["mde"] == pytest.approx(expected["mde"])
    assert (entry["mde_alpha"], entry["mde_power"]) == (0.05, 0.8)
    cells = " ".join(markdown.split())
    assert f"neither (MDE {expected['mde']:.2f}) |" in cells
    assert 'MDE beside "neither"' in markdown


def test_without_a_threshold_only_exact_words_count_and_no_encoder_loads(
    behavior, items, monkeypatch
):
    """`quality.threshold: null` (the GPU session, where MiniLM cannot travel): the same exact
    shares, a hit is an exact hit, and the text encoder is never built."""
    from pmg_kedro.components.evaluation import keyword_quality

    args = (LORA, ZERO_SHOT, TARGET, behavior, _years(items), REAL_USERS)
    with_encoder, _ = report_keyword_quality(*args, QUALITY_PARAMS)

    def refuse(*_, **__):
        raise AssertionError("the text encoder was loaded although threshold is null")

    monkeypatch.setattr(keyword_quality, "TextEmbedder", refuse)
    exact_params = {**QUALITY_PARAMS, "quality": {**QUALITY_PARAMS["quality"], "threshold": None}}
    exact, markdown = report_keyword_quality(*args, exact_params)
    assert exact["threshold"] is None and exact["text_encoder"] is None
    assert "exact words only" in markdown
    for name, check in exact["checks"].items():
        for method, shares in check["methods"].items():
            before = with_encoder["checks"][name]["methods"][method]
            assert shares["share_exact"] == before["share_exact"], (name, method)
            assert shares["share"] == shares["share_exact"], (name, method)


def test_the_quality_figure_draws_each_share_with_its_interval(behavior, items):
    import matplotlib.pyplot as plt
    from matplotlib.container import BarContainer

    report, _ = report_keyword_quality(
        LORA, ZERO_SHOT, TARGET, behavior, _years(items), REAL_USERS, QUALITY_PARAMS
    )
    fig = plot_keyword_quality(report, QUALITY_PARAMS)
    ax = fig.axes[0]
    bars = {
        c.get_label(): [b.get_width() for b in c]
        for c in ax.containers
        if isinstance(c, BarContainer)
    }
    for method, label in report["methods"].items():
        expected = [c["methods"][method]["share"] for c in report["checks"].values()]
        assert bars[label] == pytest.approx(expected)
    assert [t.get_text() for t in ax.get_yticklabels()] == [
        f"{name} (B={c['budget']})" for name, c in report["checks"].items()
    ]
    # one error bar per bar, spanning the bootstrap interval
    segments = [seg for c in ax.collections for seg in c.get_segments()]
    spans = sorted(round(float(s[1][0] - s[0][0]), 6) for s in segments)
    expected = sorted(
        round(m["share_ci95"][1] - m["share_ci95"][0], 6)
        for c in report["checks"].values()
        for m in c["methods"].values()
    )
    assert spans == pytest.approx(expected)
    assert "3 evaluation users" in ax.get_title() and "SIMULATED" not in ax.get_title()
    plt.close(fig)


def test_quality_report_measures_evaluation_users_only(behavior, items):
    purpose = ("evaluation", "train", "evaluation")
    lora = LORA.assign(purpose=list(purpose))
    behavior = behavior.assign(purpose=list(purpose))
    empty = ZERO_SHOT[:0]  # no comparison run
    report, markdown = report_keyword_quality(
        lora, empty, TARGET, behavior, items, REAL_USERS, PARAMS
    )
    assert report["n_users"] == 2 and set(report["methods"]) == {"llm_lora", "baseline"}
    # a: comedy is a top-2 history genre; c: drama, horror names horror
    history = report["checks"]["history_genres"]
    assert history["n_users"] == 2 and history["methods"]["llm_lora"]["share_exact"] == 1.0
    assert "zero-shot" not in markdown


def test_checks_without_their_reference_are_not_applicable(behavior, items):
    """POG-shaped data: items without the baseline column, real users without a hidden taste."""
    check = {"description": "d", "attribute": "genre", "budget": 1}
    params = {
        **PARAMS,
        "quality": {
            **PARAMS["quality"],
            "checks": [
                {**check, "name": "taste", "source": "user", "column": "taste"},
                {
                    **check,
                    "name": "hidden",
                    "source": "user",
                    "column": "user_id",
                    "hidden_taste": True,
                },
                {**check, "name": "kind", "source": "target", "column": "class_name"},
                {**check, "name": "era", "source": "target", "column": "title", "attribute": "era"},
                {
                    **check,
                    "name": "genres",
                    "source": "target",
                    "column": "genres",
                    "baseline": {"column": "class_name"},
                },
            ],
        },
    }
    report, markdown = report_keyword_quality(
        LORA, ZERO_SHOT, TARGET, behavior, items, REAL_USERS, params
    )
    assert set(report["checks"]) == {"genres"}
    assert set(report["checks"]["genres"]["methods"]) == {"llm_lora", "llm_zero_shot"}
    assert set(report["not_applicable"]) == {
        "taste",
        "hidden",
        "kind",
        "era",
        "baseline:class_name",
    }
    assert report["not_applicable"]["hidden"].startswith("users are real, not simulated")
    assert report["not_applicable"]["taste"].startswith("the users table has no column 'taste'")
    assert report["not_applicable"]["era"].startswith("the LLM is not asked the attribute 'era'")
    assert "- kind: not applicable: the items table has no column 'class_name'" in markdown
    simulated = REAL_USERS.assign(simulated=True)
    report, _ = report_keyword_quality(LORA, ZERO_SHOT, TARGET, behavior, items, simulated, params)
    assert "hidden" not in report["not_applicable"] and report["scene_note"] == "SIMULATED users"


def test_two_tables_of_one_llm_setting_are_an_error(behavior, items):
    with pytest.raises(ValueError, match="unknown or repeated llm_adapter"):
        report_keyword_quality(LORA, LORA, TARGET, behavior, items, REAL_USERS, PARAMS)


def test_lora_refuses_an_evaluation_user_the_adapter_trained_on(behavior, items):
    llm = ScriptedLLM(LLM_RULES)
    adapter = {"tensors": {}, "metadata": {"trained_users": {"movie": ["b", "z"]}}}
    with pytest.raises(AdapterLeakError, match=r"movie.*trained on 1 of these users .*\['b'\]"):
        extract_preference_keywords(
            behavior, items, llm, adapter, {**PARAMS, "llm_adapter": "lora"}
        )
    assert llm.calls == []  # refused before any answer
    # training rows of those users are no evaluation: they pass the check (then merge fails here)
    training = behavior.assign(purpose="train")
    with pytest.raises(ValueError, match="not a trained keyword adapter"):
        extract_preference_keywords(
            training, items, llm, adapter, {**PARAMS, "llm_adapter": "lora"}
        )
    with pytest.raises(ValueError, match="llm_adapter: expected lora or none, got 'qlora'"):
        extract_preference_keywords(
            behavior, items, llm, adapter, {**PARAMS, "llm_adapter": "qlora"}
        )


def test_comparison_keywords_run_the_other_setting_on_evaluation_users_only(behavior, items):
    behavior = behavior.assign(purpose=["evaluation", "train", "evaluation"])
    llm = ScriptedLLM(LLM_RULES, default="comedy")
    result = extract_comparison_keywords(behavior, items, llm, NO_ADAPTER, PARAMS)
    assert result["user_id"].tolist() == ["a", "c"] and set(result["llm_adapter"]) == {"none"}
    params = {**PARAMS, "quality": {**PARAMS["quality"], "compare_llm_adapter": None}}
    empty = extract_comparison_keywords(behavior, items, llm, NO_ADAPTER, params)
    assert empty.empty and list(empty.columns) == list(result.columns)


def test_bootstrap_interval_matches_the_normal_approximation():
    values = [True] * 160 + [False] * 240
    result = bootstrap_share(values, n_resamples=4000, seed=0)
    half_width = 1.96 * (0.4 * 0.6 / 400) ** 0.5  # 0.048; a 90% interval would be 0.040
    assert result["share"] == 0.4
    assert result["ci95"] == pytest.approx([0.4 - half_width, 0.4 + half_width], abs=0.004)
    assert bootstrap_share(values, n_resamples=4000, seed=0) == result  # seeded
    assert bootstrap_share([True], 100, 0) == {"share": 1.0, "ci95": None}
    assert bootstrap_share([], 100, 0) == {"share": None, "ci95": None}


def test_fallback_reads_only_the_columns_the_items_have(behavior, items):
    """POG items have no genres: the fallback is the content words of the history texts."""
    pog_items = items.drop(columns="genres")
    llm = ScriptedLLM([], default="")
    preference = extract_preference_keywords(behavior, pog_items, llm, NO_ADAPTER, PARAMS)
    c = preference.set_index("user_id").loc["c"]
    assert c["fallback"] and list(c["keywords"]) == ["alien", "horror"]
    target = extract_target_keywords(behavior, pog_items, llm, PARAMS).set_index("user_id")
    assert list(target.at["b", "keywords"]) == ["movie poster", "Toy Story", "toy", "story"]


def test_fallback_to_titles_when_the_texts_have_no_latin_words(items):
    by_id = items_by_id(items.assign(title=["连衣裙", "衬衫", "连衣裙", "外套"]))
    assert fallback_keywords(["1", "2", "3"], ["连衣裙", "衬衫"], by_id, [], 2) == [
        "连衣裙",
        "衬衫",
    ]


def test_the_adapters_decoding_overrides_apply_to_lora_only(behavior, items, monkeypatch):
    from pmg_kedro.components.method import keywords as nodes

    llm, merged = ScriptedLLM(LLM_RULES), ScriptedLLM(LLM_RULES)
    llm.name, merged.name = "scripted", "scripted+lora"
    monkeypatch.setattr(nodes, "adapted_llm", lambda base, adapter, where: merged)
    params = {**PARAMS, "lora_generation": {"repetition_penalty": 1.0}}
    extract_preference_keywords(behavior, items, llm, NO_ADAPTER, params)
    lora = extract_preference_keywords(
        behavior, items, llm, NO_ADAPTER, {**params, "llm_adapter": "lora"}
    )
    assert [c[1].repetition_penalty for c in llm.calls] == [1.1, 1.1]  # zero-shot: `generation`
    assert [c[1].repetition_penalty for c in merged.calls] == [1.0, 1.0]  # the merged LLM answers
    assert [c[1].max_new_tokens for c in merged.calls] == [8, 8]  # the rest from `generation`
    assert set(lora["llm_adapter"]) == {"lora"} and set(lora["llm"]) == {"scripted+lora"}


def test_a_users_attribute_prompts_form_one_prefix_cached_group(behavior, items):
    """prefix_cache: every call groups the prompts by user (the history they share); off: none."""
    llm = ScriptedLLM(LLM_RULES)
    extract_preference_keywords(behavior, items, llm, NO_ADAPTER, PARAMS)
    seen = {}
    for (messages, _, _), groups in zip(llm.calls, llm.groups, strict=True):
        assert groups is not None and len(groups) == len(messages)
        for message, key in zip(messages, groups, strict=True):
            seen.setdefault(key, set()).add(message.split("ATTR=")[0])
    assert len(seen) == len(behavior) and all(len(texts) == 1 for texts in seen.values())
    assert len({next(iter(t)) for t in seen.values()}) == len(behavior)
    llm = ScriptedLLM(LLM_RULES)
    extract_preference_keywords(behavior, items, llm, NO_ADAPTER, {**PARAMS, "prefix_cache": False})
    assert llm.groups and all(g is None for g in llm.groups)


def test_most_frequent_history_values_keep_ties_at_the_cut():
    from pmg_kedro.components.evaluation.keyword_quality import most_frequent_with_ties

    values = ["drama", "crime", "comedy", "drama", "war", "comedy", "crime", "drama"]
    # drama 3, crime 2, comedy 2, war 1: the two most frequent are drama and (crime or comedy)
    assert most_frequent_with_ties(values, 2) == ["drama", "crime", "comedy"]
    assert most_frequent_with_ties(values, 1) == ["drama"]
    assert most_frequent_with_ties(["war"], 2) == ["war"]


def test_the_method_objects_keywords_are_the_nodes_for_both_llm_settings(
    behavior, items, monkeypatch
):
    """`PMG.keywords` (what the demo calls) answers as the two keyword nodes do, zero-shot and
    with the merged adapter (the `merge` the caller made once), and refuses the same leak."""
    from pmg_kedro.components.method import keywords as nodes
    from pmg_kedro.components.method.pmg import PMG

    llm, merged = ScriptedLLM(LLM_RULES), ScriptedLLM(LLM_RULES, default="comedy")
    llm.name, merged.name = "scripted", "scripted+lora"
    monkeypatch.setattr(nodes, "adapted_llm", lambda base, adapter, where: merged)
    pmg = PMG(generator=None, llm=llm)
    for adapter in ("none", "lora"):
        params = {**PARAMS, "llm_adapter": adapter}
        k_p, k_t = pmg.keywords(behavior, items, params, adapter=adapter)
        pd.testing.assert_frame_equal(
            k_p, extract_preference_keywords(behavior, items, llm, NO_ADAPTER, params)
        )
        pd.testing.assert_frame_equal(k_t, extract_target_keywords(behavior, items, llm, params))
        assert set(k_p["llm"]) == {"scripted" if adapter == "none" else "scripted+lora"}
    # concurrent (the demo): k^t beside k^p in a second thread, the same tables
    threads = []
    target = nodes.target_keywords

    def recorded_target(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return target(*args, **kwargs)

    monkeypatch.setattr(nodes, "target_keywords", recorded_target)
    lora = {**PARAMS, "llm_adapter": "lora"}
    together = pmg.keywords(behavior, items, lora, adapter="lora", concurrent=True)
    alone = pmg.keywords(behavior, items, lora, adapter="lora")
    zero_shot = pmg.keywords(behavior, items, PARAMS, concurrent=True)  # one LLM: in turn
    for a, b in zip(together, alone, strict=True):
        pd.testing.assert_frame_equal(a, b)
    main = threading.current_thread().name
    assert threads[0].startswith("pmg-target-keywords") and threads[1:] == [main, main]
    assert set(zero_shot[0]["llm"]) == {"scripted"}
    made_once = ScriptedLLM(LLM_RULES, default="drama")
    made_once.name = "made once"
    k_p, _ = pmg.keywords(behavior, items, PARAMS, adapter="lora", merge=lambda: made_once)
    assert set(k_p["llm"]) == {"made once"} and made_once.calls
    leaked = {"tensors": {}, "metadata": {"trained_users": {"movie": ["b"]}}}
    with pytest.raises(AdapterLeakError):
        pmg.keywords(behavior, items, PARAMS, adapter="lora", keyword_adapter=leaked)
