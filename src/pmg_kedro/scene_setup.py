"""A new scene from a folder of files (`kedro pmg add-scene`, DESIGN.md §11): check the folder,
infer what the data has, and write the scene's parameters and catalog entry under `conf/<env>/`.

Checking reads the folder exactly as ingestion will (`components.data.sources.folder`, then
`validation.scene_defects` and the protocol's user count), so a folder add-scene accepts ingests,
and one it refuses gets the same defects at ingestion. Inferred:
  - images: the `image` column or `images/` (item_images: required), else none (false);
  - ratings: a `rating` column (positives: rating >= `positive_min_rating`), else every
    interaction is a positive;
  - texts: a `text` column with any value (conversation: the target's text is y, each history
    item's text joins x_i);
  - attributes: the further item columns with at least two values, some shared by several items
    (an id-like column, one value per item, is kept in the items table but asked nothing);
  - recommendation (Table 3): the positives' k-core (the environment's `recommendation` block)
    keeps at least MIN_RECOMMENDATION users and items.
What is written is parameters like any other: edit them, and `kedro run` reads the edit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.config import OmegaConfigLoader

from .components.data.defects import IngestionError
from .components.data.sources import folder as folder_source
from .components.data.splits import protocol_defects, recommendation_split, split_histories
from .components.data.validation import scene_defects
from .config_loader import PROJECT_PATH, expand_scene_defaults, project_config_loader


def scene_files(name: str) -> tuple[str, str]:
    """The parameters and catalog files add-scene writes for scene `name` in conf/<env>/ (one
    pair per scene: the config loader merges them with the others key by key)."""
    return f"parameters_scene_{name}.yml", f"catalog_scene_{name}.yml"


NAME = re.compile(r"[a-z][a-z0-9_]*")
MIN_RECOMMENDATION = {"users": 5, "items": 5}  # after the k-core: fewer is no ranking experiment
DEFAULTS = {"positive_min_rating": 4.0, "n_history": 10, "min_history": 3, "list_separator": "|"}


class SceneSetupError(ValueError):
    """A scene that cannot be added as asked (a name, a file already there); nothing is written."""


@dataclass
class SceneOptions:
    """What the user chose on the command line (None: inferred or the environment's)."""

    name: str
    folder: Path
    env: str = "local"
    conf_source: Path | None = None
    force: bool = False
    n_evaluation: int | None = None
    positive_min_rating: float | None = None
    item_noun: str = "item"
    recommendation: bool | None = None


@dataclass
class SceneProfile:
    """What the folder has, as add-scene found it."""

    counts: dict[str, int]
    images: str | None  # "image column" | "images/ folder" | None
    ratings: bool
    texts: bool
    attributes: dict[str, int]  # attribute column -> its number of distinct values
    other_columns: list[str]
    users_split: int
    n_evaluation: int
    recommendation: bool
    recommendation_counts: dict[str, Any] = field(default_factory=dict)


def conf_root(options: SceneOptions) -> Path:
    return Path(options.conf_source or PROJECT_PATH / "conf")


def environment_parameters(options: SceneOptions, capabilities: dict[str, Any]) -> dict[str, Any]:
    """The new scene's parameters in the environment before add-scene writes anything: every
    `scene_defaults` block, as the config loader will give them to it."""
    loader = project_config_loader(options.env, conf_root(options))
    raw = OmegaConfigLoader.__getitem__(loader, "parameters")
    scenes = {**raw.get("scenes", {}), options.name: capabilities}
    return expand_scene_defaults({**raw, "scenes": scenes}).get(options.name, {})


def check_name(options: SceneOptions) -> None:
    """A scene name must be a new namespace: lower-case letters, digits, `_`; not a top-level
    parameter nor a scene of the environment (unless add-scene wrote it and --force is given)."""
    name = options.name
    if not NAME.fullmatch(name):
        raise SceneSetupError(
            f"scene name {name!r}: expected lower-case letters, digits and '_', starting with a "
            "letter (it becomes a namespace: `<name>.items`, `params:<name>.ingestion`)"
        )
    parameters = project_config_loader(options.env, conf_root(options))["parameters"]
    ours = [f for f in scene_files(name) if (conf_root(options) / options.env / f).is_file()]
    if ours:
        if not options.force:
            raise SceneSetupError(
                f"scene {name!r} is already in conf/{options.env}/{ours[0]}; --force replaces it"
            )
        return
    if name in parameters.get("scenes", {}) or name in parameters or name == "scene_defaults":
        raise SceneSetupError(
            f"scene name {name!r} is taken in environment {options.env!r} (a scene or a "
            "top-level parameter); choose another"
        )


def read_folder(options: SceneOptions) -> tuple[Any, SceneProfile]:
    """The folder's tables and profile; one IngestionError with every defect of the folder (files,
    rows, images, the protocol's user count) when it has any."""
    folder = options.folder
    if not folder.is_dir():
        raise SceneSetupError(f"--from {folder}: no such folder")
    minimum = options.positive_min_rating
    minimum = DEFAULTS["positive_min_rating"] if minimum is None else minimum
    tables = folder_source.build_tables(folder, {"positive_min_rating": minimum})
    defects = scene_defects(tables)
    ratings = "rating" in tables.interactions.columns
    min_history = int(DEFAULTS["min_history"])
    defaults = environment_parameters(options, {"recommendation": True})
    n_evaluation = options.n_evaluation or int(defaults["protocol"]["n_evaluation"])
    # The users the history split keeps, from the rows without a defect: the protocol's count is
    # listed with the folder's other defects.
    qualifying = tables.interactions
    if ratings:
        qualifying = qualifying[qualifying["positive"]]
    users_split = 0
    if "file_order" in qualifying.columns:
        histories, _ = split_histories(
            qualifying, int(DEFAULTS["n_history"]), min_history, (), ("timestamp", "file_order")
        )
        users_split = len(histories)
        defects += protocol_defects(users_split, n_evaluation, min_history + 1)
    if defects:
        raise IngestionError(tables.source, defects)
    profile = SceneProfile(
        counts=tables.counts,
        images=folder_source.image_layout(folder) if len(tables.image_index) else None,
        ratings=ratings,
        texts="text" in tables.interactions and bool((tables.interactions["text"] != "").any()),
        attributes={},
        other_columns=[],
        users_split=users_split,
        n_evaluation=n_evaluation,
        recommendation=False,
    )
    profile.attributes, profile.other_columns = infer_attributes(tables.items)
    profile.recommendation, profile.recommendation_counts = _recommendation(
        tables.interactions, defaults["recommendation"], ratings, options.recommendation
    )
    return tables, profile


def infer_attributes(items: pd.DataFrame) -> tuple[dict[str, int], list[str]]:
    """({attribute column: distinct values}, other columns) among the items' further columns: an
    attribute has at least two values and some value shared by several items."""
    attributes, others = {}, []
    for column in folder_source.attribute_names(items.columns):
        values = [
            v for cell in items[column] for v in (cell if isinstance(cell, list) else [cell]) if v
        ]
        distinct = len(set(values))
        if 2 <= distinct < len(values):
            attributes[column] = distinct
        else:
            others.append(column)
    return attributes, others


def _recommendation(
    interactions: pd.DataFrame, block: dict[str, Any], ratings: bool, asked: bool | None
) -> tuple[bool, dict[str, Any]]:
    """Whether the scene runs Table 3: what the user asked, else whether the k-core of the
    positives keeps MIN_RECOMMENDATION users and items."""
    p = {
        **block["interactions"],
        "positive_column": "positive" if ratings else None,
        "max_users": None,
    }
    try:
        _, counts = recommendation_split(interactions, p)
    except ValueError as err:  # the k-core left nothing
        counts = {"users": 0, "items": 0, "k_core": p["k_core"], "why": str(err)}
    counts["k_core"] = {k: v for k, v in counts["k_core"].items() if k != "rounds"}
    if asked and not counts["users"]:
        raise SceneSetupError(
            f"--recommendation: the k-core {counts['k_core']} of the environment's "
            "recommendation.interactions leaves no interaction, so Table 3 cannot run"
        )
    enough = all(counts[k] >= n for k, n in MIN_RECOMMENDATION.items())
    return (enough if asked is None else asked), counts
