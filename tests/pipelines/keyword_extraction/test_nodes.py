"""Keyword extraction nodes (paper §3.2.2) with a scripted LLM: prompts, parsing, merge, fallback
rule, target prefix, and the quality report's arithmetic."""

import pandas as pd
import pytest

from pmg_kedro.components.keyword_quality import bootstrap_share, fallback_keywords, items_by_id
from pmg_kedro.pipelines.keyword_extraction.nodes import (
    extract_preference_keywords,
    extract_target_keywords,
    report_keyword_quality,
)
from tests.components.tiny_llm import ScriptedLLM

GEN = {"max_new_tokens": 8, "repetition_penalty": 1.1, "batch_size": 8}
PARAMS = {
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
        "note": "real users",
        "simulated_note": "SIMULATED users",
        "baseline": [{"column": "genres", "top": 2}],
        "checks": [
            {
                "name": "history_genres",
                "description": "top-2 history genres",
                "source": "history",
                "column": "genres",
                "top": 2,
            },
            {
                "name": "target_genres",
                "description": "target genres",
                "source": "target",
                "column": "genres",
            },
        ],
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
def behaviour():
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


def test_preference_keywords_merge_dedupe_cut_and_fallback(behaviour, items):
    llm = ScriptedLLM(LLM_RULES, default="I cannot answer that question about this user, sorry.")
    result = extract_preference_keywords(behaviour, items, llm, PARAMS).set_index("user_id")

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
    assert list(a["raw_answers"])[1] == "John Lasseter, Who directed"
    assert [list(p) for p in a["parsed"]] == [
        ["animation", "comedies", "family"],
        ["john lasseter"],
    ]

    # c: nothing parses -> fallback rule: most frequent history genres, flagged, never dropped.
    c = result.loc["c"]
    assert c["fallback"] and list(c["keywords"]) == ["horror", "sci-fi"] and c["n_parsed"] == 0
    assert len(result) == 3


def test_target_keywords_prefix_cut_and_fallback(behaviour, items):
    llm = ScriptedLLM(LLM_RULES, default="")
    result = extract_target_keywords(behaviour, items, llm, PARAMS).set_index("user_id")
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


def test_target_fallback_uses_message_words_when_no_item_columns(behaviour, items):
    params = {**PARAMS, "target_fallback_columns": [], "target_prefix": ["emoji"]}
    result = extract_target_keywords(behaviour, items, ScriptedLLM([]), params).set_index("user_id")
    assert list(result.at["c", "keywords"]) == ["emoji", "alien", "horror"]


def _preference(keywords, fallback, purpose=("evaluation",) * 3):
    return pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "purpose": list(purpose),
            "keywords": keywords,
            "attributes": [["genre"]] * 3,
            "raw_answers": [["x"]] * 3,
            "parsed": [[k] if not f else [[]] for k, f in zip(keywords, fallback, strict=True)],
            "n_parsed": [0 if f else len(k) for k, f in zip(keywords, fallback, strict=True)],
            "fallback": fallback,
        }
    )


TARGET = pd.DataFrame(
    {"user_id": ["a", "b", "c"], "fallback": [False, True, False], "n_parsed": [2, 0, 1]}
)
REAL_USERS = pd.DataFrame({"user_id": ["a", "b", "c"], "simulated": False})


def test_quality_report_counts_llm_and_baseline_hits(behaviour, items):
    preference = _preference(
        [["animated comedy", "pixar"], ["romance"], ["horror"]], [False, False, True]
    )
    report, markdown = report_keyword_quality(
        preference, TARGET, behaviour, items, REAL_USERS, PARAMS
    )

    history = report["checks"]["history_genres"]
    # a names "comedy" (in "animated comedy"); b's "romance" is no crime/thriller/drama; c: horror.
    assert history["llm_share_exact"] == pytest.approx(2 / 3, abs=1e-3)
    assert history["llm_share_without_fallback_users"] == pytest.approx(0.5)
    assert history["baseline_share"] == 1.0  # the baseline is the history genres themselves
    assert history["baseline_share_ci95"] == [1.0, 1.0]
    target_check = report["checks"]["target_genres"]
    # Targets: a -> Heat (crime, thriller), b -> Toy Story, c -> Alien (horror, sci-fi).
    assert target_check["baseline_share_exact"] == pytest.approx(1 / 3, abs=1e-3)
    assert target_check["llm_share_exact"] == pytest.approx(1 / 3, abs=1e-3)
    # three users, one hit: a resample holds 0, 1, 2 or 3 hits
    assert target_check["llm_share_exact_ci95"] == [0.0, 1.0]
    assert report["preference_keywords"]["n_fallback_users"] == 1
    assert report["preference_keywords"]["empty_answer_share_per_attribute"] == {
        "genre": pytest.approx(1 / 3, abs=1e-3)
    }
    assert report["target_keywords"]["n_fallback_users"] == 1
    assert report["scene_note"] == "real users" and report["not_applicable"] == {}
    assert "| history_genres: top-2 history genres | 3 | 0.67 [" in markdown
    assert "1.00 [1.00, 1.00] |" in markdown


