"""`kedro pmg ...`: the project's own command group (registered in `cli.py`).

    kedro pmg add-scene NAME --from DIR [--env local] [--force] [--n-evaluation N]
                        [--positive-min-rating R] [--item-noun WORD] [--recommendation/--no-recommendation]

checks a scene folder (docs/your-own-data.md), writes the scene's parameters and catalog entry
under conf/<env>/ and prints the command that runs it (`scene_setup`, `scene_blocks`).
"""

from __future__ import annotations

from pathlib import Path

import click

from .components.data.defects import IngestionError
from .scene_blocks import capabilities, write_scene
from .scene_setup import (
    MIN_RECOMMENDATION,
    SceneOptions,
    SceneProfile,
    SceneSetupError,
    check_name,
    read_folder,
)


@click.group(name="pmg")
def pmg() -> None:
    """PMG project commands (scenes from your own data)."""


@pmg.command(name="add-scene")
@click.argument("name")
@click.option(
    "--from", "folder", required=True, type=click.Path(path_type=Path), help="the scene folder"
)
@click.option("--env", "-e", default="local", show_default=True, help="conf/<env>/ to write into")
@click.option(
    "--conf-source",
    type=click.Path(path_type=Path),
    default=None,
    help="the conf folder (default: the project's conf/)",
)
@click.option(
    "--force", is_flag=True, help="replace the scene's blocks if add-scene wrote them before"
)
@click.option(
    "--n-evaluation",
    type=int,
    default=None,
    help="evaluation users of the protocol (default: the environment's)",
)
@click.option(
    "--positive-min-rating",
    type=float,
    default=None,
    help="a rating at or above it is a positive (default 4)",
)
@click.option(
    "--item-noun",
    default="item",
    show_default=True,
    help="what an item is, in the prompts (e.g. 'mug')",
)
@click.option(
    "--recommendation/--no-recommendation",
    default=None,
    help="run Table 3 (default: when the data has enough users and items)",
)
def add_scene(name: str, folder: Path, **kwargs) -> None:
    """Check the scene folder FROM, then write scene NAME's conf under conf/<env>/."""
    options = SceneOptions(name=name, folder=folder, **kwargs)
    try:
        check_name(options)
        tables, profile = read_folder(options)
        written = write_scene(options, profile)
    except (IngestionError, SceneSetupError) as err:
        raise click.ClickException(f"nothing was written.\n{err}") from err
    click.echo(summary(options, profile, written))


def summary(options: SceneOptions, profile: SceneProfile, written: list[Path]) -> str:
    """What add-scene found and wrote, and the next command."""
    counts = profile.counts
    env = "" if options.env == "local" else f" --env {options.env}"
    rec = profile.recommendation_counts
    lines = [
        f"Scene {options.name!r} from {options.folder}:",
        f"  {counts['items']:,} items, {counts['interactions']:,} interactions, "
        f"{counts['users']:,} users ({profile.users_split:,} with enough history; "
        f"{profile.n_evaluation} for evaluation)",
        f"  images: {profile.images or 'none (soft embeddings and image metrics: not applicable)'}",
        f"  ratings: {'yes, positives have rating >= the threshold' if profile.ratings else 'no (every interaction is a positive)'}",
        f"  texts: {'yes (x_i and the conversation y)' if profile.texts else 'no'}",
        f"  attributes (keyword prompts a_i): {', '.join(profile.attributes) or 'none'}",
        f"  other item columns (kept, not asked): {', '.join(profile.other_columns) or 'none'}",
        f"  recommendation (Table 3): {'yes' if profile.recommendation else 'no'} (the "
        f"k-core {rec.get('k_core', '')} keeps {rec.get('users', 0)} users and "
        f"{rec.get('items', 0)} items; add-scene asks for {MIN_RECOMMENDATION['users']} users "
        f"and {MIN_RECOMMENDATION['items']} items)",
        f"  capabilities: {capabilities(profile)}",
        "Wrote " + ", ".join(str(p) for p in written),
        f"Next: kedro run{env} --namespaces {options.name}   (every pipeline for this scene)",
        f"Then: kedro viz run{env} (namespace {options.name}), make demo ENV={options.env}",
    ]
    return "\n".join(lines)
