"""The project's config loader: `scene_defaults` merged into every scene, and the resolved
parameters of every environment unchanged by writing them that way.

`tests/fixtures/resolved_parameters.json` holds every environment's parameters as Kedro's plain
`OmegaConfigLoader` resolved them from the per-scene YAML anchors before `scene_defaults`
(the `_name` anchor blocks left out: they were never parameters). A change of a parameter on
purpose rewrites it: `python -m tests.test_config_loader`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pmg_kedro.config_loader import expand_scene_defaults, merged, project_config_loader

FIXTURE = Path(__file__).parent / "fixtures" / "resolved_parameters.json"
ENVIRONMENTS = (
    "base",
    "test",
    "reference",
    "reference_gpu",
    "paper",
    "paper_random",
    "paper_random_tiny",
)


def _resolved() -> dict[str, dict]:
    return {env: project_config_loader(env)["parameters"] for env in ENVIRONMENTS}


@pytest.fixture(scope="module")
def recorded() -> dict[str, dict]:
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_environment_resolves_the_recorded_parameters(env, recorded):
    assert project_config_loader(env)["parameters"] == recorded[env]


def test_recorded_environments_are_every_environment_in_conf(recorded, project_root):
    conf = project_root / "conf"
    assert set(recorded) == {p.name for p in conf.iterdir() if p.is_dir()} - {"local"}


def test_a_scenes_own_values_beat_the_defaults_dict_by_dict():
    defaults = {"a": 1, "nested": {"x": 1, "y": 2}, "items": [1, 2], "gone": "default"}
    own = {"nested": {"y": 3}, "items": [9], "gone": None, "extra": True}
    assert merged(defaults, own) == {
        "a": 1,
        "nested": {"x": 1, "y": 3},
        "items": [9],  # a list replaces, as YAML's merge key did
        "gone": None,  # an explicit null is the scene's value
        "extra": True,
    }


def test_every_scene_gets_the_defaults_a_capability_block_only_where_true():
    parameters = {
        "scenes": {"movie": {"recommendation": True}, "emoticon": {"recommendation": False}},
        "scene_defaults": {
            "protocol": {"n_evaluation": 64, "seed": 1},
            "recommendation": {"seeds": [1, 2]},
            "keyword_adapter": {"scene": None, "windows": {"n_next": 5, "min_history": 3}},
        },
        "emoticon": {
            "protocol": {"n_evaluation": 44},
            "keyword_adapter": {"windows": {"n_next": 3}},
            "recommendation": {"seeds": [3]},  # switched off by its capability all the same
        },
        "model_preparation": {"train": False},
    }
    expanded = expand_scene_defaults(parameters)
    assert "scene_defaults" not in expanded
    assert expanded["model_preparation"] == {"train": False}
    assert expanded["movie"] == {
        "protocol": {"n_evaluation": 64, "seed": 1},
        "recommendation": {"seeds": [1, 2]},
        "keyword_adapter": {"scene": "movie", "windows": {"n_next": 5, "min_history": 3}},
    }
    assert expanded["emoticon"] == {
        "protocol": {"n_evaluation": 44, "seed": 1},
        "keyword_adapter": {"scene": "emoticon", "windows": {"n_next": 3, "min_history": 3}},
    }
    assert parameters["emoticon"]["protocol"] == {"n_evaluation": 44}  # the input is untouched
    assert parameters["emoticon"]["recommendation"] == {"seeds": [3]}


def test_defaults_without_scenes_are_refused():
    with pytest.raises(ValueError, match="scenes"):
        expand_scene_defaults({"scene_defaults": {"protocol": {"seed": 1}}})


def _write(folder: Path, name: str, content: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(yaml.safe_dump(content))


def test_an_environment_sets_defaults_scenes_and_capabilities_through_the_loader(tmp_path):
    """base and an environment merge first (key by key), then the defaults go to the scenes: the
    environment's default reaches every scene but one whose own value base sets; an environment
    that switches a capability on gives that scene the capability's block."""
    conf = tmp_path / "conf"
    _write(conf / "base", "globals.yml", {"seed": 7})
    _write(
        conf / "base",
        "parameters_scenes.yml",
        {
            "scenes": {"a": {"recommendation": True}, "b": {"recommendation": False}},
            "ablations": {"pmg": {"grid": True}},
        },
    )
    _write(
        conf / "base",
        "parameters_protocol.yml",
        {
            "scene_defaults": {"protocol": {"seed": "${globals:seed}", "n_evaluation": 64}},
            "b": {"protocol": {"n_evaluation": 44}},
        },
    )
    _write(
        conf / "base",
        "parameters_recommendation.yml",
        {"scene_defaults": {"recommendation": {"dim": 64}}},
    )
    _write(
        conf / "small",
        "parameters_protocol.yml",
        {"scene_defaults": {"protocol": {"n_evaluation": 3}}},
    )
    _write(conf / "wide", "parameters_scenes.yml", {"scenes": {"b": {"recommendation": True}}})
    small = project_config_loader("small", conf)["parameters"]
    assert small["a"] == {"protocol": {"seed": 7, "n_evaluation": 3}, "recommendation": {"dim": 64}}
    assert small["b"] == {"protocol": {"seed": 7, "n_evaluation": 44}}
    wide = project_config_loader("wide", conf)["parameters"]
    assert wide["b"]["recommendation"] == {"dim": 64}
    runtime = project_config_loader("small", conf, {"a": {"protocol": {"n_evaluation": 5}}})
    assert runtime["parameters"]["a"]["protocol"]["n_evaluation"] == 5


if __name__ == "__main__":  # rewrite the fixture after changing a parameter on purpose
    FIXTURE.write_text(json.dumps(_resolved(), indent=1, sort_keys=True, ensure_ascii=False) + "\n")
