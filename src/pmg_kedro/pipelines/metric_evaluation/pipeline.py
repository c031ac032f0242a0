"""`metric_evaluation` per scene: every variant and control of `parameters_scenes.yml`
(`ablations`) against the evaluation users' history and target images.

Dataset names: `<scene>.semantic_probe`, `<scene>.identity_probe`, `<scene>.image_metrics`,
`<scene>.table2_image_metrics`, `<scene>.table1`, `<scene>.table1_comparisons`,
`<scene>.table1_report`, `<scene>.table2`, `<scene>.table2_report`, `<scene>.metric_summary`,
`<scene>.comparison_figure`, `<scene>.embedding_figure`, `<scene>.selection_scatter`; shared:
`fashion_mnist_train`, `fashion_mnist_test` (the costume identity probe's images).
"""

from kedro.pipeline import Node, Pipeline

from ...scenes import generation_variants, per_scene, scene_conf
from .nodes import (
    build_table1,
    build_table2,
    evaluate_chosen_images,
    evaluate_table2_images,
    fit_identity_probe,
    fit_semantic_probe,
    plot_comparison_figure,
    plot_embedding_figure,
    plot_selection_scatter,
    summarize_metric_evaluation,
)

# Paper Figures 4–6 (baseline vs PMG) and Figure 8 (keywords only vs with soft embeddings).
COMPARISON_FIGURE = ("without_both", "pmg")
EMBEDDING_FIGURE = ("without_embeddings", "pmg")
PARAMS = "params:metric_evaluation"


def _figure_inputs(variants: tuple[str, ...]) -> dict[str, str]:
    return {
        "histories": "histories",
        "user_split": "user_split",
        "users": "users",
        "image_index": "image_index",
        "weighted_generation": "params:weighted_generation",
        "params": PARAMS,
        **{v: f"{v}.chosen_images" for v in variants},
    }


def create_pipeline(**kwargs) -> Pipeline:
    variants = generation_variants()
    grid_variants = [v for v in variants if scene_conf()["ablations"][v]["grid"]]
    template = Pipeline(
        [
            Node(
                fit_semantic_probe,
                inputs=["items", "image_index", PARAMS],
                outputs="semantic_probe",
                name="fit_semantic_probe",
            ),
            Node(
                fit_identity_probe,
                inputs=[
                    "items",
                    "image_index",
                    "fashion_mnist_train",
                    "fashion_mnist_test",
                    PARAMS,
                ],
                outputs="identity_probe",
                name="fit_identity_probe",
            ),
            Node(
                evaluate_chosen_images,
                inputs={
                    "histories": "histories",
                    "user_split": "user_split",
                    "items": "items",
                    "image_index": "image_index",
                    "users": "users",
                    "personalization_report": "personalization_report",
                    "semantic_probe": "semantic_probe",
                    "identity_probe": "identity_probe",
                    "params": PARAMS,
                    "sharding": "params:sharding",
                    **{f"{v}_selections": f"{v}.selections" for v in variants},
                    **{f"{v}_chosen_images": f"{v}.chosen_images" for v in variants},
                },
                outputs=["image_metrics", "evaluation_notes"],
                name="evaluate_chosen_images",
            ),
            Node(
                evaluate_table2_images,
                inputs=[
                    "histories",
                    "user_split",
                    "items",
                    "image_index",
                    "users",
                    "semantic_probe",
                    "table2_selections",
                    "table2_images",
                    PARAMS,
                    "params:sharding",
                ],
                outputs=["table2_image_metrics", "table2_notes"],
                name="evaluate_table2_images",
            ),
            *_report_nodes(grid_variants),
        ]
    )
    shared = {"params:ablations", "params:sharding", "fashion_mnist_train", "fashion_mnist_test"}
    return per_scene(template, shared=frozenset(shared))


def _report_nodes(grid_variants: list[str]) -> list[Node]:
    """Tables 1-2, the MLflow summary and the figures, from the per-image metrics."""
    return [
        Node(
            build_table1,
            inputs=["image_metrics", "evaluation_notes", PARAMS],
            outputs=["table1", "table1_comparisons", "table1_report"],
            name="build_table1",
        ),
        Node(
            build_table2,
            inputs=["table2_image_metrics", "table2_notes", PARAMS],
            outputs=["table2", "table2_report"],
            name="build_table2",
        ),
        Node(
            summarize_metric_evaluation,
            inputs=[
                "table1",
                "table1_comparisons",
                "table2",
                "evaluation_notes",
                "table2_notes",
                "semantic_probe",
                "identity_probe",
            ],
            outputs="metric_summary",
            name="summarize_metric_evaluation",
        ),
        Node(
            plot_comparison_figure,
            inputs=_figure_inputs(COMPARISON_FIGURE),
            outputs="comparison_figure",
            name="plot_comparison_figure",
        ),
        Node(
            plot_embedding_figure,
            inputs=_figure_inputs(EMBEDDING_FIGURE),
            outputs="embedding_figure",
            name="plot_embedding_figure",
        ),
        Node(
            plot_selection_scatter,
            inputs={
                "ablations": "params:ablations",
                "weighted_generation": "params:weighted_generation",
                "params": PARAMS,
                **{v: f"{v}.selections" for v in grid_variants},
            },
            outputs="selection_scatter",
            name="plot_selection_scatter",
        ),
    ]
