"""recommendation nodes (paper §4.5, Table 3): MMGCN with No-image / Item-only / Averaged-user /
Generated-user image features.

Protocol (ours where the paper is silent): implicit feedback, a k-core filter, a per-user
chronological train / validation / test split, full ranking with known items masked, early
stopping on validation, several seeds. Everything a user's image or averaged features are made of
comes from that user's TRAINING interactions of this split; the user images are PMG images from
the preference condition only (keywords of the user's last n training positives, no target).

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

from ...components import mmgcn, recommendation_report
from ...components.features import MobileNetFeatures
from ...components.images import indexed_or_given_images, to_pil
from ...components.keyword_quality import fallback_keywords, items_by_id, present_columns
from ...components.llm import GenerationSettings
from ...components.pmg import PMG
from ...components.prompts import (
    field_text,
    format_behavior,
    merge_keywords,
    parse_keywords,
    render,
)
from ...components.reporting.environment import machine_description, torch_threads
from ...components.sharding import ShardSettings, concat_tables, run_shards
from ...components.splits import recommendation_split

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


def _training_items(split: pd.DataFrame) -> pd.Series:
    """user_id -> the user's training item ids, oldest first."""
    train = split[split["split"] == "train"].sort_values(["user_id", "position"])
    return train.groupby("user_id")["item_id"].agg(list)


# -- user images (PMG, preference condition only) ----------------------------------------------


