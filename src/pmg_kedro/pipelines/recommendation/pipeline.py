"""`recommendation` (paper §4.5, Table 3): one template per scene whose conf says
`recommendation: true` (parameters_scenes.yml: movie, the paper's setting, and costume, SIMULATED
users with real item images). Emoticon has no item catalogue to rank and is not instantiated.

Tags: `recommendation_images` = the expensive image stages (LLM keywords, user images, item
images, the generated images of the users' last training items, the ORACLE-keyword user images of
SIMULATED users); `recommendation_experiment` = features, MMGCN runs and the report, reading the
images the catalog holds: `kedro run --pipeline recommendation --tags recommendation_experiment`.

Generated-user and Oracle-keywords-user images come from one node function on two keyword tables
(the LLM's, `recommendation_user_keywords`, and the hidden taste's, `recommendation_oracle_keywords`:
empty for real users, whose Oracle-keywords-user is then "not applicable").
"""

from kedro.pipeline import Node, Pipeline

from ...components.evaluation import recommendation_report
from ...scenes import per_scene, scenes_where
from .nodes import (
    build_recommendation_user_features,
    extract_recommendation_item_features,
    extract_recommendation_keywords,
    generate_recommendation_history_item_images,
    generate_recommendation_item_images,
    generate_recommendation_user_images,
    oracle_recommendation_keywords,
    report_recommendation,
    run_recommendation_experiment,
    split_recommendation_interactions,
)

IMAGES = "recommendation_images"
EXPERIMENT = "recommendation_experiment"
PARAMS = "params:recommendation"
SHARDING = "params:sharding"


def create_pipeline(**kwargs) -> Pipeline:
    template = Pipeline(
        [
            Node(
                split_recommendation_interactions,
                inputs=["interactions", PARAMS],
                outputs=["recommendation_split", "recommendation_split_stats"],
                name="split_recommendation_interactions",
                tags=[IMAGES, EXPERIMENT],
            ),
            Node(
                extract_recommendation_keywords,
                inputs=["recommendation_split", "items", "llm", PARAMS, SHARDING],
                outputs="recommendation_user_keywords",
                name="extract_recommendation_keywords",
                tags=[IMAGES],
            ),
            Node(
                generate_recommendation_user_images,
                inputs=["recommendation_user_keywords", "generator", PARAMS, SHARDING],
                outputs=["recommendation_user_images", "recommendation_user_image_log"],
                name="generate_recommendation_user_images",
                tags=[IMAGES],
            ),
            *_oracle_keyword_nodes(),
            Node(
                generate_recommendation_item_images,
                inputs=[
                    "recommendation_split",
                    "items",
                    "image_index",
                    "generator",
                    PARAMS,
                    SHARDING,
                ],
                outputs=["recommendation_item_images", "recommendation_item_image_log"],
                name="generate_recommendation_item_images",
                tags=[IMAGES],
            ),
            Node(
                generate_recommendation_history_item_images,
                inputs=[
                    "recommendation_split",
                    "items",
                    "recommendation_item_images",
                    "generator",
                    PARAMS,
                    SHARDING,
                ],
                outputs=[
                    "recommendation_history_item_images",
                    "recommendation_history_item_image_log",
                ],
                name="generate_recommendation_history_item_images",
                tags=[IMAGES],
            ),
            *_experiment_nodes(),
            Node(
                recommendation_report.summary,
                inputs="recommendation_report",
                outputs="table3_summary",
                name="summarize_recommendation",
                tags=[EXPERIMENT],
            ),
        ]
    )
    return per_scene(
        template,
        scenes=scenes_where("recommendation"),
        shared=frozenset({"generator", "llm", SHARDING}),
    )


def _oracle_keyword_nodes() -> list[Node]:
    """Oracle-keywords-user's images (tag `recommendation_images`): the hidden taste of SIMULATED
    users as keywords, through the node that makes Generated-user's images."""
    return [
        Node(
            oracle_recommendation_keywords,
            inputs=["recommendation_split", "users"],
            outputs="recommendation_oracle_keywords",
            name="oracle_recommendation_keywords",
            tags=[IMAGES],
        ),
        Node(
            generate_recommendation_user_images,
            inputs=["recommendation_oracle_keywords", "generator", PARAMS, SHARDING],
            outputs=["recommendation_oracle_user_images", "recommendation_oracle_user_image_log"],
            name="generate_recommendation_oracle_user_images",
            tags=[IMAGES],
        ),
    ]


def _experiment_nodes() -> list[Node]:
    """Features, MMGCN runs and the report (tag `recommendation_experiment`): they read the images
    the catalog holds."""
    return [
        Node(
            extract_recommendation_item_features,
            inputs=[
                "recommendation_split",
                "image_index",
                "recommendation_item_images",
                PARAMS,
            ],
            outputs="recommendation_item_features",
            name="extract_recommendation_item_features",
            tags=[EXPERIMENT],
        ),
        Node(
            build_recommendation_user_features,
            inputs=[
                "recommendation_split",
                "recommendation_item_features",
                "recommendation_user_keywords",
                "recommendation_user_images",
                "recommendation_history_item_images",
                "recommendation_oracle_user_images",
                PARAMS,
            ],
            outputs="recommendation_user_features",
            name="build_recommendation_user_features",
            tags=[EXPERIMENT],
        ),
        Node(
            run_recommendation_experiment,
            inputs=[
                "recommendation_split",
                "recommendation_item_features",
                "recommendation_user_features",
                PARAMS,
                SHARDING,
            ],
            outputs="recommendation_results",
            name="run_recommendation_experiment",
            tags=[EXPERIMENT],
        ),
        Node(
            report_recommendation,
            inputs=[
                "recommendation_results",
                "recommendation_split",
                "recommendation_split_stats",
                "recommendation_item_features",
                "recommendation_item_image_log",
                "recommendation_user_keywords",
                "recommendation_user_image_log",
                "recommendation_history_item_image_log",
                "recommendation_oracle_user_image_log",
                PARAMS,
            ],
            outputs=[
                "recommendation_report",
                "recommendation_report_markdown",
                "recommendation_chart",
            ],
            name="report_recommendation",
            tags=[EXPERIMENT],
        ),
    ]
