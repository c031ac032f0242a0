"""Keyword extraction nodes (paper §3.2.2) with a scripted LLM: prompts, parsing, merge, fallback
rule, target prefix, and the quality report's arithmetic."""

import pandas as pd
import pytest

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
        "note": "",
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


def test_quality_report_counts_llm_and_baseline_hits(behaviour, items):
    preference = pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "keywords": [["animated comedy", "pixar"], ["romance"], ["horror"]],
            "attributes": [["genre"]] * 3,
            "raw_answers": [["x"]] * 3,
            "parsed": [[["animated comedy"]], [["romance"]], [[]]],
            "n_parsed": [2, 1, 0],
            "fallback": [False, False, True],
        }
    )
    target = pd.DataFrame(
        {"user_id": ["a", "b", "c"], "fallback": [False, True, False], "n_parsed": [2, 0, 1]}
    )
    users = pd.DataFrame({"user_id": ["a", "b", "c"]})
    report, markdown = report_keyword_quality(preference, target, behaviour, items, users, PARAMS)

    history = report["checks"]["history_genres"]
    # a names "comedy" (in "animated comedy"); b's "romance" is no crime/thriller/drama; c: horror.
    assert history["llm_share_exact"] == pytest.approx(2 / 3, abs=1e-3)
    assert history["llm_share_without_fallback_users"] == pytest.approx(0.5)
    assert history["baseline_share"] == 1.0  # the baseline is the history genres themselves
    target_check = report["checks"]["target_genres"]
    # Targets: a -> Heat (crime, thriller), b -> Toy Story, c -> Alien (horror, sci-fi).
    assert target_check["baseline_share_exact"] == pytest.approx(1 / 3, abs=1e-3)
    assert target_check["llm_share_exact"] == pytest.approx(1 / 3, abs=1e-3)
    assert report["preference_keywords"]["n_fallback_users"] == 1
    assert report["target_keywords"]["n_fallback_users"] == 1
    assert "| history_genres: top-2 history genres | 3 |" in markdown
