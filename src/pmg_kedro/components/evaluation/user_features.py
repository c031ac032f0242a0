"""Table 3's user feature sets (paper §4.5, its controls and positive controls): the visual
features each user setting starts MMGCN's user preference at (`mmgcn` module docstring).

Everything but Oracle-user comes from the user's TRAINING interactions of the split. Oracle-user is
the deliberate LEAK of issue 29: the mean features of the user's own held-out TEST items, to tell
whether MMGCN can reward any user image at all; the reports label it and it never judges PMG.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from PIL import Image

from pmg_kedro.components.data.splits import derangement
from pmg_kedro.components.evaluation.features import generated_item_features


def items_by_user(split: pd.DataFrame, part: str) -> pd.Series:
    """user_id -> the user's item ids of `part` (train | validation | test), oldest first."""
    rows = split[split["split"] == part].sort_values(["user_id", "position"])
    return rows.groupby("user_id")["item_id"].agg(list)


def user_feature_sets(
    split: pd.DataFrame,
    item_features: pd.DataFrame,
    user_keywords: pd.DataFrame,
    images: Mapping[str, Mapping[str, Image.Image]],
    n: int,
    shuffle_seed: int,
    pooled: Callable[[list[Image.Image]], np.ndarray],
) -> pd.DataFrame:
    """Per user of the split, the features of every user setting:

    - averaged_user: mean of the user's training items' features;
    - generated_user: `pooled` features of the user's PMG image (`images["generated_user"]`);
    - shuffled_user: generated_user's features of ANOTHER user (a seeded derangement: the placebo);
    - generated_items_user: mean features of the GENERATED images of the user's last n training
      items (`images["history_items"]`: the image-domain control);
    - oracle_keywords_user: `pooled` features of the user's image from the ORACLE keywords
      (`images["oracle_keywords_user"]`; none for real users, then no rows: not applicable);
    - oracle_user, the LEAK: mean features of the user's own held-out TEST items (a user without
      one is never ranked and keeps averaged_user's).

    `item_features`: item_id, image_source, features (the experiment's); `pooled`: images -> (n, d)
    with the experiment's extractor. Refuses keywords made from other items than this split's last
    n training items (stale) and users without an image. Returns user_id, setting, features."""
    train = items_by_user(split, "train")
    check_user_images(train, n, user_keywords, images)
    features = item_features.set_index("item_id")["features"]
    users = list(train.index)
    generated = pooled([images["generated_user"][u] for u in users])
    history = generated_item_features(
        train.map(lambda s: s[-n:]), item_features, images["history_items"], pooled
    )
    test = items_by_user(split, "test")
    leaked = pd.Series([test.get(u, train[u]) for u in users], index=users)
    columns = {
        "averaged_user": mean_features(train, features),
        "generated_user": list(generated),
        "shuffled_user": list(generated[derangement(len(users), shuffle_seed)]),
        "generated_items_user": mean_features(train.map(lambda s: s[-n:]), history),
        "oracle_user": mean_features(leaked, features),
    }
    if images["oracle_keywords_user"]:
        oracle = pooled([images["oracle_keywords_user"][u] for u in users])
        columns["oracle_keywords_user"] = list(oracle)
    return pd.DataFrame(
        {
            "user_id": users * len(columns),
            "setting": [name for name in columns for _ in users],
            "features": [f for features in columns.values() for f in features],
        }
    )


def mean_features(sources: pd.Series, features: Mapping) -> list[np.ndarray]:
    """Per user (`sources`: user_id -> item ids), the mean of its items' `features` (float32)."""
    return [np.mean(np.stack([features[i] for i in s]), axis=0).astype(np.float32) for s in sources]


def check_user_images(
    train: pd.Series,
    n: int,
    user_keywords: pd.DataFrame,
    images: Mapping[str, Mapping[str, Image.Image]],
) -> None:
    """Refuses keywords made from other items than the split's last n training items (stale),
    users without a Generated-user image, and users without an ORACLE-keyword image where there
    are such images."""
    sources = user_keywords.set_index("user_id")["source_items"].map(list)
    stale = [u for u in train.index if u not in sources.index or sources[u] != train[u][-n:]]
    if stale:
        raise ValueError(
            f"recommendation_user_keywords: {len(stale)} users' keywords were not made from this "
            f"split's last {n} training items (e.g. {stale[:5]}); rerun the image nodes "
            "(tag recommendation_images)"
        )
    for name, dataset in (
        ("generated_user", "recommendation_user_images"),
        ("oracle_keywords_user", "recommendation_oracle_user_images"),
    ):
        missing = [u for u in train.index if u not in images[name]]
        if missing and (images[name] or name == "generated_user"):
            raise ValueError(f"{dataset}: no image for users {missing[:5]} ({len(missing)})")
