"""The conf `kedro pmg add-scene` writes for a folder scene (`scene_setup`): its capabilities under
`scenes`, its parameter blocks (what differs from `scene_defaults`: ingestion, prompts over its
attribute columns, checks) and its catalog entry, in `conf/<env>/parameters_scene_<name>.yml` and
`conf/<env>/catalog_scene_<name>.yml` (Kedro's config loader merges them with every other file key
by key: another scene's files, or a file of the user's own, never clash unless they set the very
same key).

Writing is all or nothing: the new files are first written into a copy of the conf folder and
loaded there through the project's config loader (a duplicate top-level key, a scene the loader
does not see, a catalog entry that does not resolve stop it), then moved into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from .config_loader import PROJECT_PATH, project_config_loader
from .scene_setup import (
    DEFAULTS,
    SceneOptions,
    SceneProfile,
    SceneSetupError,
    conf_root,
    scene_files,
)


def capabilities(profile: SceneProfile) -> dict[str, Any]:
    """The scene's entry under `scenes` (parameters_scenes.yml's vocabulary)."""
    return {
        "item_images": "required" if profile.images else False,
        "simulated_users": False,
        "hidden_tastes": False,
        "conversation": profile.texts,
        "recommendation": profile.recommendation,
    }


def scene_parameters(options: SceneOptions, profile: SceneProfile) -> dict[str, Any]:
    """The scene's own parameter blocks (the rest comes from `scene_defaults`)."""
    attributes = list(profile.attributes)
    blocks: dict[str, Any] = {"ingestion": _ingestion(options, profile)}
    if options.n_evaluation is not None:
        blocks["protocol"] = {"n_evaluation": int(options.n_evaluation)}
    if profile.texts:
        blocks["behavior_summarization"] = {
            "history_text": '{item} (the user wrote: "{message}")',
            "target_text": "{item}",
            "columns": {
                "history_message": "history_text",
                "target_message": "target_text",
                # y: what the user wrote with the target interaction, their current message
                "conversation": "target_text",
            },
        }
    blocks["keyword_extraction"] = _keyword_extraction(options, profile)
    blocks["embedding_training"] = {
        "prompt_template": "A user recently chose: {items}. Describe the user's taste."
    }
    blocks["keyword_adapter"] = {"supervision": {a: {"column": a} for a in attributes}}
    if profile.images and attributes:
        blocks["metric_evaluation"] = {
            "probe": {"label_column": _probe_column(profile), "checks": ["target", "history"]}
        }
    if profile.recommendation:
        blocks["recommendation"] = _recommendation(options, profile)
    return blocks


def _ingestion(options: SceneOptions, profile: SceneProfile) -> dict[str, Any]:
    split: dict[str, Any] = {
        "n_history": DEFAULTS["n_history"],
        "min_history": DEFAULTS["min_history"],
        "order_columns": ["timestamp", "file_order"],  # the file's order breaks ties
    }
    block: dict[str, Any] = {}
    if profile.ratings:
        minimum = options.positive_min_rating
        block["positive_min_rating"] = float(
            DEFAULTS["positive_min_rating"] if minimum is None else minimum
        )
        split["filter_column"] = "positive"
        split["carry_columns"] = ["rating"]
    if profile.texts:
        split["carry_columns"] = [*split.get("carry_columns", []), "text"]
    block["attribute_columns"] = list(profile.attributes)
    block["list_separator"] = DEFAULTS["list_separator"]
    block["split"] = split
    return block


def _noun(options: SceneOptions) -> tuple[str, str]:
    """(noun, Noun) of the prompts."""
    noun = options.item_noun.strip() or "item"
    return noun, noun[:1].upper() + noun[1:]


def _keyword_extraction(options: SceneOptions, profile: SceneProfile) -> dict[str, Any]:
    noun, title = _noun(options)
    attributes = list(profile.attributes)
    return {
        "principle": (
            "You summarise a user's taste as short keywords for an image generator.\n"
            f"Each line is one {noun} the user chose, oldest first:"
        ),
        # a_i of §3.2.2: one prompt per attribute column, described in words
        "attributes": {a: f"(the {a.replace('_', ' ')} of each {noun})" for a in attributes}
        or {"style": f"(the kind and look of each {noun})"},
        "target_template": (
            "You write short keywords for an image generator.\n"
            f"{title}: {{target}}\n"
            f"Describe the picture of this {noun} with up to {{n_keywords}} short visual "
            "keywords separated by commas{examples}."
        ),
        "target_examples": "",
        "target_prefix": [noun, "{title}"],
        "fallback_columns": list(attributes),
        "target_fallback_columns": list(attributes),
        "quality": {
            "note": "Real users of a folder scene: the references are the held-out target "
            f"{noun}'s attribute values.",
            "checks": [
                {
                    "name": f"target_{a}",
                    "description": f"the held-out target {noun}'s {a.replace('_', ' ')}",
                    "source": "target",
                    "column": a,
                    "attribute": a,
                    "budget": 2,
                    "baseline": {"column": a},
                }
                for a in attributes
            ],
        },
    }


