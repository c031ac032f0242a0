"""The scenes of the paper (§4.1.1) as Kedro namespaces: one pipeline definition, one instance per scene."""

from kedro.pipeline import Pipeline

SCENES: tuple[str, ...] = ("movie", "emoticon", "costume")


def per_scene(template: Pipeline, scenes: tuple[str, ...] = SCENES) -> Pipeline:
    """Instantiate `template` once per scene namespace (`movie.items`, `params:movie.ingestion`, ...)."""
    return sum((Pipeline(template, namespace=scene) for scene in scenes), start=Pipeline([]))
