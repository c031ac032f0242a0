import numpy as np
import pandas as pd
import pytest

from pmg_kedro.components.data.splits import derangement, split_histories, split_users


def _interactions(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])


def test_last_interaction_is_target_and_history_is_chronological():
    df = _interactions(
        [("u1", "c", 30, 5.0), ("u1", "a", 10, 4.0), ("u1", "b", 20, 4.5), ("u1", "d", 40, 4.0)]
    )
    table, counts = split_histories(df, n_history=10, min_history=1, carry_columns=["rating"])
    row = table.iloc[0]
    assert row["history"] == ["a", "b", "c"]
    assert row["target"] == "d"
    assert row["history_rating"] == [4.0, 4.5, 5.0]
    assert row["target_rating"] == 4.0
    assert counts["users_split"] == 1


def test_history_keeps_only_the_last_n_before_the_target():
    df = _interactions([("u1", f"i{t}", t, 4.0) for t in range(15)])
    table, _ = split_histories(df, n_history=10, min_history=1)
    assert table.iloc[0]["history"] == [f"i{t}" for t in range(4, 14)]
    assert table.iloc[0]["target"] == "i14"


def test_users_with_too_short_or_empty_histories_are_counted_not_silently_dropped():
    df = _interactions(
        [("only_target", "x", 1, 4.0), ("short", "a", 1, 4.0), ("short", "b", 2, 4.0)]
        + [("ok", f"i{t}", t, 4.0) for t in range(4)]
    )
    table, counts = split_histories(df, n_history=10, min_history=2)
    assert table["user_id"].tolist() == ["ok"]
    assert counts == {"users_with_interactions": 3, "users_split": 1, "users_filtered_too_short": 2}


def test_ties_are_broken_by_the_extra_order_columns():
    df = pd.DataFrame(
        {
            "user_id": ["u"] * 3,
            "item_id": ["b", "a", "c"],
            "timestamp": [5, 5, 9],
            "order": [2, 1, 3],
        }
    )
    table, _ = split_histories(df, 10, 1, order_columns=["timestamp", "order"])
    assert table.iloc[0]["history"] == ["a", "b"]


def test_invalid_sizes_are_rejected():
    with pytest.raises(ValueError, match="min_history"):
        split_histories(_interactions([]), n_history=2, min_history=3)


def _evaluation(split: pd.DataFrame) -> frozenset:
    return frozenset(split.loc[split["split"] == "evaluation", "user_id"])


def test_the_user_split_is_the_same_for_the_same_users_and_seed_in_any_order():
    users = [f"u{i:02d}" for i in range(40)]
    split = split_users(users, 10, seed=2024)
    again = split_users(list(reversed(users)) + users[:5], 10, seed=2024)  # order, repeats
    pd.testing.assert_frame_equal(split, again)
    assert len(_evaluation(split)) == 10 and (split["seed"] == 2024).all()
    assert set(split.loc[split["split"] == "train", "user_id"]) == set(users) - _evaluation(split)


def test_another_seed_draws_other_evaluation_users():
    users = [f"u{i:02d}" for i in range(40)]
    draws = {_evaluation(split_users(users, 10, seed)) for seed in (2024, 2025, 2026, 0)}
    assert len(draws) == 4


def test_a_split_without_users_for_both_sides_is_refused():
    with pytest.raises(ValueError, match="n_evaluation=3 must leave at least one user"):
        split_users(["a", "b", "c"], 3, seed=0)


@pytest.mark.parametrize("n", [2, 3, 5, 50])
def test_derangement_moves_every_user_once_and_is_seeded(n):
    perm = derangement(n, seed=7)
    assert sorted(perm) == list(range(n))  # every user gives and receives once
    assert (perm != np.arange(n)).all()  # no fixed point: nobody keeps its own features
    assert (derangement(n, seed=7) == perm).all()
    if n > 2:  # two users have one derangement; more have several, and the seed picks one
        assert len({tuple(derangement(n, seed=s)) for s in range(10)}) > 1


def test_a_single_user_cannot_be_deranged():
    assert len(derangement(0, seed=0)) == 0
    with pytest.raises(ValueError, match="one element"):
        derangement(1, seed=0)