def _probe_column(profile: SceneProfile) -> str:
    """The attribute with the fewest values labels the semantic probe's classes."""
    return min(profile.attributes, key=profile.attributes.get)


def _recommendation(options: SceneOptions, profile: SceneProfile) -> dict[str, Any]:
    noun, _ = _noun(options)
    words = ", ".join(a.replace("_", " ") for a in profile.attributes) or "kinds and looks"
    block: dict[str, Any] = {
        "user_images": {
            "prompt_template": (
                "You summarise a user's taste as short keywords for an image generator.\n"
                f"Each line is one {noun} the user chose, oldest first:\n"
                "{history}\n"
                f"Question: which {words} does this user prefer? Answer with up to 8 short "
                "keywords separated by commas."
            ),
            "fallback_columns": list(profile.attributes),
        },
        "item_images": {"prompt_template": f"{noun}, {{caption}}"},
    }
    if profile.ratings:
        block["interactions"] = {"positive_column": "positive"}
    return block


def catalog_entry(options: SceneOptions) -> dict[str, Any]:
    """The scene's raw source: the folder, relative to the project where it lies inside it."""
    path = options.folder.resolve()
    if path.is_relative_to(PROJECT_PATH):
        path = path.relative_to(PROJECT_PATH)
    return {
        f"{options.name}.raw_source": {
            "type": "pmg_kedro.datasets.scene_sources.FolderSource",
            "path": path.as_posix(),
            "metadata": {"kedro-viz": {"layer": "raw"}},
        }
    }


def scene_contents(options: SceneOptions, profile: SceneProfile) -> dict[str, str]:
    """{file name: text} of the scene's two conf files."""
    parameters_file, catalog_file = scene_files(options.name)
    header = (
        f"# Scene {options.name!r}: written by `kedro pmg add-scene {options.name} --from "
        f"{options.folder}` (docs/your-own-data.md).\n# Edit freely; add-scene --force rewrites it.\n"
    )
    parameters = {
        "scenes": {options.name: capabilities(profile)},
        options.name: scene_parameters(options, profile),
    }
    return {
        parameters_file: header + dump(parameters),
        catalog_file: header + dump(catalog_entry(options)),
    }


def write_scene(options: SceneOptions, profile: SceneProfile) -> list[Path]:
    """Write the scene's conf (all or nothing, module docstring); returns the files written."""
    texts = scene_contents(options, profile)
    _dry_run(options, texts)
    folder = conf_root(options) / options.env
    folder.mkdir(parents=True, exist_ok=True)
    staged = {}
    for name, text in texts.items():
        handle, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
        with os.fdopen(handle, "w", encoding="utf-8") as fh:
            fh.write(text)
        staged[name] = temporary
    for name, temporary in staged.items():
        os.replace(temporary, folder / name)
    return [folder / name for name in texts]


def _dry_run(options: SceneOptions, texts: dict[str, str]) -> None:
    """Load the conf with the new files in a copy of the conf folder; a SceneSetupError when it
    does not load or does not show the scene."""
    with tempfile.TemporaryDirectory(prefix="pmg-add-scene-") as tmp:
        copy = Path(tmp) / "conf"
        shutil.copytree(conf_root(options), copy)
        (copy / options.env).mkdir(parents=True, exist_ok=True)
        for name, text in texts.items():
            (copy / options.env / name).write_text(text, encoding="utf-8")
        try:
            loader = project_config_loader(options.env, copy)
            parameters, catalog = loader["parameters"], loader["catalog"]
        except Exception as err:  # any loader failure: report it, write nothing
            raise SceneSetupError(
                f"conf/{options.env} would not load with the new scene (nothing was written): "
                f"{type(err).__name__}: {err}"
            ) from err
    if options.name not in parameters.get("scenes", {}) or "ingestion" not in parameters.get(
        options.name, {}
    ):
        raise SceneSetupError(
            f"conf/{options.env}: another file overrides scene {options.name!r} "
            "(nothing was written)"
        )
    if f"{options.name}.raw_source" not in catalog:
        raise SceneSetupError(f"conf/{options.env}: the catalog entry did not resolve")


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (prompt templates) as YAML block scalars, as a person writes them."""


def _text(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _list(dumper: yaml.SafeDumper, value: list):
    flat = all(not isinstance(v, dict | list) for v in value)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flat)


_Dumper.add_representer(str, _text)
_Dumper.add_representer(list, _list)


def dump(content: dict[str, Any]) -> str:
    return yaml.dump(
        content,
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        width=100,
        indent=2,
        default_flow_style=False,
    )
