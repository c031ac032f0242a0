"""Prompt building and answer parsing (paper §3.2.2)."""

import pytest

from pmg_kedro.components.data.prompts import (
    content_words,
    format_behavior,
    keyword_key,
    merge_keywords,
    most_frequent,
    parse_keywords,
    preference_prompt,
    render,
    target_condition,
    target_prompt,
)


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("", []),
        ("   \n ", []),
        ("1. Comedy\n2. Drama\n3) Animation", ["comedy", "drama", "animation"]),
        ("- Sci-Fi\n* **Action**\n• thriller", ["sci-fi", "action", "thriller"]),
        ("Comedy, comedy, COMEDIES; Drama", ["comedy", "drama"]),
        ("\"cute\", 'cartoon' (style), etc.", ["cute", "cartoon"]),
        ("Keywords: action, adventure; fantasy.", ["action", "adventure", "fantasy"]),
        ("Genre: horror\nCountry: USA", ["horror", "usa"]),
        ("comedy and drama", ["comedy", "drama"]),
        ("The Matrix, a war movie", ["matrix", "war movie"]),
        # One long sentence is not a keyword, not even split at "and".
        ("The user seems to enjoy movies with lots of action and explosions in big cities", []),
        (
            "Comedy, Adventure! The user likes the film Casino which is a crime drama",
            ["comedy", "adventure"],
        ),
        ("1995, !!, ---, ...", ["1995"]),
    ],
)
def test_parse_messy_answers(answer, expected):
    assert parse_keywords(answer, max_words=4) == expected


def test_parse_drops_echoes_of_the_question_and_labels():
    labels = ["style", "(the visual style and mood)"]
    assert parse_keywords("Visual Style, Moods, noir, style", labels=labels) == ["noir"]
    assert parse_keywords("Here are the keywords: neon, retro", labels=labels) == ["neon", "retro"]


def test_parse_drops_the_cut_tail_of_an_unfinished_answer():
    answer = "Tom Hanks, Meryl Streep, Harr"
    assert parse_keywords(answer, complete=False) == ["tom hanks", "meryl streep"]
    assert parse_keywords(answer, complete=True)[-1] == "harr"


def test_keyword_key_merges_spelling_variants_only():
    assert keyword_key("Sci-Fi") == keyword_key("sci fi")
    assert keyword_key("Comedies") == keyword_key("comedy")
    assert keyword_key("dress") != keyword_key("dre")
    assert keyword_key("glass") == "glass"


def test_merge_is_round_robin_deduplicated_and_cut():
    per_attribute = [
        ["american", "french", "british", "german"],
        ["Dark", "noir"],
        ["dark", "comedy"],
        [],
    ]
    merged = merge_keywords(per_attribute, k=5, per_attribute_max=3)
    # The first of each attribute first; "dark" again (case) is a duplicate; at most 3 per attribute.
    assert merged == ["american", "Dark", "french", "noir", "comedy"]
    assert merge_keywords(per_attribute, k=100, per_attribute_max=3).count("german") == 0
    assert merge_keywords([[], []], k=10, per_attribute_max=3) == []


def test_target_condition_keeps_the_prefix_and_cuts_keywords():
    words = ["toy story", "animation", "toys", "bright", "kids", "fun", "extra"]
    condition = target_condition(["movie poster", "Toy Story"], words, k=5)
    assert condition == ["movie poster", "Toy Story", "animation", "toys", "bright", "kids", "fun"]
    assert target_condition(["costume"], [], k=5) == ["costume"]


def test_preference_prompt_has_principle_attribute_examples_history_and_conversation():
    history = format_behavior(["Toy Story (1995): Animation", "Heat (1995): Crime"])
    assert history == "- Toy Story (1995): Animation\n- Heat (1995): Crime"
    prompt = preference_prompt(
        "{principle}\n{history}\n{conversation}\nWhich {attribute} {examples}? {n_keywords}",
        principle="P",
        attribute="genre",
        examples="(e.g. comedy)",
        history=history,
        conversation="they talk about cats",
        conversation_template="Chat: {conversation}",
        n_keywords=3,
    )
    assert prompt == (
        "P\n- Toy Story (1995): Animation\n- Heat (1995): Crime\nChat: they talk about cats\n"
        "Which genre (e.g. comedy)? 3"
    )
    no_chat = preference_prompt(
        "{principle}|{conversation}|{attribute}",
        principle="P",
        attribute="a",
        examples="",
        history="",
        conversation="",
        conversation_template="Chat: {conversation}",
        n_keywords=1,
    )
    assert no_chat == "P||a"


def test_target_prompt_and_missing_fields_are_named():
    assert (
        target_prompt(
            "{target}: {n_keywords}{examples}",
            principle="",
            examples="!",
            target="Heat",
            n_keywords=5,
        )
        == "Heat: 5!"
    )
    with pytest.raises(KeyError, match="plot"):
        render("{plot}", title="x")


def test_most_frequent_breaks_ties_by_first_seen_and_content_words():
    assert most_frequent(["drama", "war", "war", "drama", "comedy"], 2) == ["drama", "war"]
    assert content_words("XD so drinking unicorn blood would be against the rules :)", 3) == [
        "drinking",
        "unicorn",
        "blood",
    ]


@pytest.mark.parametrize("scene", ["movie", "emoticon", "costume"])
def test_conf_templates_render_for_every_scene(scene, project_root):
    """The templates in conf/base use only fields the nodes provide."""
    from pmg_kedro.config_loader import project_config_loader

    params = project_config_loader("base", project_root / "conf")["parameters"][scene]
    kw = params["keyword_extraction"]
    for attribute, examples in kw["attributes"].items():
        prompt = preference_prompt(
            kw["preference_template"],
            principle=kw["principle"],
            attribute=attribute,
            examples=examples,
            history="- x",
            conversation="c",
            conversation_template=kw["conversation_template"],
            n_keywords=3,
        )
        assert attribute in prompt and "- x" in prompt and "{" not in prompt
    target = target_prompt(
        kw["target_template"],
        principle=kw["principle"],
        examples=kw["target_examples"],
        target="T",
        n_keywords=5,
    )
    assert "T" in target and "{" not in target
    assert 1 <= kw["k_t"] <= kw["k_p"]
