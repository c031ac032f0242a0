"""`embedding_training`, per scene with item images (emoticon, costume; movie when posters exist)."""

from kedro.pipeline import Node, Pipeline

from ...scenes import per_scene, scenes_with_images
from .nodes import build_soft_prompt_examples, embed_users, train_soft_preference_embeddings


def create_pipeline(**kwargs) -> Pipeline:
    template = Pipeline(
        [
            Node(
                build_soft_prompt_examples,
                inputs=[
                    "histories",
                    "items",
                    "image_index",
                    "preference_keywords",
                    "params:embedding_training",
                ],
                outputs="soft_prompt_examples",
                name="build_soft_prompt_examples",
            ),
            Node(
                train_soft_preference_embeddings,
                inputs=["soft_prompt_examples", "llm", "generator", "params:embedding_training"],
                outputs=[
                    "soft_prompt_adapter",
                    "soft_prompt_training_log",
                    "soft_prompt_report",
                    "soft_prompt_loss_curve",
                ],
                name="train_soft_preference_embeddings",
            ),
            Node(
                embed_users,
                inputs=[
                    "soft_prompt_adapter",
                    "soft_prompt_examples",
                    "llm",
                    "params:embedding_training",
                ],
                outputs="soft_embeddings",
                name="embed_users",
            ),
        ]
    )
    return per_scene(template, scenes_with_images(), shared=frozenset({"generator"}))
