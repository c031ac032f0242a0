import pandas as pd
import pytest

from pmg_kedro.components.data.splits import split_histories


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
