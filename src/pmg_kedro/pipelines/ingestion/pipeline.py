"""`ingestion`: one definition, instantiated per scene namespace (movie, emoticon, costume)."""

from kedro.pipeline import Node, Pipeline

from ...scenes import per_scene
from .nodes import build_scene_tables, split_user_histories, split_users_for_protocol


def create_pipeline(**kwargs) -> Pipeline:
    template = Pipeline(
        [
            Node(
                build_scene_tables,
                inputs=["raw_source", "params:ingestion"],
                outputs=["items", "interactions", "image_index", "users", "build_report"],
                name="build_scene_tables",
            ),
            Node(
                split_user_histories,
                inputs=["interactions", "build_report", "params:ingestion"],
                outputs=["histories", "ingestion_report"],
                name="split_user_histories",
            ),
            Node(
                split_users_for_protocol,
                inputs=["histories", "params:protocol"],
                outputs="user_split",
                name="split_users_for_protocol",
            ),
        ]
    )
    return per_scene(template)
