import pandas as pd
import pytest
from PIL import Image

from pmg_kedro.components.data.defects import IngestionError
from pmg_kedro.components.data.sources import movielens
from pmg_kedro.components.data.validation import validate_scene


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
    (tmp_path / "notes.txt").write_text("not a poster")  # another suffix: ignored, logged
    posters = movielens.find_posters(str(tmp_path))
    assert posters == {"1": [str(tmp_path / "1.jpg")], "99": [str(tmp_path / "99.png")]}
    tables = movielens.build_tables(_ratings(), posters, {"positive_min_rating": 4.0}, "fixture")
    assert tables.image_index["item_id"].tolist() == ["1"]
    assert tables.counts["poster_files_without_movie"] == 1
    assert tables.defects == []
    assert movielens.find_posters(str(tmp_path / "absent")) == {}


def test_corrupt_posters_folder_gives_one_error_listing_every_defect(tmp_path):
    """A .jpg that is text, a zero-byte file and two posters for one movie: one error, all three."""
    (tmp_path / "1.jpg").write_text("<html>404 not found</html>")
    (tmp_path / "2.png").write_bytes(b"")
    Image.new("RGB", (4, 6)).save(tmp_path / "3.jpg")
    Image.new("RGB", (4, 6)).save(tmp_path / "3.png")
    posters = movielens.find_posters(str(tmp_path))
    tables = movielens.build_tables(_ratings(), posters, {"positive_min_rating": 4.0}, "fixture")
    with pytest.raises(IngestionError) as caught:
        validate_scene(tables)
    lines = str(caught.value).splitlines()
    assert lines[0] == "3 defects in fixture (posters: 1, image_index: 2); the first 3 follow."
    assert lines[1] == (
        f"  posters movieId 3, field '(file)': expected one poster file per movie, "
        f"got {tmp_path}/3.jpg, {tmp_path}/3.png"
    )
    assert [line.split(", got ")[1].split(":")[0] for line in lines[2:]] == [
        "UnidentifiedImageError",
        "UnidentifiedImageError",
    ]
    assert [line.split(" (")[0] for line in lines[2:]] == [
        "  image_index row 0",
        "  image_index row 1",
    ]
    assert f"(item 1: {tmp_path}/1.jpg)" in lines[2] and f"(item 2: {tmp_path}/2.png)" in lines[3]
