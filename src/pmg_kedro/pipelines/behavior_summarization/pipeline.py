"""`behavior_summarization`: one definition, instantiated per scene namespace."""

from kedro.pipeline import Node, Pipeline

from ...scenes import per_scene
from .nodes import caption_items, select_users, summarize_behavior


def create_pipeline(**kwargs) -> Pipeline:
    template = Pipeline(
        [
            Node(
                select_users,
                inputs=[
                    "histories",
                    "user_split",
                    "image_index",
                    "params:ingestion",
                    "params:protocol",
                ],
                outputs="summarized_users",
                name="select_users",
            ),
            Node(
                caption_items,
                inputs=[
                    "items",
                    "image_index",
                    "summarized_users",
                    "params:behavior_summarization",
                ],
                outputs="item_captions",
                name="caption_items",
            ),
            Node(
                summarize_behavior,
                inputs=[
                    "summarized_users",
                    "item_captions",
                    "llm",
                    "params:behavior_summarization",
                ],
                outputs=["behavior_texts", "item_texts"],
                name="summarize_behavior",
            ),
        ]
    )
    return per_scene(template, shared=frozenset({"llm"}))
