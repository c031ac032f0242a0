"""Per-user history/target split (paper §4.1.1: history of n = 10 items, the next item is the target)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def split_histories(
    interactions: pd.DataFrame,
    n_history: int,
    min_history: int,
    carry_columns: list[str] | tuple[str, ...] = (),
    order_columns: list[str] | tuple[str, ...] = ("timestamp",),
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Chronological split: the last interaction is the target, up to `n_history` before it the history.

    `interactions` must already hold only the interactions that count (e.g. positive ratings).
    Users with fewer than `min_history` history items are left out and counted, never silently.
    `carry_columns` are kept per history position (`history_<col>`) and for the target (`target_<col>`).
    Returns the table (user_id, history, target, ...) and the counts.
    """
    if n_history < 1 or min_history < 1 or min_history > n_history:
        raise ValueError(f"need 1 <= min_history ({min_history}) <= n_history ({n_history})")
    ordered = interactions.sort_values(["user_id", *order_columns], kind="stable")
    rows = []
    too_short = 0
    for user_id, group in ordered.groupby("user_id", sort=True):
        if len(group) < min_history + 1:
            too_short += 1
            continue
        past = group.iloc[:-1].tail(n_history)
        last = group.iloc[-1]
        row = {"user_id": user_id, "history": past["item_id"].tolist(), "target": last["item_id"]}
        for col in carry_columns:
            row[f"history_{col}"] = past[col].tolist()
            row[f"target_{col}"] = last[col]
        rows.append(row)
    columns = ["user_id", "history", "target"]
    columns += [f"{p}_{c}" for c in carry_columns for p in ("history", "target")]
    table = pd.DataFrame(rows, columns=columns)
    counts = {
        "users_with_interactions": int(interactions["user_id"].nunique()),
        "users_split": len(table),
        "users_filtered_too_short": too_short,
    }
    return table, counts


SPLITS = ("train", "evaluation")


def split_users(user_ids, n_evaluation: int, seed: int) -> pd.DataFrame:
    """One seeded user split: `n_evaluation` users for evaluation, all others for training.

    The draw depends only on the sorted user ids and the seed, so the same data and seed give the
    same split in every run. Returns user_id, split ("train" | "evaluation"), seed.
    """
    users = sorted(dict.fromkeys(str(u) for u in user_ids))
    if not 0 < n_evaluation < len(users):
        raise ValueError(
            f"n_evaluation={n_evaluation} must leave at least one user for each split "
            f"({len(users)} users)"
        )
    rng = np.random.default_rng(seed)
    evaluation = set(rng.choice(users, size=n_evaluation, replace=False).tolist())
    return pd.DataFrame(
        {
            "user_id": users,
            "split": ["evaluation" if u in evaluation else "train" for u in users],
            "seed": seed,
        }
    )
