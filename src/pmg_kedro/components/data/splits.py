"""Per-user history/target split (paper §4.1.1: history of n = 10 items, the next item is the target),
the protocol's user split, the recommendation split of Table 3 (§4.5) and the seeded derangement
of its Shuffled-user placebo."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pmg_kedro.components.data.defects import Defect


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
    # Whole-table operations, no loop over users: 100,000 users split in seconds.
    by_user = ordered.groupby("user_id", sort=True)
    ordered = ordered[by_user["user_id"].transform("size").to_numpy() >= min_history + 1]
    from_end = ordered.groupby("user_id", sort=True).cumcount(ascending=False).to_numpy()
    last = ordered[from_end == 0]  # one row per user, in user order
    past = ordered[(from_end >= 1) & (from_end <= n_history)]  # at least one row per user
    starts = np.flatnonzero(
        np.r_[True, past["user_id"].to_numpy()[1:] != past["user_id"].to_numpy()[:-1]]
    )
    bounds = list(zip(starts.tolist(), [*starts[1:].tolist(), len(past)], strict=True))

    def per_user(values: pd.Series) -> list[list]:
        values = values.tolist()
        return [values[a:b] for a, b in bounds]

    columns = {
        "user_id": last["user_id"].tolist(),
        "history": per_user(past["item_id"]),
        "target": last["item_id"].tolist(),
    }
    for col in carry_columns:
        columns[f"history_{col}"] = per_user(past[col])
        columns[f"target_{col}"] = last[col].tolist()
    # from Python lists, so each column's dtype is inferred as from the rows' values (no row: object)
    table = pd.DataFrame(columns if len(last) else [], columns=list(columns))
    counts = {
        "users_with_interactions": int(interactions["user_id"].nunique()),
        "users_split": len(table),
        "users_filtered_too_short": int(by_user.ngroups - len(table)),
    }
    return table, counts


SPLITS = ("train", "evaluation")


def protocol_defects(
    n_users: int, n_evaluation: int, min_interactions: int | None = None
) -> list[Defect]:
    """A defect when `n_users` users (those the history split kept) cannot make the protocol's
    split: `n_evaluation` evaluation users and at least one train user."""
    if 0 < n_evaluation < n_users:
        return []
    who = f" with at least {min_interactions} qualifying interactions" if min_interactions else ""
    return [
        Defect(
            "interactions",
            "",
            "user_id",
            f"more than {n_evaluation} users{who} (protocol.n_evaluation = {n_evaluation} "
            "evaluation users and at least one train user)",
            f"{n_users} such users",
        )
    ]


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


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of range(n) without a fixed point (perm[k] != k for every k): uniform
    over derangements, by drawing permutations until one has none (about e draws on average).
    Table 3's Shuffled-user gives user k the features of user perm[k]."""
    if n == 1:
        raise ValueError("derangement: one element cannot move (need 0 or at least 2)")
    rng = np.random.default_rng(seed)
    while True:
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


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


def _chronological_split(
    pairs: pd.DataFrame, test_share: float, validation_share: float
) -> tuple[pd.DataFrame, pd.Series]:
    """Per user (rows in time order): the last `test_share` of the positives (at least one) is
    test, the share before it validation (at least one), the rest train; users with fewer than
    three positives stay whole in train. Returns the pairs with `position` and `split`, and the
    mask of those short users' rows."""
    pairs = pairs.copy()
    pairs["position"] = pairs.groupby("user_id").cumcount()
    n = pairs.groupby("user_id")["item_id"].transform("size")
    n_test = np.maximum(1, np.round(n * test_share)).astype(int)
    n_val = np.maximum(1, np.round(n * validation_share)).astype(int)
    short = n < 3
    split = np.where(
        pairs["position"] >= n - n_test,
        "test",
        np.where(pairs["position"] >= n - n_test - n_val, "validation", "train"),
    )
    pairs["split"] = np.where(short, "train", split)
    return pairs, short


def recommendation_split(
    interactions: pd.DataFrame, p: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Recommendation's split (paper §4.5; `p` = recommendation.interactions): implicit feedback
    (`positive_column` true, or every interaction), each (user, item) once, the k-core, then the
    per-user chronological train / validation / test split (`_chronological_split`).

    Returns the split (user_id, item_id, timestamp, position, split, simulated) and its counts.
    """
    deduplicated, counts = _positives(interactions, p)
    core, rounds = _k_core(deduplicated, int(p["k_core"]["user_min"]), int(p["k_core"]["item_min"]))
    counts.update(
        k_core={**p["k_core"], "rounds": rounds},
        positives_after_k_core=len(core),
        users=int(core["user_id"].nunique()),
        items=int(core["item_id"].nunique()),
    )
    if core.empty:
        raise ValueError(f"recommendation: the k-core filter {p['k_core']} left no interaction")
    core, short = _chronological_split(
        core, float(p["split"]["test"]), float(p["split"]["validation"])
    )
    no_train = set(core["user_id"]) - set(core.loc[core["split"] == "train", "user_id"])
    if no_train:
        raise ValueError(
            f"recommendation.interactions.split {p['split']}: users {sorted(no_train)[:5]} keep no "
            "training interaction; lower the validation / test shares"
        )
    core["simulated"] = core["simulated"].astype(bool) if "simulated" in core else False
    counts["users_only_in_train"] = int(core.loc[short, "user_id"].nunique())
    counts.update(
        {
            f"{s}_interactions": int((core["split"] == s).sum())
            for s in ("train", "validation", "test")
        }
    )
    counts["simulated"] = bool(core["simulated"].any())
    columns = ["user_id", "item_id", "timestamp", "position", "split", "simulated"]
    return core[columns].reset_index(drop=True), counts


def _positives(interactions: pd.DataFrame, p: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
    """The positive (user, item) pairs, each pair once (its first time), of the first `max_users`
    users; and the counts of what was left out."""
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
    return deduplicated, counts


def evaluation_users(user_split: pd.DataFrame) -> set[str]:
    """The ids of the split's evaluation users (an error when there is none)."""
    evaluation = set(user_split.loc[user_split["split"] == "evaluation", "user_id"].astype(str))
    if not evaluation:
        raise ValueError("user_split: no row with split == 'evaluation'")
    return evaluation
