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
import os
import platform
import time
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from scipy import stats  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from ...components.features import MobileNetFeatures  # noqa: E402
from ...components.images import load_image, to_array, to_pil  # noqa: E402
from ...components.llm import GenerationSettings  # noqa: E402
from ...components.mmgcn import (  # noqa: E402
    MMGCN,
    Interactions,
    MMGCNConfig,
    evaluate_test,
    standardize,
    train_mmgcn,
)
from ...components.prompts import (  # noqa: E402
    field_text,
    format_behavior,
    merge_keywords,
    most_frequent,
    parse_keywords,
    render,
)
from ...components.ranking import evaluate_ranking, popularity_scores  # noqa: E402

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
METRIC_COLUMNS = [f"{m}@{k}" for k in (10, 20) for m in ("precision", "recall", "ndcg")]
SIMULATED_LABEL = "SIMULATED users"


# -- interactions -----------------------------------------------------------------------------


def _k_core(pairs: pd.DataFrame, user_min: int, item_min: int) -> tuple[pd.DataFrame, int]:
    """Drop users and items with fewer positives than the minimum until none is left; (pairs, rounds)."""
    rounds = 0
    while True:
        rounds += 1
        before = len(pairs)
        pairs = pairs[pairs.groupby("item_id")["item_id"].transform("size") >= item_min]
        pairs = pairs[pairs.groupby("user_id")["user_id"].transform("size") >= user_min]
        if len(pairs) == before:
            return pairs, rounds


