"""recommendation nodes (paper §4.5, Table 3): MMGCN with No-image / Item-only / Averaged-user /
Generated-user image features, two controls of Generated-user (issue 22): Shuffled-user (the
placebo: another user's Generated-user features) and Generated-items-user (the image-domain
control: generated images of the user's own last training items), and two positive controls
(issue 29): Oracle-user (a labelled LEAK: the user's own held-out test items) and
Oracle-keywords-user (Generated-user from the SIMULATED users' hidden taste as keywords).

Protocol (ours where the paper is silent): implicit feedback, a k-core filter, a per-user
chronological train / validation / test split, full ranking with known items masked, early
stopping on validation, several seeds. Everything a user's image or averaged features are made of
comes from that user's TRAINING interactions of this split; the user images are PMG images from
the preference condition only (keywords of the user's last n training positives, no target). The
one exception is Oracle-user, the deliberate leak that tells whether MMGCN can reward any user
image at all; it is labelled LEAK wherever it appears and never judges PMG.

Every user of the k-core takes part, as in the paper's Table 3: the protocol's `user_split`
guards what PMG learns from users (soft embeddings), and nothing here uses a learned PMG part
(the keywords come from the frozen LLM, the images from the frozen generator).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from ...components.data.hidden_taste import has_hidden_tastes, oracle_keywords
from ...components.data.images import indexed_or_given_images
from ...components.data.item_terms import item_texts, present_columns
from ...components.data.splits import recommendation_split
from ...components.evaluation import mmgcn, recommendation_report
from ...components.evaluation.features import MobileNetFeatures
from ...components.evaluation.user_features import items_by_user, user_feature_sets
from ...components.method.keywords import recommendation_keywords_of_shard
from ...components.method.pmg import render_in_shards
from ...components.models.llm import GenerationSettings
from ...components.models.sharding import ShardSettings, concat_tables, run_shards
from ...components.reporting.environment import machine_description, torch_threads

logger = logging.getLogger(__name__)


# -- interactions -----------------------------------------------------------------------------


def split_recommendation_interactions(
    interactions: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Implicit feedback -> k-core -> per-user chronological train / validation / test split
    (`splits.recommendation_split`); returns the split and its counts."""
    split, counts = recommendation_split(interactions, params["interactions"])
    logger.info("recommendation split: %s", counts)
    return split, counts


# -- user images (PMG, preference condition only) ----------------------------------------------


