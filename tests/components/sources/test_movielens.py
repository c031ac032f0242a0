import pandas as pd
from PIL import Image

from pmg_kedro.components.sources import movielens


def _ratings():
    return pd.DataFrame(
        {
            "movieId": [1, 2, 1, 3],
            "title": ["Toy Story", None, "Toy Story", "Heat"],
            "year": [1995.0, 1996.0, 1995.0, None],
            "genres": [
                "Adventure|Animation",
                "(no genres listed)",
                "Adventure|Animation",
                "Action",
            ],
            "userId": [1, 1, 2, 2],
            "rating": [4.0, 3.5, 5.0, 4.5],
            "timestamp": [10, 20, 30, 40],
        }
    )


def test_items_interactions_and_positive_flag():
    tables = movielens.build_tables(_ratings(), {}, {"positive_min_rating": 4.0}, "fixture")
    items = tables.items.set_index("item_id")
    assert items.loc["1", "genres"] == ["Adventure", "Animation"]
    assert items.loc["1", "caption"] == "Toy Story (1995): Adventure, Animation"
    assert items.loc["2", "genres"] == []
    assert (
        items.loc["2", "title_missing"] and items.loc["2", "title"] == "untitled MovieLens movie 2"
    )
    assert tables.counts["movies_without_title"] == 1
    assert tables.interactions["positive"].tolist() == [True, False, True, True]
    assert len(tables.image_index) == 0


def test_posters_folder_fills_the_image_index(tmp_path):
    Image.new("RGB", (4, 6)).save(tmp_path / "1.jpg")
    Image.new("RGB", (4, 6)).save(tmp_path / "99.png")
    posters = movielens.find_posters(str(tmp_path))
    tables = movielens.build_tables(_ratings(), posters, {"positive_min_rating": 4.0}, "fixture")
    assert tables.image_index["item_id"].tolist() == ["1"]
    assert tables.counts["poster_files_without_movie"] == 1
    assert movielens.find_posters(str(tmp_path / "absent")) == {}
