"""recommendation nodes: the chronological split, no leakage into user images and averaged
features (the labelled LEAK, Oracle-user, takes exactly the user's test items), ORACLE keywords
instead of the LLM's for Oracle-keywords-user, stale images refused, item images only where
needed, and the whole pipeline on an in-memory catalog (test parameters, a fake LLM, the tiny
random generator)."""

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from kedro_datasets.pandas import ParquetDataset
from kedro_datasets.text import TextDataset
from PIL import Image

from pmg_kedro.components.evaluation import recommendation_report
from pmg_kedro.components.reporting.stats import mde_note, minimum_detectable_effect
from pmg_kedro.components.reporting.tables import fmt_verdict
from pmg_kedro.pipelines.recommendation import nodes
from pmg_kedro.pipelines.recommendation.pipeline import create_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

N_USERS, N_ITEMS, N_LIKED = 4, 12, 10


def _caption(m: int) -> str:
    return f"[film{m:02d}]"


@pytest.fixture()
def items():
    return pd.DataFrame(
        {
            "item_id": [f"i{m:02d}" for m in range(N_ITEMS)],
            "title": [f"Film {m}" for m in range(N_ITEMS)],
            "caption": [_caption(m) for m in range(N_ITEMS)],
            "genres": [["Drama", "Comedy"] if m % 2 else ["Western"] for m in range(N_ITEMS)],
        }
    )


def _liked(user: int) -> list[int]:
    """User k's positives, oldest first: items (k + j) % 12, j = 0..9."""
    return [(user + j) % N_ITEMS for j in range(N_LIKED)]


@pytest.fixture()
def interactions():
    rows = []
    for k in range(N_USERS):
        for j, m in enumerate(_liked(k)):
            rows.append((f"u{k}", f"i{m:02d}", 1000 + 10 * j, True))
        # disliked items, latest of all: never positives, never in the split
        rows.append((f"u{k}", f"i{(k + 10) % N_ITEMS:02d}", 5000, False))
    table = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "positive"])
    table["simulated"] = False
    return table.sample(frac=1.0, random_state=0).reset_index(drop=True)  # order must not matter


PARAMS = {
    "interactions": {
        "positive_column": "positive",
        "order_columns": ["timestamp", "item_id"],
        "max_users": None,
        "k_core": {"user_min": 3, "item_min": 2},
        "split": {"validation": 0.1, "test": 0.1},
    },
    "user_images": {
        "n_history": 5,
        "k_p": 10,
        "max_keyword_words": 4,
        "history_line": "- {text}",
        "item_text": "{caption}",
        "prompt_template": "Movies:\n{history}\nWhich genres?",
        "answer_prefix": "Keywords:",
        "fallback_columns": ["genres"],
        "generation": {"max_new_tokens": 4, "batch_size": 2},
    },
    "features": {"image_size": 32, "input_size": 32, "batch_size": 8},
    "controls": {"shuffle_seed": 0},
}

# Item and history-item image generation at tiny size: 2 DDIM steps, the same noise for every image.
IMAGE_PARAMS = {
    **PARAMS,
    "item_images": {"prompt_template": "movie poster, {title}, {genres}"},
    "image_generation": {
        "seed": 0,
        "mode": "embedding_scale",
        "sampler": "ddim",
        "steps": 2,
        "guidance_scale": 1.5,
        "batch_size": 5,
    },
}


class FakeLLM:
    """Records the prompts; answers "space opera, noir" except for user u1's prompt (nothing)."""

    name = "fake-llm"

    def __init__(self):
        self.prompts: list[str] = []
        self.last_finished: list[bool] = []

    def generate(self, prompts, settings, answer_prefix="", desc=""):
        self.prompts += list(prompts)
        self.last_finished = [True] * len(prompts)
        return ["" if _caption(_liked(1)[7]) in p else "space opera, noir" for p in prompts]


def test_split_is_chronological_per_user_and_keeps_only_positives(interactions):
    split, counts = nodes.split_recommendation_interactions(interactions, PARAMS)
    assert counts["positives"] == N_USERS * N_LIKED
    for k in range(N_USERS):
        rows = split[split["user_id"] == f"u{k}"].sort_values("position")
        liked = [f"i{m:02d}" for m in _liked(k)]
        assert rows["item_id"].tolist() == liked  # oldest first, disliked item absent
        assert rows["split"].tolist() == ["train"] * 8 + ["validation", "test"]