def split_recommendation_interactions(
    interactions: pd.DataFrame, params: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Implicit feedback -> k-core -> per-user chronological train / validation / test split.

    Returns the split (user_id, item_id, timestamp, position, split, simulated) and its counts.
    A user's last `test` share (at least one) is test, the share before it validation (at least
    one), the rest train; users with fewer than three positives stay whole in train (counted).
    """
    p = params["interactions"]
    column = p.get("positive_column")
    if column:
        if column not in interactions.columns:
            raise ValueError(
                f"interactions: no column {column!r} (recommendation.interactions.positive_column); "
                f"columns are {list(interactions.columns)}"
            )
        positives = interactions[interactions[column].astype(bool)]
    else:
        positives = interactions
    counts: dict[str, Any] = {
        "interactions": len(interactions),
        "positives": len(positives),
        "positive_rule": f"{column} is true" if column else "every interaction",
        "users_with_positives": int(positives["user_id"].nunique()),
        "items_with_positives": int(positives["item_id"].nunique()),
    }
    order = list(p["order_columns"])
    positives = positives.sort_values(["user_id", *order], kind="stable")
    deduplicated = positives.drop_duplicates(["user_id", "item_id"], keep="first")
    counts["repeated_pairs_dropped"] = len(positives) - len(deduplicated)
    if p.get("max_users"):
        keep = sorted(deduplicated["user_id"].unique())[: int(p["max_users"])]
        counts["users_beyond_max_users"] = int(deduplicated["user_id"].nunique()) - len(keep)
        deduplicated = deduplicated[deduplicated["user_id"].isin(keep)]
    core, rounds = _k_core(deduplicated, int(p["k_core"]["user_min"]), int(p["k_core"]["item_min"]))
    counts.update(
        k_core={**p["k_core"], "rounds": rounds},
        positives_after_k_core=len(core),
        users=int(core["user_id"].nunique()),
        items=int(core["item_id"].nunique()),
    )
    if core.empty:
        raise ValueError(f"recommendation: the k-core filter {p['k_core']} left no interaction")
    core = core.copy()
    core["position"] = core.groupby("user_id").cumcount()
    n = core.groupby("user_id")["item_id"].transform("size")
    n_test = np.maximum(1, np.round(n * float(p["split"]["test"]))).astype(int)
    n_val = np.maximum(1, np.round(n * float(p["split"]["validation"]))).astype(int)
    short = n < 3
    split = np.where(
        core["position"] >= n - n_test,
        "test",
        np.where(core["position"] >= n - n_test - n_val, "validation", "train"),
    )
    core["split"] = np.where(short, "train", split)
    no_train = set(core["user_id"]) - set(core.loc[core["split"] == "train", "user_id"])
    if no_train:
        raise ValueError(
            f"recommendation.interactions.split {p['split']}: users {sorted(no_train)[:5]} keep no "
            "training interaction; lower the validation / test shares"
        )
    core["simulated"] = core["simulated"].astype(bool) if "simulated" in core else False
    counts["users_only_in_train"] = int(core.loc[short, "user_id"].nunique())
    counts.update({f"{s}_interactions": int((core["split"] == s).sum()) for s in SPLITS})
    counts["simulated"] = bool(core["simulated"].any())
    logger.info("recommendation split: %s", counts)
    columns = ["user_id", "item_id", "timestamp", "position", "split", "simulated"]
    return core[columns].reset_index(drop=True), counts


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
    split: pd.DataFrame, items: pd.DataFrame, llm, params: dict[str, Any]
) -> pd.DataFrame:
    """One LLM prompt per user on their last n TRAINING positives -> preference keywords k^p.

    Returns user_id, source_items (the n items), prompt, raw_answer, finished, keywords, fallback,
    llm. Users whose answer parses to nothing get the most frequent `fallback_columns` values of
    the same items (flagged, counted).
    """
    p = params["user_images"]
    # The fallback reads what the items have (POG items have no class): the configured columns
    # that exist, else the item titles.
    fallback_columns = [c for c in p["fallback_columns"] if c in items.columns] or ["title"]
    if fallback_columns != list(p["fallback_columns"]):
        logger.info(
            "fallback columns %s not all in items (%s): using %s",
            p["fallback_columns"],
            list(items.columns),
            fallback_columns,
        )
    by_id = items.drop_duplicates("item_id").set_index("item_id")
    sources = _training_items(split).map(lambda s: s[-int(p["n_history"]) :])
    texts = _item_texts(items, p["item_text"], (i for s in sources for i in s))
    prompts = [
        render(
            p["prompt_template"], history=format_behavior([texts[i] for i in s], p["history_line"])
        )
        for s in sources
    ]
    settings = GenerationSettings.from_params(p["generation"])
    start = time.perf_counter()
    answers = llm.generate(
        prompts, settings, answer_prefix=p["answer_prefix"], desc="user keywords"
    )
    finished = list(llm.last_finished)
    seconds = time.perf_counter() - start
    records = []
    for user, source, prompt, answer, done in zip(
        sources.index, sources, prompts, answers, finished, strict=True
    ):
        parsed = parse_keywords(
            answer,
            max_words=int(p["max_keyword_words"]),
            labels=[p["prompt_template"]],
            complete=done,
        )
        keywords = merge_keywords([parsed], int(p["k_p"]), int(p["k_p"]))
        fallback = not keywords
        if fallback:
            values = [
                str(v).lower()
                for i in source
                for c in fallback_columns
                for v in np.atleast_1d(by_id.loc[i, c])
                if v == v
            ]
            keywords = most_frequent(values, int(p["k_p"]))
        records.append(
            {
                "user_id": user,
                "source_items": list(source),
                "prompt": prompt,
                "raw_answer": answer,
                "finished": bool(done),
                "keywords": keywords,
                "fallback": fallback,
                "llm": llm.name,
            }
        )
    table = pd.DataFrame(records)
    logger.info(
        "user keywords: %d users in %.1f s (%.3f s/user, %s, batch %d, %d new tokens max); %d fell "
        "back to %s",
        len(table),
        seconds,
        seconds / max(len(table), 1),
        llm.name,
        settings.batch_size,
        settings.max_new_tokens,
        int(table["fallback"].sum()),
        p["fallback_columns"],
    )
    return table


def _generate_images(
    generator, texts: list[str], params: dict[str, Any], what: str
) -> list[Image.Image]:
    """One image per text, its text as the only condition (weight 1), in batches of `batch_size`.

    Every image starts from the same seeded noise, so images differ by their condition only and do
    not depend on the batching."""
    images: list[Image.Image] = []
    batch, start = int(params["batch_size"]), time.perf_counter()
    for begin in range(0, len(texts), batch):
        conditions = generator.encode_text(texts[begin : begin + batch]).split()
        out = generator.generate(
            [[c] for c in conditions],
            [[1.0]] * len(conditions),
            mode=params["mode"],
            seed=int(params["seed"]),
            steps=int(params["steps"]),
            guidance_scale=float(params["guidance_scale"]),
            sampler=params["sampler"],
        )
        images += to_pil(out)
        logger.info(
            "%s: %d/%d images (%.3f s/image, %d %s steps)",
            what,
            len(images),
            len(texts),
            (time.perf_counter() - start) / len(images),
            int(params["steps"]),
            params["sampler"],
        )
    return images


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
    user_keywords: pd.DataFrame, generator, params: dict[str, Any]
) -> tuple[dict[str, Image.Image], pd.DataFrame]:
    """The Generated-user image per user: the generator on ", ".join(k^p) alone, no target (§4.5).

    Returns {user_id: image} and the log (key = user_id, condition_text, generator, settings)."""
    texts = [", ".join(k) for k in user_keywords["keywords"]]
    keys = user_keywords["user_id"].astype(str).tolist()
    images = _generate_images(generator, texts, params["image_generation"], "user images")
    return dict(zip(keys, images, strict=True)), _image_log(
        keys, texts, generator, params["image_generation"]
    )


def generate_recommendation_item_images(
    split: pd.DataFrame,
    items: pd.DataFrame,
    image_index: pd.DataFrame,
    generator,
    params: dict[str, Any],
) -> tuple[dict[str, Image.Image], pd.DataFrame]:
    """Target-only images, from the item's metadata (`item_images.prompt_template`), for the
    experiment's items that have no image in the image index (movies without posters).

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
    images = _generate_images(generator, prompts, params["image_generation"], "item images")
    return dict(zip(needed, images, strict=True)), _image_log(
        needed, prompts, generator, params["image_generation"]
    )