def _item_texts(items: pd.DataFrame, template: str, item_ids) -> pd.Series:
    """item_id -> the item's text from `template` (any item column; lists joined by commas)."""
    by_id = items.drop_duplicates("item_id")
    by_id.index = by_id["item_id"].astype(str)
    wanted = list(dict.fromkeys(str(i) for i in item_ids))
    missing = [i for i in wanted if i not in by_id.index]
    if missing:
        raise ValueError(f"items: no row for item ids {missing[:5]} ({len(missing)} in all)")

    def field(value) -> str:
        scalar = isinstance(value, str) or not hasattr(value, "__iter__")
        return "" if scalar and pd.isna(value) else field_text(value)

    rows = by_id.loc[wanted].to_dict(orient="records")
    texts = [render(template, **{k: field(v) for k, v in row.items()}) for row in rows]
    return pd.Series(texts, index=wanted, dtype=object)


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
    sources = _training_items(split).map(lambda s: s[-int(p["n_history"]) :])
    users = pd.DataFrame({"user_id": sources.index, "source_items": list(sources)})
    start = time.perf_counter()
    parts = run_shards(
        ShardSettings.from_params(sharding),
        "recommendation_user_keywords",
        users,
        _recommendation_keywords_of_shard,
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


def _recommendation_keywords_of_shard(users, items, p, fallback_columns, llm) -> pd.DataFrame:
    """The keyword rows of a shard of users: their prompts answered in LLM batches."""
    sources = users["source_items"].tolist()
    texts = _item_texts(items, p["item_text"], (i for s in sources for i in s))
    messages = [
        render(
            p["prompt_template"],
            history=format_behavior([texts[i] for i in s], p["history_line"]),
        )
        for s in sources
    ]
    settings = GenerationSettings.from_params(p["generation"])
    answers = llm.generate(
        messages, settings, answer_prefix=p["answer_prefix"], desc="user keywords"
    )
    finished = list(llm.last_finished)
    by_id = items_by_id(items)
    return pd.DataFrame(
        [
            _keyword_record(user, source, prompt, answer, done, by_id, fallback_columns, p)
            | {"llm": llm.name}
            for user, source, prompt, answer, done in zip(
                users["user_id"], sources, messages, answers, finished, strict=True
            )
        ]
    )


def _keyword_record(user, source, prompt, answer, done, by_id, fallback_columns, p) -> dict:
    """One user's row: the parsed keywords, or the fallback rule's."""
    parsed = parse_keywords(
        answer, max_words=int(p["max_keyword_words"]), labels=[p["prompt_template"]], complete=done
    )
    keywords = merge_keywords([parsed], int(p["k_p"]), int(p["k_p"]))
    fallback = not keywords
    if fallback:
        keywords = fallback_keywords(source, [], by_id, fallback_columns, int(p["k_p"]))
    return {
        "user_id": user,
        "source_items": list(source),
        "prompt": prompt,
        "raw_answer": answer,
        "finished": bool(done),
        "keywords": keywords,
        "fallback": fallback,
    }


def _generate_images(
    generator,
    keys: list[str],
    texts: list[str],
    params: dict[str, Any],
    what: str,
    sharding: dict[str, Any] | None = None,
) -> list[Image.Image]:
    """One image per text, its text as the only condition (weight 1), `batch_size` texts per
    denoising call (`PMG.render`), in shards of keys (users or items) where `sharding` says so.
    Every image starts from the same seeded noise, so images differ by their condition only."""
    if not texts:
        return []
    parts = run_shards(
        ShardSettings.from_params(sharding),
        what.replace(" ", "_"),
        pd.DataFrame({"key": keys, "text": texts}),
        _images_of_shard,
        data={"params": params, "what": what},
        models={"generator": generator},
        user_column="key",
    )
    return [image for part in parts for image in part]


def _images_of_shard(rows, params, what, generator) -> list[Image.Image]:
    images = PMG(generator).render(
        rows["text"].tolist(),
        seed=int(params["seed"]),
        steps=int(params["steps"]),
        guidance_scale=float(params["guidance_scale"]),
        sampler=params["sampler"],
        mode=params["mode"],
        batch_size=int(params["batch_size"]),
        what=what,
    )
    return to_pil(images)


def _generator_name(generator) -> str:
    """What made an image: the generator's saved info (recipe, text encoder, resolution)."""
    info = dict(getattr(generator, "info", None) or {})
    name = info.get("name") or info.get("recipe") or type(generator).__name__
    details = [f"text encoder {info['text_encoder']}"] if "text_encoder" in info else []
    if hasattr(generator, "resolution"):
        details.append(f"{generator.resolution} px")
    return f"{name} ({', '.join(details)})" if details else name


def _image_log(
    keys: list[str], texts: list[str], generator, params: dict[str, Any]
) -> pd.DataFrame:
    """Which condition text, generator and sampling settings made each image."""
    return pd.DataFrame(
        {
            "key": pd.Series(keys, dtype=str),
            "condition_text": pd.Series(texts, dtype=str),
            "generator": _generator_name(generator),
            "seed": int(params["seed"]),
            "steps": int(params["steps"]),
            "sampler": params["sampler"],
            "mode": params["mode"],
            "guidance_scale": float(params["guidance_scale"]),
        }
    )


def generate_recommendation_user_images(
    user_keywords: pd.DataFrame,
    generator,
    params: dict[str, Any],
    sharding: dict[str, Any] | None = None,
) -> tuple[dict[str, Image.Image], pd.DataFrame]:
    """The Generated-user image per user: the generator on ", ".join(k^p) alone, no target (§4.5).

    Returns {user_id: image} and the log (key = user_id, condition_text, generator, settings)."""
    texts = [", ".join(k) for k in user_keywords["keywords"]]
    keys = user_keywords["user_id"].astype(str).tolist()
    images = _generate_images(
        generator, keys, texts, params["image_generation"], "user images", sharding
    )
    return dict(zip(keys, images, strict=True)), _image_log(
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
    prompts = _item_texts(items, params["item_images"]["prompt_template"], needed).tolist()
    logger.info(
        "item images: %d of %d experiment items have no image in the image index; generating them",
        len(needed),
        split["item_id"].nunique(),
    )
    if not needed:
        return {}, _image_log([], [], generator, params["image_generation"])
    images = _generate_images(
        generator, needed, prompts, params["image_generation"], "item images", sharding
    )
    return dict(zip(needed, images, strict=True)), _image_log(
        needed, prompts, generator, params["image_generation"]
    )


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
    params: dict[str, Any],
) -> pd.DataFrame:
    """User visual features of the two user settings, from TRAINING interactions only:
    averaged_user = mean of the user's training items' features; generated_user = features of the
    user's PMG image (same extractor); refuses images of other items than this split's last n
    training items (stale). Returns user_id, setting, features."""
    train = _training_items(split)
    n = int(params["user_images"]["n_history"])
    sources = user_keywords.set_index("user_id")["source_items"].map(list)
    stale = [u for u in train.index if u not in sources.index or sources[u] != train[u][-n:]]
    if stale:
        raise ValueError(
            f"recommendation_user_keywords: {len(stale)} users' keywords were not made from this "
            f"split's last {n} training items (e.g. {stale[:5]}); rerun the image nodes "
            "(tag recommendation_images)"
        )
    missing = [u for u in train.index if u not in user_images]
    if missing:
        raise ValueError(
            f"recommendation_user_images: no image for users {missing[:5]} ({len(missing)})"
        )
    features = item_features.set_index("item_id")["features"]
    averaged = [np.mean(np.stack([features[i] for i in items]), axis=0) for items in train]
    generated = _pooled([user_images[u] for u in train.index], params)
    users = list(train.index)
    return pd.DataFrame(
        {
            "user_id": users * 2,
            "setting": ["averaged_user"] * len(users) + ["generated_user"] * len(users),
            "features": [a.astype(np.float32) for a in averaged] + list(generated),
        }
    )


# -- the experiment ------------------------------------------------------------------------------


def run_recommendation_experiment(
    split: pd.DataFrame,
    item_features: pd.DataFrame,
    user_features: pd.DataFrame,
    params: dict[str, Any],
) -> pd.DataFrame:
    """Every setting of Table 3 under every seed: MMGCN trained with early stopping on validation,
    tested with training and validation items masked. Returns one row per (setting, seed) with the
    test metrics, the best validation metrics (`val_` prefix), epochs and seconds."""
    parts, users, items = mmgcn.split_interactions(split)
    config = mmgcn.MMGCNConfig.from_params(params["model"])
    visual = mmgcn.feature_matrix(item_features, items, "item_id", "recommendation_item_features")
    user_visual = {}
    for name in {s.get("user_features") for s in params["settings"].values()} - {None}:
        table = user_features[user_features["setting"] == name]
        what = f"recommendation_user_features ({name})"
        user_visual[name] = mmgcn.feature_matrix(table, users, "user_id", what)
    simulated = bool(split["simulated"].any())  # SIMULATED users (costume): every row says so
    # The thread count changes float reductions (the SVD of `standardize` too): fixed for the
    # whole node, so the same data and seeds give the same results.
    with torch_threads(params.get("num_threads")):
        rows = mmgcn.run_settings(
            parts,
            params["settings"],
            mmgcn.SettingFeatures(visual, user_visual, params["features"].get("components")),
            params["seeds"],
            config,
            recommendation_report.METRIC_COLUMNS,
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
    params: dict[str, Any],
) -> tuple[dict[str, Any], str, Figure]:
    """Table 3's shape: mean ± std over seeds per setting and metric, a popularity reference, the
    paired Generated-user - Averaged-user difference per seed with its interval; JSON, Markdown,
    bar chart. Every number says what produced it."""
    parts, _, _ = mmgcn.split_interactions(split)
    report = recommendation_report.table3(
        results,
        split_stats,
        item_features["image_source"].value_counts().to_dict(),
        item_image_log,
        user_keywords,
        user_image_log,
        mmgcn.popularity_test(parts),
        bool(split["simulated"].any()),
        machine_description(params.get("num_threads")),
        params,
    )
    return report, recommendation_report.markdown(report), recommendation_report.chart(report)
