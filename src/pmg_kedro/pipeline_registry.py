"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# The committed embedded weights are trained only when asked (`--pipeline model_preparation`).
EXCLUDED_FROM_DEFAULT = {"model_preparation"}


def register_pipelines() -> dict[str, Pipeline]:
    """Register every pipeline under `pipelines/`; `__default__` chains all but the excluded ones."""
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (p for name, p in pipelines.items() if name not in EXCLUDED_FROM_DEFAULT),
        start=Pipeline([]),
    )
    return pipelines
