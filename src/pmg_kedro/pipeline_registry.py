"""Project pipelines."""

from collections import defaultdict

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# The committed embedded weights are trained only when asked (`--pipeline model_preparation`).
EXCLUDED_FROM_DEFAULT = {"model_preparation"}


def register_pipelines() -> dict[str, Pipeline]:
    """Register every pipeline under `pipelines/`; `__default__` chains all but the excluded ones.

    Every node is tagged with its stage, the name of each pipeline it belongs to (`ingestion`,
    `weighted_generation`, ...): Kedro-Viz filters by it, and `kedro run --tags <stage>` runs one
    stage inside `__default__`. Scenes are namespaces (`movie.`, `costume.`), not tags.
    """
    found = find_pipelines(raise_errors=True)
    # A node shared by two pipelines gets both tags, so its copies stay identical.
    stages = defaultdict(set)
    for name, pipeline in found.items():
        for node in pipeline.nodes:
            stages[node.name].add(name)
    pipelines = {
        name: Pipeline([node.tag(stages[node.name]) for node in pipeline.nodes])
        for name, pipeline in found.items()
    }
    pipelines["__default__"] = sum(
        (p for name, p in pipelines.items() if name not in EXCLUDED_FROM_DEFAULT),
        start=Pipeline([]),
    )
    return pipelines