# -- features ------------------------------------------------------------------------------------


def _extractor(params: dict[str, Any]) -> MobileNetFeatures:
    return MobileNetFeatures(input_size=int(params["features"]["input_size"]))


def _pooled(
    extractor: MobileNetFeatures, images: list[Image.Image], params: dict[str, Any]
) -> np.ndarray:
    size = int(params["features"]["image_size"])
    pixels = torch.from_numpy(to_array(images, size))
    return extractor.pooled(pixels, int(params["features"]["batch_size"])).numpy()


def extract_recommendation_item_features(
    split: pd.DataFrame,
    image_index: pd.DataFrame,
    item_images: dict[str, Image.Image],
    params: dict[str, Any],
) -> pd.DataFrame:
    """MobileNetV2 pooled features of every experiment item's image: its own (image index) or the
    generated one. Returns item_id, image_source ("item image" | "generated"), features (1280)."""
    index = image_index.assign(item_id=image_index["item_id"].astype(str)).set_index("item_id")
    rows, images = [], []
    for item in sorted(split["item_id"].unique()):
        if item in index.index:
            entry = index.loc[item]
            images.append(load_image(entry["image_path"], int(entry["image_offset"])))
            rows.append((item, "item image"))
        elif item in item_images:
            images.append(item_images[item])
            rows.append((item, "generated"))
        else:
            raise ValueError(
                f"item {item!r}: no image in the image index and no generated image "
                "(recommendation_item_images); rerun generate_recommendation_item_images"
            )
    start = time.perf_counter()
    features = _pooled(_extractor(params), images, params)
    table = pd.DataFrame(rows, columns=["item_id", "image_source"])
    table["features"] = list(features.astype(np.float32))
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
    user's PMG image (same extractor). Returns user_id, setting, features.

    Refuses images made from other items than this split's last n training items (stale images).
    """
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
    generated = _pooled(_extractor(params), [user_images[u] for u in train.index], params)
    users = list(train.index)
    return pd.DataFrame(
        {
            "user_id": users * 2,
            "setting": ["averaged_user"] * len(users) + ["generated_user"] * len(users),
            "features": [a.astype(np.float32) for a in averaged]
            + list(generated.astype(np.float32)),
        }
    )


# -- the experiment ------------------------------------------------------------------------------


def _indexed(split: pd.DataFrame) -> tuple[dict[str, Interactions], list[str], list[str]]:
    users = sorted(split["user_id"].unique())
    items = sorted(split["item_id"].unique())
    u = split["user_id"].map({x: k for k, x in enumerate(users)}).to_numpy()
    i = split["item_id"].map({x: k for k, x in enumerate(items)}).to_numpy()
    parts = {
        s: Interactions(u[split["split"] == s], i[split["split"] == s], len(users), len(items))
        for s in SPLITS
    }
    return parts, users, items


def _feature_matrix(table: pd.DataFrame, keys: list[str], key: str, what: str) -> torch.Tensor:
    by_key = table.set_index(key)["features"]
    missing = [k for k in keys if k not in by_key.index]
    if missing:
        raise ValueError(f"{what}: no features for {key} {missing[:5]} ({len(missing)} in all)")
    return torch.from_numpy(np.stack([np.asarray(by_key[k], dtype=np.float32) for k in keys]))


def run_recommendation_experiment(
    split: pd.DataFrame,
    item_features: pd.DataFrame,
    user_features: pd.DataFrame,
    params: dict[str, Any],
) -> pd.DataFrame:
    """Every setting of Table 3 under every seed: MMGCN trained with early stopping on validation,
    tested with training and validation items masked. Returns one row per (setting, seed) with the
    test metrics, the best validation metrics (`val_` prefix), epochs and seconds."""
    parts, users, items = _indexed(split)
    config = MMGCNConfig.from_params(params["model"])
    visual = _feature_matrix(item_features, items, "item_id", "recommendation_item_features")
    runs = [(name, int(seed)) for name in params["settings"] for seed in params["seeds"]]
    simulated = bool(split["simulated"].any())  # SIMULATED users (costume): every row says so
    previous = torch.get_num_threads()
    # The thread count changes float reductions (the SVD of `standardize` too): fixed for the
    # whole node, so the same data and seeds give the same results.
    if params.get("num_threads"):
        torch.set_num_threads(int(params["num_threads"]))
    rows = []
    try:
        features: dict[str, tuple] = {}  # per setting: (item features, user features or None)
        for name, setting in params["settings"].items():
            user_visual = None
            if setting.get("user_features"):
                table = user_features[user_features["setting"] == setting["user_features"]]
                what = f"recommendation_user_features ({setting['user_features']})"
                user_visual = _feature_matrix(table, users, "user_id", what)
            components = params["features"].get("components")
            features[name] = standardize(visual, user_visual, components)
        for name, seed in tqdm(runs, desc="MMGCN runs", unit="run"):
            item_x, user_x = features[name]
            torch.manual_seed(seed)
            model = MMGCN(
                len(users),
                len(items),
                list(params["settings"][name]["modalities"]),
                {"visual": item_x},
                config,
                None if user_x is None else {"visual": user_x},
            )
            result = train_mmgcn(model, parts["train"], parts["validation"], seed, progress=False)
            test = evaluate_test(result.model, parts["train"], parts["validation"], parts["test"])
            rows.append(
                {
                    "setting": name,
                    "seed": seed,
                    **{m: test[m] for m in METRIC_COLUMNS},
                    **{f"val_{m}": result.validation[m] for m in METRIC_COLUMNS},
                    "test_users": test["users"],
                    "ranked_known": test["ranked_known"],
                    "best_epoch": result.best_epoch,
                    "epochs": result.epochs,
                    "seconds": round(result.seconds, 2),
                    "simulated_users": simulated,
                }
            )
            logger.info(
                "%s seed %s: test recall@20 %.4f, ndcg@20 %.4f (%d epochs, %.1f s)",
                name,
                seed,
                test["recall@20"],
                test["ndcg@20"],
                result.epochs,
                result.seconds,
            )
    finally:
        torch.set_num_threads(previous)
    return pd.DataFrame(rows)


# -- the report ----------------------------------------------------------------------------------


def _mean_std(values: pd.Series) -> dict[str, float]:
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
    }


def _paired(results: pd.DataFrame, a: str, b: str, confidence: float) -> dict[str, Any]:
    """a - b per seed for every metric, with the t interval of the mean difference over seeds."""
    pivot = results.pivot(index="seed", columns="setting")
    out: dict[str, Any] = {}
    for metric in METRIC_COLUMNS:
        x, y = pivot[(metric, a)], pivot[(metric, b)]
        diff = (x - y).to_numpy()
        entry = {"per_seed": {str(s): float(d) for s, d in zip(pivot.index, diff, strict=True)}}
        entry["mean"] = float(diff.mean())
        if len(diff) > 1 and np.ptp(diff) > 0:
            ci = stats.ttest_rel(x, y).confidence_interval(confidence)
            entry["interval"] = [float(ci.low), float(ci.high)]
        else:
            entry["interval"] = [float(diff.mean()), float(diff.mean())]
        out[metric] = entry
    return out


def _environment(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "torch_threads": int(params.get("num_threads") or torch.get_num_threads()),
    }


def report_recommendation(
    results: pd.DataFrame,
    split: pd.DataFrame,
    split_stats: dict[str, Any],
    item_features: pd.DataFrame,
    item_image_log: pd.DataFrame,
    user_keywords: pd.DataFrame,
    user_image_log: pd.DataFrame,
    params: dict[str, Any],
) -> tuple[dict[str, Any], str, plt.Figure]:
    """Table 3's shape: mean ± std over seeds per setting and metric, a popularity reference, the
    paired Generated-user - Averaged-user difference per seed with its interval; JSON, Markdown,
    bar chart. Every number says what produced it."""
    settings = params["settings"]
    simulated = bool(split["simulated"].any())
    sources = item_features["image_source"].value_counts().to_dict()
    parts, _, _ = _indexed(split)
    known = Interactions(
        np.concatenate([parts["train"].users, parts["validation"].users]),
        np.concatenate([parts["train"].items, parts["validation"].items]),
        parts["train"].n_users,
        parts["train"].n_items,
    ).matrix()
    pop = popularity_scores(parts["train"].matrix())
    popularity = evaluate_ranking(
        lambda u: pop.expand(len(u), -1), parts["train"].n_users, parts["test"].matrix(), known
    )
    table = {
        name: {
            "label": settings[name]["label"],
            **{m: _mean_std(group[m]) for m in METRIC_COLUMNS},
            "seeds": sorted(int(s) for s in group["seed"]),
            "mean_epochs": float(group["epochs"].mean()),
            "mean_seconds": float(group["seconds"].mean()),
        }
        for name, group in results.groupby("setting", sort=False)
    }
    a, b = params["report"]["paired"]
    confidence = float(params["report"]["confidence"])
    generated_items = int(sources.get("generated", 0))
    labels = []
    if simulated:
        labels.append(f"{SIMULATED_LABEL}: simulated click histories, real item images")
    if generated_items:
        labels.append(
            f"item features of {generated_items} of {len(item_features)} items come from GENERATED "
            "item images (no poster in the image index)"
        )
    gen = params["image_generation"]
    report = {
        "what": "MMGCN full-ranking test metrics per setting (paper §4.5, Table 3 shape): mean and "
        "std over seeds; training and validation items masked; early stopping on validation "
        f"{params['model'].get('early_stopping_metric', 'recall@20')}",
        "labels": labels,
        "simulated_users": simulated,
        "data": {
            **split_stats,
            "test_users": int(results["test_users"].iloc[0]) if len(results) else 0,
        },
        "item_features": {
            "extractor": f"ImageNet MobileNetV2 pooled features (1280), images at "
            f"{params['features']['image_size']} px resized to {params['features']['input_size']} px",
            "image_sources": {k: int(v) for k, v in sources.items()},
            "generated_with": _describe_generation(item_image_log, gen)
            if generated_items
            else None,
        },
        "user_images": {
            "what": "PMG user-only images: preference keywords from the user's last "
            f"{params['user_images']['n_history']} TRAINING positives, preference condition only, "
            "no target",
            "llm": str(user_keywords["llm"].iloc[0]) if len(user_keywords) else None,
            "users": len(user_keywords),
            "keyword_fallbacks": int(user_keywords["fallback"].sum()),
            "generated_with": _describe_generation(user_image_log, gen),
        },
        "model": {"name": "MMGCN (own torch_geometric implementation)", **params["model"]},
        "environment": _environment(params),
        "seeds": [int(s) for s in params["seeds"]],
        "settings": table,
        "popularity_reference": {m: float(popularity[m]) for m in METRIC_COLUMNS},
        "paired_difference": {
            "what": f"{settings[a]['label']} - {settings[b]['label']} per seed (same seed = same "
            f"initialisation and negatives), mean and {confidence:.0%} t interval over seeds",
            "metrics": _paired(results, a, b, confidence) if {a, b} <= set(table) else None,
        },
        "results": results.to_dict(orient="records"),
    }
    return report, _markdown(report, settings, a, b), _chart(report, settings)


def _describe_generation(log: pd.DataFrame, params: dict[str, Any]) -> dict[str, Any]:
    generator = str(log["generator"].iloc[0]) if len(log) else None
    return {
        "generator": generator,
        "images": len(log),
        **{k: params[k] for k in ("mode", "sampler", "steps", "guidance_scale", "seed")},
    }


def _markdown(report: dict[str, Any], settings: dict[str, Any], a: str, b: str) -> str:
    data, env = report["data"], report["environment"]
    lines = ["# MMGCN with image features (paper §4.5, Table 3 shape)", ""]
    lines += [f"**{label}**" for label in report["labels"]]
    lines += [
        "",
        f"Data: {data['users']} users, {data['items']} items, {data['positives_after_k_core']} "
        f"positives after the k-core filter {data['k_core']} (positives: {data['positive_rule']}); "
        f"per-user chronological split train / validation / test = {data['train_interactions']} / "
        f"{data['validation_interactions']} / {data['test_interactions']}; {data['test_users']} test users.",
        f"Model: {report['model']['name']}, dim {report['model'].get('dim')}, "
        f"{report['model'].get('n_layers')} layers, {report['model'].get('aggregation')} aggregation, "
        f"{report['model'].get('combination')} combination, {report['model'].get('fusion')} fusion. "
        f"Seeds: {report['seeds']}.",
        f"Item features: {report['item_features']['extractor']}; sources "
        f"{report['item_features']['image_sources']}.",
        f"User images: {report['user_images']['what']}; LLM {report['user_images']['llm']}, "
        f"generator {report['user_images']['generated_with']['generator']} "
        f"({report['user_images']['generated_with']['steps']} {report['user_images']['generated_with']['sampler']} "
        f"steps); {report['user_images']['keyword_fallbacks']} of {report['user_images']['users']} "
        "users fell back to their training items' metadata.",
        f"Environment: Python {env['python']}, torch {env['torch']}, {env['platform']}, "
        f"{env['cpu']}, {env['torch_threads']} torch threads.",
        "",
        "Test metrics, mean ± std over seeds:",
        "",
        "| setting | " + " | ".join(METRIC_COLUMNS) + " | epochs |",
        "|---|" + "---|" * (len(METRIC_COLUMNS) + 1),
    ]
    for entry in report["settings"].values():
        cells = [f"{entry[m]['mean']:.4f} ± {entry[m]['std']:.4f}" for m in METRIC_COLUMNS]
        lines.append(
            f"| {entry['label']} | " + " | ".join(cells) + f" | {entry['mean_epochs']:.0f} |"
        )
    pop = report["popularity_reference"]
    lines.append(
        "| (popularity, reference) | "
        + " | ".join(f"{pop[m]:.4f}" for m in METRIC_COLUMNS)
        + " | |"
    )
    paired = report["paired_difference"]
    if paired["metrics"]:
        lines += [
            "",
            f"Paired difference {paired['what']}:",
            "",
            "| metric | mean | interval | per seed |",
            "|---|---|---|---|",
        ]
        for metric, entry in paired["metrics"].items():
            per_seed = ", ".join(f"{d:+.4f}" for d in entry["per_seed"].values())
            low, high = entry["interval"]
            lines.append(
                f"| {metric} | {entry['mean']:+.4f} | [{low:+.4f}, {high:+.4f}] | {per_seed} |"
            )
    return "\n".join(lines) + "\n"


def _chart(report: dict[str, Any], settings: dict[str, Any]) -> plt.Figure:
    names = list(report["settings"])
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(METRIC_COLUMNS))
    for k, name in enumerate(names):
        entry = report["settings"][name]
        ax.bar(
            x + k * width,
            [entry[m]["mean"] for m in METRIC_COLUMNS],
            width,
            yerr=[entry[m]["std"] for m in METRIC_COLUMNS],
            capsize=2,
            label=entry["label"],
        )
    pop = report["popularity_reference"]
    ax.scatter(
        x + 0.4 - width / 2,
        [pop[m] for m in METRIC_COLUMNS],
        marker="_",
        s=400,
        color="k",
        label="popularity",
    )
    ax.set_xticks(x + 0.4 - width / 2)
    ax.set_xticklabels(METRIC_COLUMNS)
    ax.legend(fontsize=8)
    data = report["data"]
    model, env = report["model"], report["environment"]
    title = (
        f"MMGCN (dim {model.get('dim')}, {model.get('n_layers')} layers) test metrics, mean ± std "
        f"over seeds {report['seeds']}; {data['users']} users, {data['items']} items; torch "
        f"{env['torch']}, {env['cpu']}, {env['torch_threads']} threads"
    )
    if report["labels"]:
        title += "\n" + "; ".join(report["labels"])
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def summarize_recommendation(report: dict[str, Any]) -> dict[str, Any]:
    """Table 3's numbers for MLflow from the report: per setting and metric the mean and std over
    seeds, the popularity reference, and the paired difference's mean per metric."""
    paired = report["paired_difference"]["metrics"] or {}
    return {
        "settings": {
            name: {m: dict(entry[m]) for m in METRIC_COLUMNS}
            for name, entry in report["settings"].items()
        },
        "popularity_reference": dict(report["popularity_reference"]),
        "paired_difference": {m: entry["mean"] for m, entry in paired.items()},
    }
