"""Ingestion nodes: raw scene source -> validated tables -> per-user history/target split."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from ...components.data import validation as v
from ...components.data.defects import IngestionError
from ...components.data.sources import (
    SceneTables,
    chitchat,
    fashion_mnist,
    folder,
    movielens,
    pog,
)
from ...components.data.splits import protocol_defects, split_histories, split_users

logger = logging.getLogger(__name__)


def _tables_from_source(raw: dict[str, Any], params: dict[str, Any]) -> SceneTables:
    kind = raw["kind"]
    if kind == "movielens":
        return movielens.build_tables(raw["ratings"], raw["posters"], params, raw["source"])
    if kind == "chitchat":
        return chitchat.build_tables(raw["messages"], params, raw["source"])
    if kind == "fashion_mnist":
        return fashion_mnist.build_tables(
            raw["images"], raw["labels"], raw["images_path"], params, raw["source"]
        )
    if kind == "pog":
        return pog.build_tables(raw["files"], raw["images"], raw["folder"])
    if kind == "folder":
        return folder.build_tables(raw["folder"], params, raw["source"])
    raise ValueError(
        f"unknown raw source kind {kind!r}; expected movielens, chitchat, fashion_mnist, pog, "
        "folder"
    )


def build_scene_tables(
    raw_source: dict[str, Any], params: dict[str, Any]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Raw source -> validated items, interactions, image_index, users and the counts read/filtered."""
    tables = _tables_from_source(raw_source, params)
    src = tables.source
    # Every row and every indexed image is checked; all defects come back as one IngestionError.
    items, interactions, image_index, users = v.validate_scene(tables)
    note = f" [{fashion_mnist.SIMULATED_NOTE}]" if tables.simulated else ""
    logger.info("%s%s: %s", src, note, ", ".join(f"{k}={n:,}" for k, n in tables.counts.items()))
    report = {"source": src, "simulated": tables.simulated, "counts": tables.counts}
    if tables.simulated:
        report["note"] = fashion_mnist.SIMULATED_NOTE
    return items, interactions, image_index, users, report


def split_user_histories(
    interactions: pd.DataFrame, build_report: dict[str, Any], params: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per user: the last qualifying interaction is the target, up to n before it the history.

    Returns the histories table and the scene's ingestion report (build counts + split counts).
    """
    split = params["split"]
    qualifying = interactions
    if split.get("filter_column"):
        column = split["filter_column"]
        qualifying = interactions[interactions[column].astype(bool)]
        logger.info(
            "%s: %d of %d interactions have %s=True and count for the split (%d filtered out)",
            build_report["source"],
            len(qualifying),
            len(interactions),
            column,
            len(interactions) - len(qualifying),
        )
    histories, counts = split_histories(
        qualifying,
        n_history=int(split["n_history"]),
        min_history=int(split["min_history"]),
        carry_columns=split.get("carry_columns", []),
        order_columns=split.get("order_columns", ["timestamp"]),
    )
    if split.get("max_users"):
        counts["users_beyond_max_users"] = max(0, len(histories) - int(split["max_users"]))
        histories = histories.head(int(split["max_users"])).reset_index(drop=True)
    histories["simulated"] = bool(build_report["simulated"])
    histories = v.validate(histories, v.HISTORIES, build_report["source"])
    logger.info(
        "%s: %s", build_report["source"], ", ".join(f"{k}={n:,}" for k, n in counts.items())
    )
    report = {**build_report, "split": {**counts, "n_history": int(split["n_history"])}}
    return histories, report


def split_users_for_protocol(histories: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
    """The scene's one user split (DESIGN.md §5): user_id, split (train | evaluation), seed.

    Made once here and read by every later pipeline: only `train` users feed anything that learns,
    only `evaluation` users are generated for and reported.
    """
    defects = protocol_defects(len(histories), int(params["n_evaluation"]))
    if defects:
        raise IngestionError("the users the history split kept (histories)", defects)
    split = split_users(histories["user_id"], int(params["n_evaluation"]), int(params["seed"]))
    counts = split["split"].value_counts().to_dict()
    logger.info("user split (seed %s): %s", params["seed"], counts)
    return split