def test_k_core_removes_rare_items_then_users_that_fall_short():
    rows = [("a", "x", 1), ("a", "y", 2), ("a", "z", 3), ("b", "x", 1), ("b", "y", 2)]
    rows += [("b", "rare", 3), ("c", "x", 1), ("c", "y", 2), ("c", "z", 3)]
    table = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(simulated=True)
    params = {
        "interactions": {
            **PARAMS["interactions"],
            "positive_column": None,
            "k_core": {"user_min": 3, "item_min": 2},
        }
    }
    split, counts = nodes.split_recommendation_interactions(table, params)
    # "rare" has one positive -> gone; b is left with 2 < 3 -> gone
    assert sorted(split["user_id"].unique()) == ["a", "c"]
    assert sorted(split["item_id"].unique()) == ["x", "y", "z"]
    assert counts["positives_after_k_core"] == 6
    assert bool(split["simulated"].all())


def test_user_keywords_see_only_the_last_training_items(interactions, items):
    split, _ = nodes.split_recommendation_interactions(interactions, PARAMS)
    llm = FakeLLM()
    table = nodes.extract_recommendation_keywords(split, items, llm, PARAMS).set_index("user_id")
    assert len(llm.prompts) == N_USERS  # one prompt per user
    for k in range(N_USERS):
        liked = _liked(k)
        train, held_out = liked[:8], liked[8:]
        prompt = table.loc[f"u{k}", "prompt"]
        assert list(table.loc[f"u{k}", "source_items"]) == [f"i{m:02d}" for m in train[-5:]]
        assert [_caption(m) in prompt for m in liked] == [False] * 3 + [True] * 5 + [False] * 2
        for m in held_out:
            assert _caption(m) not in prompt
    assert list(table.loc["u0", "keywords"]) == ["space opera", "noir"]


def test_fallback_keywords_come_from_the_training_items_only(interactions, items):
    # u1 gets an empty answer; its last five training items are 4..8: genres of 5, 7 = Drama,
    # Comedy (twice each), of 4, 6, 8 = Western (three times). Held-out items 9, 10 never count.
    items = items.copy()
    items.loc[[9, 10], "genres"] = pd.Series([["Leaky"], ["Leaky"]], index=[9, 10])
    split, _ = nodes.split_recommendation_interactions(interactions, PARAMS)
    table = nodes.extract_recommendation_keywords(split, items, FakeLLM(), PARAMS).set_index(
        "user_id"
    )
    assert bool(table.loc["u1", "fallback"])
    assert list(table.loc["u1", "keywords"]) == ["western", "drama", "comedy"]


def _planted_item_features(split):
    """Item m's features: 1 at coordinate m, 0 elsewhere (1280 wide)."""
    ids = sorted(split["item_id"].unique())
    features = [np.eye(1280, dtype=np.float32)[int(i[1:])] for i in ids]
    return pd.DataFrame({"item_id": ids, "image_source": "generated", "features": features})


def _user_images():
    rng = np.random.default_rng(0)
    return {
        f"u{k}": Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        for k in range(N_USERS)
    }


def _history_item_images():
    """A distinct flat colour per item: the GENERATED image of every item (Generated-items-user)."""
    return {
        f"i{m:02d}": Image.new("RGB", (32, 32), (20 * m, 100, 255 - 20 * m)) for m in range(N_ITEMS)
    }


def _user_features(split, items, item_features=None, oracle_user_images=None, params=PARAMS):
    keywords = nodes.extract_recommendation_keywords(split, items, FakeLLM(), params)
    return nodes.build_recommendation_user_features(
        split,
        _planted_item_features(split) if item_features is None else item_features,
        keywords,
        _user_images(),
        _history_item_images(),
        oracle_user_images or {},
        params,
    )


