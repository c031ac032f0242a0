"""`keyword_extraction`: one definition, instantiated per scene namespace."""

from kedro.pipeline import Node, Pipeline

from ...scenes import per_scene
from .nodes import (
    extract_comparison_keywords,
    extract_preference_keywords,
    extract_target_keywords,
    plot_keyword_quality,
    report_keyword_quality,
)


def create_pipeline(**kwargs) -> Pipeline:
    keyword_inputs = ["behavior_texts", "items", "llm", "keyword_adapter"]
    template = Pipeline(
        [
            Node(
                extract_preference_keywords,
                inputs=[*keyword_inputs, "params:keyword_extraction", "params:sharding"],
                outputs="preference_keywords",
                name="extract_preference_keywords",
            ),
            # The other LLM setting (zero-shot vs LoRA) on the evaluation users, for the report.
            Node(
                extract_comparison_keywords,
                inputs=[*keyword_inputs, "params:keyword_extraction", "params:sharding"],
                outputs="comparison_keywords",
                name="extract_comparison_keywords",
            ),
            Node(
                extract_target_keywords,
                inputs=[
                    "behavior_texts",
                    "items",
                    "llm",
                    "params:keyword_extraction",
                    "params:sharding",
                ],
                outputs="target_keywords",
                name="extract_target_keywords",
            ),
            Node(
                report_keyword_quality,
                inputs=[
                    "preference_keywords",
                    "comparison_keywords",
                    "target_keywords",
                    "behavior_texts",
                    "items",
                    "users",
                    "params:keyword_extraction",
                ],
                outputs=["keyword_quality", "keyword_quality_report"],
                name="report_keyword_quality",
            ),
            Node(
                plot_keyword_quality,
                inputs=["keyword_quality", "params:keyword_extraction"],
                outputs="keyword_quality_figure",
                name="plot_keyword_quality",
            ),
        ]
    )
    return per_scene(template, shared=frozenset({"llm", "keyword_adapter", "params:sharding"}))
