"""`weighted_generation` per scene; the Table 1 ablation variants are namespaced runs of one template.

Dataset names: `<scene>.generation_requests`, `<scene>.<variant>.candidates`,
`<scene>.<variant>.candidate_images`, `<scene>.<variant>.selections`, `<scene>.<variant>.chosen_images`,
`<scene>.personalization_report`, `<scene>.weight_strips`.
"""

import warnings

from kedro.pipeline import Node, Pipeline

from ...scenes import SCENES, scenes_with_images
from .nodes import (
    build_generation_requests,
    generate_candidates,
    generate_user_images,
    plot_weight_strips,
    recover_hidden_tastes,
    score_candidates,
    summarize_personalization,
)

# Paper Table 1: full PMG, without soft embeddings, without keywords, without both (= target only,
# the no-personalization baseline). Variants that need soft embeddings run only in scenes with images.
VARIANTS_WITH_EMBEDDINGS = ("pmg", "without_keywords")
VARIANTS = ("pmg", "without_embeddings", "without_keywords", "without_both")

# The scene-level nodes read the variants' outputs by their namespaced names (`pmg.selections`),
# which Kedro warns about although it is exactly what namespacing produces.
warnings.filterwarnings("ignore", message="One or more dataset names contain", category=UserWarning)


def _variant_template(variant: str, with_embeddings: bool) -> Pipeline:
    """generate -> score for one variant; `soft_embeddings` is an input only where it exists."""
    shared = {"generation_requests", "generator", "scorer"}
    inputs = ["generation_requests", "generator", "params:weighted_generation", "params:ablation"]
    if with_embeddings:
        inputs.append("soft_embeddings")
        shared.add("soft_embeddings")
    template = Pipeline(
        [
            Node(
                generate_candidates,
                inputs=inputs,
                outputs=["candidates", "candidate_images"],
                name="generate_candidates",
            ),
            Node(
                score_candidates,
                inputs=[
                    "candidates",
                    "candidate_images",
                    "generation_requests",
                    "scorer",
                    "params:weighted_generation",
                ],
                outputs=["selections", "chosen_images"],
                name="score_candidates",
            ),
        ]
    )
    return Pipeline(
        template,
        namespace=variant,
        inputs=shared,
        parameters={
            "params:weighted_generation": "params:weighted_generation",
            "params:ablation": f"params:ablations.{variant}",
        },
    )


def scene_pipeline(with_embeddings: bool, simulated_tastes: bool) -> Pipeline:
    """The per-scene pipeline: requests, every available variant, the report and the strips;
    with `simulated_tastes` (costume's simulated users) also the hidden-taste recovery check.
    """
    variants = [v for v in VARIANTS if with_embeddings or v not in VARIANTS_WITH_EMBEDDINGS]
    first = variants[0]
    taste_check = Node(
        recover_hidden_tastes,
        inputs={
            "users": "users",
            "items": "items",
            "image_index": "image_index",
            "params": "params:weighted_generation",
            **{v: f"{v}.chosen_images" for v in variants},
        },
        outputs="taste_recovery_report",
        name="recover_hidden_tastes",
    )
    return Pipeline(
        [
            Node(
                build_generation_requests,
                inputs=[
                    "histories",
                    "preference_keywords",
                    "target_keywords",
                    "params:weighted_generation",
                ],
                outputs="generation_requests",
                name="build_generation_requests",
            ),
            *[_variant_template(v, with_embeddings) for v in variants],
            Node(
                generate_user_images,
                inputs=[
                    "generation_requests",
                    "generator",
                    "params:weighted_generation",
                    *(["soft_embeddings"] if with_embeddings else []),
                ],
                outputs="user_images",
                name="generate_user_images",
            ),
            Node(
                summarize_personalization,
                inputs=["params:weighted_generation", *[f"{v}.selections" for v in variants]],
                outputs="personalization_report",
                name="summarize_personalization",
            ),
            Node(
                plot_weight_strips,
                inputs=[
                    f"{first}.selections",
                    f"{first}.candidate_images",
                    "params:weighted_generation",
                ],
                outputs="weight_strips",
                name="plot_weight_strips",
            ),
            *([taste_check] if simulated_tastes else []),
        ]
    )


def create_pipeline(**kwargs) -> Pipeline:
    with_images = set(scenes_with_images())
    return sum(
        (
            Pipeline(
                scene_pipeline(scene in with_images, simulated_tastes=scene == "costume"),
                namespace=scene,
                inputs={"generator", "scorer"},
            )
            for scene in SCENES
        ),
        start=Pipeline([]),
    )
