"""`weighted_generation` per scene; paper Table 1's variants and the controls are namespaced runs
of one template, listed in `conf/base/parameters_scenes.yml` (`ablations`).

Dataset names: `<scene>.generation_requests`, `<scene>.<variant>.candidates`,
`<scene>.<variant>.candidate_images`, `<scene>.<variant>.selections`,
`<scene>.<variant>.chosen_images`, `<scene>.user_images`, `<scene>.table2_selections`,
`<scene>.table2_images`, `<scene>.personalization_report`, `<scene>.weight_strips`.
"""

from kedro.pipeline import Node, Pipeline

from ...scenes import generation_variants, per_scene, scene_conf
from .nodes import (
    build_generation_requests,
    generate_candidates,
    generate_table2_images,
    generate_user_images,
    plot_weight_strips,
    score_candidates,
    summarize_personalization,
)

SHARED = frozenset({"generator", "scorer"})


def _variant_template(variant: str) -> Pipeline:
    """generate -> score for one variant."""
    ablation = f"params:ablations.{variant}"
    template = Pipeline(
        [
            Node(
                generate_candidates,
                inputs=[
                    "generation_requests",
                    "generator",
                    "soft_embeddings",
                    "params:weighted_generation",
                    ablation,
                    "params:sharding",
                ],
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
                    ablation,
                    "params:sharding",
                ],
                outputs=["selections", "chosen_images"],
                name="score_candidates",
            ),
        ]
    )
    return Pipeline(
        template,
        namespace=variant,
        inputs={"generation_requests", "soft_embeddings", *SHARED},
        parameters={
            "params:weighted_generation": "params:weighted_generation",
            ablation: ablation,
            "params:sharding": "params:sharding",
        },
    )


def create_pipeline(**kwargs) -> Pipeline:
    ablations = scene_conf()["ablations"]
    variants = generation_variants()
    grid_variants = [v for v in variants if ablations[v]["grid"]]
    template = Pipeline(
        [
            Node(
                build_generation_requests,
                inputs=[
                    "histories",
                    "user_split",
                    "preference_keywords",
                    "target_keywords",
                    "items",
                    "users",
                    "params:weighted_generation",
                ],
                outputs="generation_requests",
                name="build_generation_requests",
            ),
            *[_variant_template(v) for v in variants],
            Node(
                generate_user_images,
                inputs=[
                    "generation_requests",
                    "generator",
                    "soft_embeddings",
                    "params:weighted_generation",
                ],
                outputs="user_images",
                name="generate_user_images",
            ),
            Node(
                generate_table2_images,
                inputs=[
                    "generation_requests",
                    "generator",
                    "soft_embedding_sweep",
                    "params:weighted_generation",
                ],
                outputs=["table2_selections", "table2_images"],
                name="generate_table2_images",
            ),
            Node(
                summarize_personalization,
                inputs={
                    "params": "params:weighted_generation",
                    "ablations": "params:ablations",
                    "soft_embeddings": "soft_embeddings",
                    "requests": "generation_requests",
                    **{v: f"{v}.selections" for v in variants},
                },
                outputs="personalization_report",
                name="summarize_personalization",
            ),
            Node(
                plot_weight_strips,
                inputs={
                    "ablations": "params:ablations",
                    "params": "params:weighted_generation",
                    **{f"{v}_selections": f"{v}.selections" for v in grid_variants},
                    **{f"{v}_candidate_images": f"{v}.candidate_images" for v in grid_variants},
                },
                outputs="weight_strips",
                name="plot_weight_strips",
            ),
        ]
    )
    ablation_params = {
        "params:ablations",
        "params:sharding",
        *(f"params:ablations.{v}" for v in variants),
    }
    return per_scene(template, shared=SHARED | ablation_params)
