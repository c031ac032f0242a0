"""A scene's data from the last `kedro run`: the catalog datasets the demo reads, which of them are
missing, and the trained embedder that gives a composed history its E_m.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..components.method.soft_embeddings import SoftEmbeddingConfig, SoftPreferenceEmbedder

logger = logging.getLogger(__name__)

# The scene datasets the demo reads (catalog names `<scene>.<name>`); the first five are needed.
SCENE_DATASETS = (
    "items",
    "image_index",
    "histories",
    "user_split",
    "behavior_texts",
    "preference_keywords",
    "target_keywords",
    "soft_embeddings",
    "soft_embedding_model",
)
REQUIRED = ("items", "image_index", "histories", "user_split", "behavior_texts")


@dataclass
class SceneData:
    """A scene's catalog data from the last run, and what is missing from it."""

    name: str
    capabilities: dict[str, Any]
    datasets: dict[str, Any]
    versions: dict[str, str]
    missing: list[str]
    embedder: SoftPreferenceEmbedder | None = None
    no_embedder: str = ""  # why a composed history gets no E_m

    def __getattr__(self, name: str) -> Any:
        """`data.items`, `data.histories`, ...: the scene's datasets (None when missing)."""
        try:
            return self.__dict__["datasets"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def ready(self) -> bool:
        return not set(self.missing) & set(REQUIRED)

    @property
    def has_images(self) -> bool:
        return self.image_index is not None and not self.image_index.empty

    @property
    def simulated(self) -> bool:
        return bool(self.capabilities.get("simulated_users"))

    def evaluation_users(self) -> list[str]:
        if not self.ready:
            return []
        split = self.user_split
        evaluation = set(split.loc[split["split"] == "evaluation", "user_id"].astype(str))
        rows = self.behavior_texts[self.behavior_texts["purpose"] == "evaluation"]
        return [u for u in rows["user_id"].astype(str) if u in evaluation]


def load_scene(catalog, scene: str, capabilities: Mapping[str, Any], llm, generator) -> SceneData:
    """`scene`'s datasets from the catalog (a missing one logged and listed), with its embedder."""
    from kedro.io import DatasetError

    datasets, versions, missing = {}, {}, []
    for name in SCENE_DATASETS:
        entry = f"{scene}.{name}"
        try:
            datasets[name] = catalog.load(entry)
            dataset = catalog.get(entry)
            if hasattr(dataset, "resolve_load_version"):
                versions[name] = dataset.resolve_load_version() or ""
        except DatasetError as err:
            datasets[name] = None
            missing.append(name)
            logger.info("demo: %s not loaded (%s)", entry, str(err).splitlines()[0])
    data = SceneData(scene, dict(capabilities), datasets, versions, missing)
    data.embedder, data.no_embedder = _embedder(data, llm, generator)
    return data


def _embedder(data: SceneData, llm, generator) -> tuple[SoftPreferenceEmbedder | None, str]:
    """The trained embedder of the scene (E_m for composed histories), or why there is none."""
    model = data.soft_embedding_model
    if model is None:
        return None, (
            f"`{data.name}.soft_embedding_model` is missing: run the embedding_training pipeline"
        )
    metadata = model.get("metadata") or {}
    if "not_applicable" in metadata:
        return None, metadata["not_applicable"]
    config = SoftEmbeddingConfig.from_json(metadata["config"])
    if config.hidden_size != llm.hidden_size or config.out_dim != generator.text_encoder.dim:
        return None, (
            f"`{data.name}.soft_embedding_model` was trained for an LLM of hidden size "
            f"{config.hidden_size} and a text encoder of width {config.out_dim}; this environment "
            f"has {llm.hidden_size} and {generator.text_encoder.dim}"
        )
    embedder = SoftPreferenceEmbedder(
        llm, config.n_tokens, config.n_prefixes, config.out_dim, seed=int(metadata.get("seed", 0))
    )
    embedder.load_trainable_state(model["tensors"])
    return embedder.eval(), ""