def test_quality_report_measures_evaluation_users_only(behaviour, items):
    preference = _preference(
        [["comedy"], ["crime"], ["drama"]],
        [False, False, False],
        purpose=("evaluation", "training", "evaluation"),
    )
    behaviour = behaviour.assign(purpose=["evaluation", "training", "evaluation"])
    report, _ = report_keyword_quality(preference, TARGET, behaviour, items, REAL_USERS, PARAMS)
    assert report["n_users"] == 2
    # a: comedy is a top-2 history genre; c: drama is not Alien's horror / sci-fi
    assert report["checks"]["history_genres"]["llm_share_exact"] == 0.5


def test_checks_without_their_reference_are_not_applicable(behaviour, items):
    """POG-shaped data: items without the baseline column, real users without a hidden taste."""
    params = {
        **PARAMS,
        "quality": {
            **PARAMS["quality"],
            "baseline": [{"column": "class_name", "top": 2}],
            "checks": [
                {"name": "taste", "description": "d", "source": "user", "column": "taste"},
                {
                    "name": "hidden",
                    "description": "d",
                    "source": "user",
                    "column": "user_id",
                    "hidden_taste": True,
                },
                {"name": "kind", "description": "d", "source": "target", "column": "class_name"},
            ],
        },
    }
    preference = _preference([["a"], ["b"], ["c"]], [False] * 3)
    report, markdown = report_keyword_quality(
        preference, TARGET, behaviour, items, REAL_USERS, params
    )
    assert report["checks"] == {}
    assert set(report["not_applicable"]) == {"baseline:class_name", "taste", "hidden", "kind"}
    assert report["not_applicable"]["hidden"].startswith("users are real, not simulated")
    assert report["not_applicable"]["taste"].startswith("the users table has no column 'taste'")
    assert "- kind: not applicable: the items table has no column 'class_name'" in markdown
    simulated = REAL_USERS.assign(simulated=True)
    report, _ = report_keyword_quality(preference, TARGET, behaviour, items, simulated, params)
    assert "hidden" not in report["not_applicable"] and report["scene_note"] == "SIMULATED users"


def test_bootstrap_interval_matches_the_normal_approximation():
    values = [True] * 160 + [False] * 240
    result = bootstrap_share(values, n_resamples=4000, seed=0)
    half_width = 1.96 * (0.4 * 0.6 / 400) ** 0.5  # 0.048; a 90% interval would be 0.040
    assert result["share"] == 0.4
    assert result["ci95"] == pytest.approx([0.4 - half_width, 0.4 + half_width], abs=0.004)
    assert bootstrap_share(values, n_resamples=4000, seed=0) == result  # seeded
    assert bootstrap_share([True], 100, 0) == {"share": 1.0, "ci95": None}
    assert bootstrap_share([], 100, 0) == {"share": None, "ci95": None}


def test_fallback_reads_only_the_columns_the_items_have(behaviour, items):
    """POG items have no genres: the fallback is the content words of the history texts."""
    pog_items = items.drop(columns="genres")
    llm = ScriptedLLM([], default="")
    preference = extract_preference_keywords(behaviour, pog_items, llm, PARAMS)
    c = preference.set_index("user_id").loc["c"]
    assert c["fallback"] and list(c["keywords"]) == ["alien", "horror"]
    target = extract_target_keywords(behaviour, pog_items, llm, PARAMS).set_index("user_id")
    assert list(target.at["b", "keywords"]) == ["movie poster", "Toy Story", "toy", "story"]


def test_fallback_to_titles_when_the_texts_have_no_latin_words(items):
    by_id = items_by_id(items.assign(title=["连衣裙", "衬衫", "连衣裙", "外套"]))
    assert fallback_keywords(["1", "2", "3"], ["连衣裙", "衬衫"], by_id, [], 2) == [
        "连衣裙",
        "衬衫",
    ]
