"""The scenes of the paper (§4.1.1) as Kedro namespaces: one pipeline, one instance per scene."""

from pathlib import Path

from kedro.pipeline import Pipeline

SCENES: tuple[str, ...] = ("movie", "emoticon", "costume")

# Kept in step with `movie.raw_source.posters_dir` in conf/base/catalog_ingestion.yml.
MOVIE_POSTERS_DIR = Path("data/01_raw/movie/posters")


def scenes_with_images() -> tuple[str, ...]:
    """Scenes whose items have images: emoticon and costume always, movie when posters exist."""
    has_posters = MOVIE_POSTERS_DIR.is_dir() and any(MOVIE_POSTERS_DIR.iterdir())
    return tuple(s for s in SCENES if s != "movie" or has_posters)


def per_scene(
    template: Pipeline, scenes: tuple[str, ...] = SCENES, shared: frozenset[str] = frozenset()
) -> Pipeline:
    """Instantiate `template` once per scene namespace (`movie.items`, `params:movie.x`, ...).

    `shared` names datasets every scene reads as they are (models such as `llm`), unprefixed.
    """
    return sum(
        (Pipeline(template, namespace=scene, inputs=set(shared) or None) for scene in scenes),
        start=Pipeline([]),
    )