def extract_recommendation_keywords(
    split: pd.DataFrame,
    items: pd.DataFrame,
    llm,
    params: dict[str, Any],
    sharding: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """One LLM prompt per user on their last n TRAINING positives -> preference keywords k^p (or,
    where nothing parses, the items' most frequent `fallback_columns` values: flagged, counted),
    in shards of users where `sharding` says so.

    Returns user_id, source_items, prompt, raw_answer, finished, keywords, fallback, llm."""
    p = params["user_images"]
    # The fallback reads what the items have (POG items have no class): the configured columns
    # that exist, else the item titles.
    fallback_columns = present_columns(p["fallback_columns"], items) or ["title"]
    sources = items_by_user(split, "train").map(lambda s: s[-int(p["n_history"]) :])
    users = pd.DataFrame({"user_id": sources.index, "source_items": list(sources)})
    start = time.perf_counter()
    parts = run_shards(
        ShardSettings.from_params(sharding),
        "recommendation_user_keywords",
        users,
        recommendation_keywords_of_shard,
        data={"items": items, "p": p, "fallback_columns": fallback_columns},
        models={"llm": llm},
    )
    table = concat_tables(parts)
    seconds = time.perf_counter() - start
    settings = GenerationSettings.from_params(p["generation"])
    logger.info(
        "user keywords: %d users in %.1f s (%.3f s/user, %s, batch %d, %d new tokens max); %d fell "
        "back to the items' %s (configured: %s)",
        len(table),
        seconds,
        seconds / max(len(table), 1),
        llm.name,
        settings.batch_size,
        settings.max_new_tokens,
        int(table["fallback"].sum()),
        fallback_columns,
        p["fallback_columns"],
    )
    return table


def oracle_recommendation_keywords(split: pd.DataFrame, users: pd.DataFrame) -> pd.DataFrame:
    """Oracle-keywords-user's k^p: every split user's hidden taste in words
    (`hidden_taste.oracle_keywords`: brightness, texture, favourite classes) in place of the LLM's
    keywords; no row where the users table has no hidden taste (real users: not applicable).

    Returns user_id, keywords (the table `generate_recommendation_user_images` reads)."""
    ids = [str(u) for u in items_by_user(split, "train").index]
    if not has_hidden_tastes(users):
        logger.info("oracle keywords: the users table has no hidden taste; not applicable")
        return pd.DataFrame({"user_id": pd.Series(dtype=str), "keywords": pd.Series(dtype=object)})
    oracle = oracle_keywords(users)
    missing = [u for u in ids if u not in oracle.index]
    if missing:
        raise ValueError(
            f"users: no hidden taste for {len(missing)} users of the recommendation split "
            f"(e.g. {missing[:5]})"
        )
    return pd.DataFrame({"user_id": ids, "keywords": [list(oracle[u]) for u in ids]})


def generate_recommendation_user_images(
    user_keywords: pd.DataFrame,
    generator,
    params: dict[str, Any],
    sharding: dict[str, Any] | None = None,
) -> tuple[dict[str, Image.Image], pd.DataFrame]:
    """The Generated-user image per user: the generator on ", ".join(k^p) alone, no target (§4.5);
    the LLM's keywords (Generated-user) or the ORACLE ones (Oracle-keywords-user, none for real users).

    Returns {user_id: image} and the log (key = user_id, condition_text, generator, settings)."""
    texts = [", ".join(k) for k in user_keywords["keywords"]]
    keys = user_keywords["user_id"].astype(str).tolist()
    images = render_in_shards(
        generator, keys, texts, params["image_generation"], "user images", sharding
    )
    return dict(zip(keys, images, strict=True)), recommendation_report.image_log(
        keys, texts, generator, params["image_generation"]
    )


def generate_recommendation_item_images(
    split: pd.DataFrame,
    items: pd.DataFrame,
    image_index: pd.DataFrame,
    generator,
    params: dict[str, Any],
    sharding: dict[str, Any] | None = None,
) -> tuple[dict[str, Image.Image], pd.DataFrame]:
    """Target-only images, from the item's metadata (`item_images.prompt_template`), for the
    experiment's items that have no image in the image index (movies without posters), in shards
    of items where `sharding` says so.

    Returns {item_id: image} (empty when every item has an image) and the log."""
    needed = sorted(set(split["item_id"]) - set(image_index["item_id"].astype(str)))
    prompts = item_texts(items, params["item_images"]["prompt_template"], needed).tolist()
    logger.info(
        "item images: %d of %d experiment items have no image in the image index; generating them",
        len(needed),
        split["item_id"].nunique(),
    )
    if not needed:
        return {}, recommendation_report.image_log([], [], generator, params["image_generation"])
    images = render_in_shards(
        generator, needed, prompts, params["image_generation"], "item images", sharding
    )
    return dict(zip(needed, images, strict=True)), recommendation_report.image_log(
        needed, prompts, generator, params["image_generation"]
    )


def generate_recommendation_history_item_images(
    split: pd.DataFrame,
    items: pd.DataFrame,
    item_images: dict[str, Image.Image],
    generator,
    params: dict[str, Any],
    sharding: dict[str, Any] | None = None,
) -> tuple[dict[str, Image.Image], pd.DataFrame]:
    """Generated-items-user's images: a GENERATED image of every item among the users' last n
    TRAINING positives (the items each user's keywords are made from), text-only from the item's
    metadata (`item_images.prompt_template`), as item images are generated. Every image starts from
    the same noise, so an item `item_images` already holds (same template and settings: the movies
    without a poster) is that image, reused; the others are generated, in shards of items where
    `sharding` says so.

    Returns {item_id: image} and the log (key = item_id, condition_text, generator, settings)."""
    n = int(params["user_images"]["n_history"])
    needed = sorted({i for source in items_by_user(split, "train") for i in source[-n:]})
    prompts = item_texts(items, params["item_images"]["prompt_template"], needed)
    todo = [i for i in needed if i not in item_images]
    made = render_in_shards(
        generator,
        todo,
        prompts[todo].tolist(),
        params["image_generation"],
        "history item images",
        sharding,
    )
    images = {i: item_images[i] for i in needed if i in item_images}
    images |= dict(zip(todo, made, strict=True))
    logger.info(
        "history item images: %d items of the users' last %d training positives, %d generated, "
        "%d reused from the item images",
        len(needed),
        n,
        len(todo),
        len(needed) - len(todo),
    )
    log = recommendation_report.image_log(
        needed, prompts[needed].tolist(), generator, params["image_generation"]
    )
    return {i: images[i] for i in needed}, log


# -- features ------------------------------------------------------------------------------------


def _pooled(images: list[Image.Image], params: dict[str, Any]) -> np.ndarray:
    """MobileNetV2 pooled features (n, 1280) of images at `features.image_size` px."""
    f = params["features"]
    extractor = MobileNetFeatures(input_size=int(f["input_size"]))
    return extractor.pooled_images(images, int(f["image_size"]), int(f["batch_size"]))


def extract_recommendation_item_features(
    split: pd.DataFrame,
    image_index: pd.DataFrame,
    item_images: dict[str, Image.Image],
    params: dict[str, Any],
) -> pd.DataFrame:
    """MobileNetV2 pooled features of every experiment item's image: its own (image index) or the
    generated one. Returns item_id, image_source ("item image" | "generated"), features (1280)."""
    items = sorted(split["item_id"].unique())
    images, sources = indexed_or_given_images(
        items,
        image_index,
        item_images,
        "recommendation_item_images (generate_recommendation_item_images)",
    )
    start = time.perf_counter()
    features = _pooled(images, params)
    table = pd.DataFrame({"item_id": items, "image_source": sources})
    table["features"] = list(features)
    logger.info(
        "item features: %d items (%s) in %.1f s",
        len(table),
        table["image_source"].value_counts().to_dict(),
        time.perf_counter() - start,
    )
    return table


def build_recommendation_user_features(
    split: pd.DataFrame,
    item_features: pd.DataFrame,
    user_keywords: pd.DataFrame,
    user_images: dict[str, Image.Image],
    history_item_images: dict[str, Image.Image],
    oracle_user_images: dict[str, Image.Image],
    params: dict[str, Any],
) -> pd.DataFrame:
    """User visual features of the user settings (`user_features.user_feature_sets`): from
    TRAINING interactions only (averaged_user, generated_user, shuffled_user, generated_items_user,
    oracle_keywords_user where there are ORACLE-keyword images), but for the labelled LEAK
    oracle_user (the user's own held-out test items). Returns user_id, setting, features."""
    return user_feature_sets(
        split,
        item_features,
        user_keywords,
        {
            "generated_user": user_images,
            "history_items": history_item_images,
            "oracle_keywords_user": oracle_user_images,
        },
        n=int(params["user_images"]["n_history"]),
        shuffle_seed=int(params["controls"]["shuffle_seed"]),
        pooled=lambda images: _pooled(images, params),
    )


# -- the experiment ------------------------------------------------------------------------------


def run_recommendation_experiment(
    split: pd.DataFrame,
    item_features: pd.DataFrame,
    user_features: pd.DataFrame,
    params: dict[str, Any],
    sharding: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Every setting of Table 3 under every seed: MMGCN trained with early stopping on validation,
    tested with training and validation items masked (one task per run on the cluster where
    `sharding` says so); a setting that `requires` what the data lacks (no user features made for
    it) is left out, "not applicable" in the report. Returns one row per (setting, seed) with the test metrics, the best
    validation metrics (`val_` prefix), epochs and seconds."""
    parts, users, items = mmgcn.split_interactions(split)
    config = mmgcn.MMGCNConfig.from_params(params["model"])
    visual = mmgcn.feature_matrix(item_features, items, "item_id", "recommendation_item_features")
    skipped = recommendation_report.not_applicable(
        params["settings"], set(user_features["setting"])
    )
    settings = {k: v for k, v in params["settings"].items() if k not in skipped}
    for name, why in skipped.items():
        logger.info("%s: %s", name, why)
    user_visual = {}
    for name in {s.get("user_features") for s in settings.values()} - {None}:
        table = user_features[user_features["setting"] == name]
        what = f"recommendation_user_features ({name})"
        user_visual[name] = mmgcn.feature_matrix(table, users, "user_id", what)
    simulated = bool(split["simulated"].any())  # SIMULATED users (costume): every row says so
    # The thread count changes float reductions (the SVD of `standardize` too): fixed for the
    # whole node, so the same data and seeds give the same results.
    with torch_threads(params.get("num_threads")):
        rows = mmgcn.run_settings(
            parts,
            settings,
            mmgcn.SettingFeatures(visual, user_visual, params["features"].get("components")),
            params["seeds"],
            config,
            recommendation_report.METRIC_COLUMNS,
            ShardSettings.from_params(sharding),
        )
    return pd.DataFrame(rows).assign(simulated_users=simulated)


# -- the report ----------------------------------------------------------------------------------


def report_recommendation(
    results: pd.DataFrame,
    split: pd.DataFrame,
    split_stats: dict[str, Any],
    item_features: pd.DataFrame,
    item_image_log: pd.DataFrame,
    user_keywords: pd.DataFrame,
    user_image_log: pd.DataFrame,
    history_item_image_log: pd.DataFrame,
    oracle_user_image_log: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[dict[str, Any], str, Figure]:
    """Table 3's shape: mean ± std over seeds per setting and metric, a popularity reference, the
    paired differences of `report.paired` (Generated-user minus Averaged-user, Shuffled-user and
    Generated-items-user) per seed with their intervals, and the sensitivity check of
    `report.sensitivity` (LEAK and ORACLE settings; its verdict is the Markdown's first line);
    JSON, Markdown, bar chart. Every number says what produced it."""
    parts, _, _ = mmgcn.split_interactions(split)
    report = recommendation_report.table3(
        results,
        split_stats,
        item_features["image_source"].value_counts().to_dict(),
        item_image_log,
        user_keywords,
        user_image_log,
        history_item_image_log,
        oracle_user_image_log,
        mmgcn.popularity_test(parts),
        bool(split["simulated"].any()),
        machine_description(params.get("num_threads")),
        params,
    )
    return report, recommendation_report.markdown(report), recommendation_report.chart(report)