def test_averaged_user_features_are_the_mean_of_training_items_only(interactions, items):
    split, _ = nodes.split_recommendation_interactions(interactions, PARAMS)
    keywords = nodes.extract_recommendation_keywords(split, items, FakeLLM(), PARAMS)
    images = _user_images()
    table = nodes.build_recommendation_user_features(
        split, _planted_item_features(split), keywords, images, _history_item_images(), {}, PARAMS
    )
    averaged = table[table["setting"] == "averaged_user"].set_index("user_id")["features"]
    for k in range(N_USERS):
        expected = np.zeros(1280, dtype=np.float32)
        expected[_liked(k)[:8]] = 1 / 8  # the eight training items, not validation or test
        np.testing.assert_allclose(averaged[f"u{k}"], expected, atol=1e-7)
    # generated_user: each user's own image through the same extractor, in the users' order
    generated = table[table["setting"] == "generated_user"].set_index("user_id")["features"]
    direct = nodes._pooled([images["u2"], images["u0"]], PARAMS)
    np.testing.assert_allclose(generated["u2"], direct[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(generated["u0"], direct[1], rtol=1e-4, atol=1e-5)


def test_generated_items_user_averages_the_last_training_items_generated_features(
    interactions, items
):
    split, _ = nodes.split_recommendation_interactions(interactions, PARAMS)
    # every item feature comes from its generated image (movies without posters): reused
    table = _user_features(split, items)
    control = table[table["setting"] == "generated_items_user"].set_index("user_id")["features"]
    for k in range(N_USERS):
        expected = np.zeros(1280, dtype=np.float32)
        expected[_liked(k)[3:8]] = 1 / 5  # the last 5 of the 8 training items only
        np.testing.assert_allclose(control[f"u{k}"], expected, atol=1e-7)


def test_generated_items_user_encodes_generated_images_of_items_with_a_real_one(
    interactions, items
):
    split, _ = nodes.split_recommendation_interactions(interactions, PARAMS)
    real = _planted_item_features(split).assign(image_source="item image")  # costume
    table = _user_features(split, items, real)
    control = table[table["setting"] == "generated_items_user"].set_index("user_id")["features"]
    generated = _history_item_images()
    for k in (0, 3):
        last = [f"i{m:02d}" for m in _liked(k)[3:8]]
        expected = nodes._pooled([generated[i] for i in last], PARAMS).mean(axis=0)
        np.testing.assert_allclose(control[f"u{k}"], expected, rtol=1e-4, atol=1e-5)
    missing = {k: v for k, v in generated.items() if k != f"i{_liked(0)[7]:02d}"}
    keywords = nodes.extract_recommendation_keywords(split, items, FakeLLM(), PARAMS)
    with pytest.raises(ValueError, match="recommendation_history_item_images: no image"):
        nodes.build_recommendation_user_features(
            split, real, keywords, _user_images(), missing, {}, PARAMS
        )


def test_shuffled_user_gives_every_user_another_users_generated_features(interactions, items):
    split, _ = nodes.split_recommendation_interactions(interactions, PARAMS)
    table = _user_features(split, items)
    by = {s: g.set_index("user_id")["features"] for s, g in table.groupby("setting")}
    generated = {u: tuple(f) for u, f in by["generated_user"].items()}
    owner = {features: user for user, features in generated.items()}  # the images differ
    given = {u: owner[tuple(f)] for u, f in by["shuffled_user"].items()}
    assert sorted(given) == sorted(given.values()) == sorted(generated)  # each once
    assert all(u != source for u, source in given.items())  # nobody keeps its own
    again = _user_features(split, items)
    again = again[again["setting"] == "shuffled_user"].set_index("user_id")["features"]
    for user, features in by["shuffled_user"].items():
        np.testing.assert_array_equal(features, again[user])  # seeded


def test_oracle_user_is_the_mean_of_exactly_the_users_own_test_items(interactions, items):
    # two test items per user (positions 8, 9), one validation item (7), seven training items
    params = {
        **PARAMS,
        "interactions": {**PARAMS["interactions"], "split": {"validation": 0.1, "test": 0.2}},
    }
    split, _ = nodes.split_recommendation_interactions(interactions, params)
    assert (split.groupby("user_id")["split"].agg(lambda s: (s == "test").sum()) == 2).all()
    no_test = (split["user_id"] == "u3") & (split["split"] == "test")
    split = split[~no_test]  # u3 keeps no test item
    table = _user_features(split, items, params=params)
    oracle = table[table["setting"] == "oracle_user"].set_index("user_id")["features"]
    for k in range(3):
        expected = np.zeros(1280, dtype=np.float32)
        expected[_liked(k)[8:]] = 1 / 2  # its own two test items: no training or validation one
        np.testing.assert_allclose(oracle[f"u{k}"], expected, atol=1e-7)
    # u3 is never ranked (no test item): it keeps Averaged-user's features, its seven training items
    averaged = table[table["setting"] == "averaged_user"].set_index("user_id")["features"]
    np.testing.assert_allclose(oracle["u3"], averaged["u3"], atol=1e-7)
    assert np.count_nonzero(oracle["u3"]) == 7


def _taste_users():
    """SIMULATED users' hidden taste (the users table of costume), one favourite class per user."""
    return pd.DataFrame(
        {
            "user_id": [f"u{k}" for k in range(N_USERS)],
            "taste_brightness": ["dark", "light", "dark", "light"],
            "taste_texture": ["plain", "patterned", "plain", "patterned"],
            "taste_classes": [["coat", f"class {k}"] for k in range(N_USERS)],
        }
    )


def test_oracle_keywords_user_images_come_from_the_hidden_taste_not_the_llm(
    interactions, items, tiny_generator
):
    split, _ = nodes.split_recommendation_interactions(interactions, PARAMS)
    oracle = nodes.oracle_recommendation_keywords(split, _taste_users())
    assert oracle.set_index("user_id")["keywords"].to_dict() == {
        "u0": ["dark", "plain", "coat", "class 0"],
        "u1": ["light", "patterned", "coat", "class 1"],
        "u2": ["dark", "plain", "coat", "class 2"],
        "u3": ["light", "patterned", "coat", "class 3"],
    }
    images, log = nodes.generate_recommendation_user_images(oracle, tiny_generator, IMAGE_PARAMS)
    llm_images, llm_log = nodes.generate_recommendation_user_images(
        nodes.extract_recommendation_keywords(split, items, FakeLLM(), PARAMS),
        tiny_generator,
        IMAGE_PARAMS,
    )
    texts = log.set_index("key")["condition_text"]
    assert texts["u1"] == "light, patterned, coat, class 1"
    assert not set(texts) & set(llm_log["condition_text"])  # none of the LLM's keyword texts
    # generated as Generated-user's are: the same generator, settings and noise for the same text
    same, _ = nodes.generate_recommendation_user_images(
        oracle.assign(keywords=[["space opera", "noir"]] * N_USERS), tiny_generator, IMAGE_PARAMS
    )
    assert np.array_equal(np.asarray(same["u0"]), np.asarray(llm_images["u0"]))
    assert log.drop(columns=["key", "condition_text"]).equals(
        llm_log.drop(columns=["key", "condition_text"])
    )
    # the features of Oracle-keywords-user are those of these images, user by user
    table = _user_features(split, items, oracle_user_images=images)
    features = table[table["setting"] == "oracle_keywords_user"].set_index("user_id")["features"]
    direct = nodes._pooled([images["u3"]], PARAMS)[0]
    np.testing.assert_allclose(features["u3"], direct, rtol=1e-4, atol=1e-5)


def test_oracle_keywords_are_not_applicable_without_a_hidden_taste(interactions, items):
    split, _ = nodes.split_recommendation_interactions(interactions, PARAMS)
    real = _taste_users().drop(columns="taste_texture")  # real users: no hidden taste
    assert nodes.oracle_recommendation_keywords(split, real).empty
    assert "oracle_keywords_user" not in set(_user_features(split, items)["setting"])
    with pytest.raises(ValueError, match="no hidden taste for 1 users"):
        nodes.oracle_recommendation_keywords(split, _taste_users().iloc[1:])


def test_history_item_images_reuse_generated_item_images_and_make_the_rest(
    interactions, items, tiny_generator
):
    split, _ = nodes.split_recommendation_interactions(interactions, PARAMS)
    # u0..u3's last 5 training items: positions 3..7 of their likes
    needed = sorted({f"i{m:02d}" for k in range(N_USERS) for m in _liked(k)[3:8]})
    given = {"i03": Image.new("RGB", (8, 8), (255, 0, 0))}  # an item image generated before
    images, log = nodes.generate_recommendation_history_item_images(
        split, items, given, tiny_generator, IMAGE_PARAMS
    )
    assert sorted(images) == needed == log["key"].tolist()
    assert images["i03"] is given["i03"]
    assert log.set_index("key").loc["i04", "condition_text"] == "movie poster, Film 4, Western"
    again, _ = nodes.generate_recommendation_history_item_images(
        split, items, {}, tiny_generator, IMAGE_PARAMS
    )
    # the same noise for every image: the image made in another call, alone or batched, is equal
    assert np.array_equal(np.asarray(again["i05"]), np.asarray(images["i05"]))


def test_images_made_from_other_items_are_refused(interactions, items):
    split, _ = nodes.split_recommendation_interactions(interactions, PARAMS)
    keywords = nodes.extract_recommendation_keywords(split, items, FakeLLM(), PARAMS)
    # the same user images, but the split now holds out two items per user more
    shifted = split.copy()
    shifted.loc[shifted["position"] == 7, "split"] = "validation"
    with pytest.raises(ValueError, match="last 5 training items"):
        nodes.build_recommendation_user_features(
            shifted,
            _planted_item_features(split),
            keywords,
            _user_images(),
            _history_item_images(),
            {},
            PARAMS,
        )


def test_item_images_are_generated_only_for_items_without_one(
    interactions, items, tiny_generator, tmp_path
):
    split, _ = nodes.split_recommendation_interactions(interactions, PARAMS)
    path = tmp_path / "poster.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    index = pd.DataFrame({"item_id": ["i03"], "image_path": [str(path)], "image_offset": [-1]})
    images, log = nodes.generate_recommendation_item_images(
        split, items, index, tiny_generator, IMAGE_PARAMS
    )
    expected = sorted(set(split["item_id"]) - {"i03"})
    assert sorted(images) == expected == log["key"].tolist()
    assert log.set_index("key").loc["i04", "condition_text"] == "movie poster, Film 4, Western"
    assert (
        log.set_index("key").loc["i05", "condition_text"] == "movie poster, Film 5, Drama, Comedy"
    )
    features = nodes.extract_recommendation_item_features(split, index, images, IMAGE_PARAMS)
    sources = features.set_index("item_id")["image_source"]
    assert sources["i03"] == "item image" and (sources.drop("i03") == "generated").all()


def _test_params(project_root, scene: str) -> dict:
    """The scene's recommendation parameters of the `test` environment (base merged with test)."""
    from pmg_kedro.config_loader import project_config_loader

    loader = project_config_loader("test", project_root / "conf")
    return loader["parameters"][scene]["recommendation"]


def test_a_neither_difference_carries_the_mde_of_its_per_seed_differences():
    rng = np.random.default_rng(5)
    seeds = range(5)
    base = {m: rng.uniform(0.1, 0.3, size=5) for m in recommendation_report.METRIC_COLUMNS}
    rows = [
        {"setting": setting, "seed": seed}
        | {m: base[m][seed] + (rng.normal(0, 0.02) if setting == "a" else 0.0) for m in base}
        for setting in ("a", "b")
        for seed in seeds
    ]
    settings = {"a": {"label": "A"}, "b": {"label": "B"}}
    entry = recommendation_report.paired_differences(
        pd.DataFrame(rows), [["a", "b"]], settings, 0.95
    )[0]["metrics"]["recall@20"]
    by = pd.DataFrame(rows).pivot(index="seed", columns="setting", values="recall@20")
    assert entry["verdict"] == "neither"
    assert entry["mde"] == pytest.approx(minimum_detectable_effect(by["a"] - by["b"])["mde"])
    assert (entry["mde_alpha"], entry["mde_power"]) == (0.05, 0.8)


def test_pipeline_runs_every_setting_and_seed_and_labels_what_it_reports(
    interactions, items, tiny_generator, tmp_path, project_root
):
    paths = []
    for m in range(N_ITEMS):  # costume: real item images on disk
        paths.append(tmp_path / f"i{m:02d}.png")
        Image.new("RGB", (28, 28), (20 * m, 0, 255 - 20 * m)).save(paths[-1])
    datasets = {
        "llm": FakeLLM(),
        "generator": tiny_generator,
        "movie.interactions": interactions,
        "movie.items": items,
        "movie.image_index": pd.DataFrame(columns=["item_id", "image_path", "image_offset"]),
        "costume.interactions": interactions.drop(columns="positive").assign(simulated=True),
        "costume.items": items.assign(
            class_name="coat", brightness_level="dark", texture_level="plain"
        ),
        "costume.image_index": pd.DataFrame(
            {"item_id": items["item_id"], "image_path": map(str, paths), "image_offset": -1}
        ),
        "movie.users": _taste_users()[["user_id"]].assign(simulated=False),
        "costume.users": _taste_users().assign(simulated=True),
    }
    params = {scene: _test_params(project_root, scene) for scene in ("movie", "costume")}
    catalog = DataCatalog({name: MemoryDataset(data) for name, data in datasets.items()})
    for scene in params:
        catalog[f"params:{scene}.recommendation"] = MemoryDataset(params[scene])
        # A file as in the catalog: the runner releases a MemoryDataset once the summary read it.
        report_file = str(tmp_path / f"{scene}_recommendation.json")
        catalog[f"{scene}.recommendation_report"] = JSONDataset(filepath=report_file)
        catalog[f"{scene}.table3_summary"] = MemoryDataset()
        markdown_file = str(tmp_path / f"{scene}_recommendation.md")
        catalog[f"{scene}.recommendation_report_markdown"] = TextDataset(filepath=markdown_file)
        log_file = str(tmp_path / f"{scene}_oracle_user_image_log.parquet")
        catalog[f"{scene}.recommendation_oracle_user_image_log"] = ParquetDataset(filepath=log_file)
    catalog["params:sharding"] = MemoryDataset({"cluster": "none"})
    pipeline = create_pipeline()
    assert {n.namespace for n in pipeline.nodes} == {"movie", "costume"}  # emoticon: no task
    SequentialRunner().run(pipeline, catalog)
    for scene in ("movie", "costume"):
        report = catalog.load(f"{scene}.recommendation_report")
        results = pd.DataFrame(report["results"])
        seeds = [int(s) for s in params[scene]["seeds"]]
        assert len(seeds) == 2
        ran = set(params[scene]["settings"]) - set(report["not_applicable"])
        assert sorted(zip(results["setting"], results["seed"], strict=True)) == sorted(
            (s, seed) for s in ran for seed in seeds
        )
        assert (results["ranked_known"] == 0).all()
        assert (results["simulated_users"] == (scene == "costume")).all()
        pairs = {(p["a"], p["b"]): p for p in report["paired_differences"]["pairs"]}
        assert list(pairs) == [
            ("generated_user", "averaged_user"),
            ("generated_user", "shuffled_user"),
            ("generated_user", "generated_items_user"),
        ]
        by = results.pivot(index="seed", columns="setting", values="recall@20")
        for (a, b), pair in pairs.items():
            expected = (by[a] - by[b]).tolist()
            assert list(pair["metrics"]["recall@20"]["per_seed"].values()) == pytest.approx(
                expected
            )
            for m in pair["metrics"].values():
                assert m["holm_p"] >= m["t_p"] or m["t_p"] != m["t_p"]
                assert m["verdict"] in (a, b, "neither") or m["verdict"].startswith(
                    "tests disagree"
                )
                mde = minimum_detectable_effect(list(m["per_seed"].values()))
                assert m["mde"] == pytest.approx(mde["mde"], nan_ok=True)
                assert m["mde_note"] == mde["mde_note"]
        expected = (by["generated_user"] - by["averaged_user"]).tolist()
        # Holm runs over every pair and metric: 3 pairs x 6 metrics
        tested = [m["t_p"] for p in pairs.values() for m in p["metrics"].values()]
        assert len(tested) == 18
        markdown = catalog.load(f"{scene}.recommendation_report_markdown")
        for text in ("Shuffled-user", "Generated-items-user", "Holm-corrected over the 18"):
            assert text in markdown
        assert mde_note("seeds") in markdown
        neither = [m for p in pairs.values() for m in p["metrics"].values()]
        for m in (m for m in neither if m["verdict"] == "neither"):
            assert fmt_verdict("neither", m["mde"], m["mde_note"]) in markdown
        # Table 3's numbers for MLflow: each setting's mean and std over seeds, per metric.
        summary = catalog.load(f"{scene}.table3_summary")
        for setting, group in results.groupby("setting"):
            for metric in ("precision@10", "recall@20", "ndcg@20"):
                got = summary["settings"][setting][metric]
                assert got["mean"] == pytest.approx(group[metric].mean())
                assert got["std"] == pytest.approx(group[metric].std(ddof=1))
        paired = summary["paired_differences"]["generated_user-averaged_user"]["recall@20"]
        assert paired["mean"] == pytest.approx(sum(expected) / 2)
        assert set(summary["paired_differences"]) == {
            "generated_user-averaged_user",
            "generated_user-shuffled_user",
            "generated_user-generated_items_user",
        }
    movie = catalog.load("movie.recommendation_report")
    costume = catalog.load("costume.recommendation_report")
    assert movie["item_features"]["image_sources"] == {"generated": N_ITEMS}
    assert any("GENERATED" in label for label in movie["labels"])
    assert not movie["simulated_users"]
    assert costume["item_features"]["image_sources"] == {"item image": N_ITEMS}
    assert costume["simulated_users"] and any("SIMULATED" in label for label in costume["labels"])
    # movie: every item feature is already generated, so the domain control shares Averaged-user's
    assert "in Averaged-user's domain" in movie["controls"]["generated_items_user"]
    assert "Averaged-user's domain" not in costume["controls"]["generated_items_user"]
    assert "derangement" in movie["controls"]["shuffled_user"]
    _assert_leak_and_oracle_reported(catalog)


def _assert_leak_and_oracle_reported(catalog):
    """Oracle-user (LEAK) in both scenes, Oracle-keywords-user (ORACLE) from the hidden taste for
    SIMULATED users only: labelled in every output, compared in a Holm family of their own."""
    movie = catalog.load("movie.recommendation_report")
    costume = catalog.load("costume.recommendation_report")
    # the ORACLE images were made from the hidden taste, never from the LLM's keywords
    log = catalog.load("costume.recommendation_oracle_user_image_log").set_index("key")
    assert log.loc["u2", "condition_text"] == "dark, plain, coat, class 2"
    assert "space opera" not in " ".join(log["condition_text"])
    assert catalog.load("movie.recommendation_oracle_user_image_log").empty
    assert "oracle_keywords_user" in costume["settings"]
    assert list(movie["not_applicable"]) == ["oracle_keywords_user"]
    assert "hidden-taste columns" in movie["not_applicable"]["oracle_keywords_user"]["why"]
    for scene, report in (("movie", movie), ("costume", costume)):
        markdown = catalog.load(f"{scene}.recommendation_report_markdown")
        leak = report["settings"]["oracle_user"]["label"]
        assert "LEAK: sensitivity check" in leak
        assert markdown.count(leak) >= 3  # its row, its description, its paired differences
        assert any(leak in label for label in report["labels"])  # the chart's title says so too
        assert markdown.splitlines()[0] == report["sensitivity"]["line"]
        assert markdown.startswith(("Sensitive: ", "Insensitive: "))
        family = {(p["a"], p["b"]) for p in report["sensitivity"]["pairs"] if p["metrics"]}
        assert ("oracle_user", "averaged_user") in family
        assert (("oracle_keywords_user", "averaged_user") in family) == (scene == "costume")
        assert "Sensitivity check (LEAK and ORACLE" in markdown
    oracle = costume["settings"]["oracle_keywords_user"]["label"]
    assert "ORACLE keywords (SIMULATED users' hidden taste)" in oracle
    markdown = catalog.load("costume.recommendation_report_markdown")
    assert markdown.count(oracle) >= 3
    assert "not applicable: the users table has no hidden-taste" in catalog.load(
        "movie.recommendation_report_markdown"
    )
