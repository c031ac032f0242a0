"""`embedding_training`: soft preference embeddings (paper §3.3), one definition per scene.

Every scene runs it; a scene whose items have no images (movie without posters) gets explicit
"not applicable" records instead of a different pipeline shape.
"""

from kedro.pipeline import Node, Pipeline

from ...scenes import per_scene
from .nodes import build_soft_embedding_examples, train_soft_preference_embeddings


def create_pipeline(**kwargs) -> Pipeline:
    template = Pipeline(
        [
            Node(
                build_soft_embedding_examples,
                inputs=[
                    "behavior_texts",
                    "preference_keywords",
                    "items",
                    "image_index",
                    "params:embedding_training",
                ],
                outputs="soft_embedding_examples",
                name="build_soft_embedding_examples",
            ),
            Node(
                train_soft_preference_embeddings,
                inputs=[
                    "soft_embedding_examples",
                    "llm",
                    "generator",
                    "soft_embedding_checkpoint",
                    "params:embedding_training",
                ],
                outputs=[
                    "soft_embedding_model",
                    "soft_embedding_training_log",
                    "soft_embedding_report",
                    "soft_embedding_loss_curve",
                    "soft_embeddings",
                    "soft_embedding_sweep",
                ],
                name="train_soft_preference_embeddings",
            ),
        ]
    )
    return per_scene(template, shared=frozenset({"llm", "generator"}))
