"""One `from_params` convention: unknown keys refused by name, the same settings as before on
every parameter block the environments hold."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest

from pmg_kedro.components.evaluation.mmgcn import MMGCNConfig
from pmg_kedro.components.method.keyword_adapter_examples import WindowSettings
from pmg_kedro.components.method.keyword_adapter_training import AdapterTraining
from pmg_kedro.components.method.soft_embeddings import TrainingSettings
from pmg_kedro.components.models.llm import GenerationSettings
from pmg_kedro.components.models.params import settings_from_params
from pmg_kedro.config_loader import project_config_loader

ENVIRONMENTS = ("base", "test", "reference", "paper", "paper_random", "paper_random_tiny")


@dataclass(frozen=True)
class Budget:
    steps: int
    lr: float = 0.1
    layers: tuple[int, ...] = ()


def test_unknown_keys_are_named_with_the_allowed_ones():
    with pytest.raises(ValueError) as error:
        settings_from_params(Budget, {"steps": 1, "stpes": 2, "rate": 3}, "training")
    message = str(error.value)
    assert message.startswith("training parameters: unknown key(s) 'rate', 'stpes';")
    assert message.endswith("allowed: steps, lr, layers")


def test_a_missing_key_without_default_is_named():
    with pytest.raises(ValueError, match=r"training parameters: missing key\(s\) 'steps'"):
        settings_from_params(Budget, {"lr": 0.5}, "training")


def test_missing_keys_take_defaults_and_conversions_apply_to_given_ones():
    assert settings_from_params(Budget, {"steps": 2}, "t", layers=tuple) == Budget(2)
    built = settings_from_params(Budget, {"steps": 2, "layers": [1, 2]}, "t", layers=tuple)
    assert built == Budget(2, 0.1, (1, 2)) and isinstance(built.layers, tuple)


# The former `from_params` of each settings class, as they were written before the helper.
def _old_generation(p):
    return GenerationSettings(**p)


def _old_windows(p):
    return WindowSettings(**p)


def _old_adapter_training(p):
    p = dict(p)
    if "target_modules" in p:
        p["target_modules"] = tuple(p["target_modules"])
    return AdapterTraining(**p)


def _old_soft_embedding_training(p):  # dropped unknown keys silently
    return TrainingSettings(**{k: p[k] for k in TrainingSettings.__dataclass_fields__ if k in p})


def _old_mmgcn(p):
    p = dict(p)
    if "ks" in p:
        p["ks"] = tuple(int(k) for k in p["ks"])
    return MMGCNConfig(**p)


def _blocks(params: dict) -> list[tuple[type, object, dict]]:
    """(settings class, its former from_params, block) for every block of one environment."""
    blocks = [(AdapterTraining, _old_adapter_training, params["keyword_adapter_training"])]
    for scene in params["scenes"]:
        p = params[scene]
        kw = p["keyword_extraction"]
        generation = [kw["generation"], kw["target_generation"]]
        generation += [{**kw["generation"], **kw["lora_generation"]}]
        generation += [p["behavior_summarization"]["generation"]]
        blocks += [(GenerationSettings, _old_generation, g) for g in generation]
        blocks.append((WindowSettings, _old_windows, p["keyword_adapter"]["windows"]))
        training = p["embedding_training"]["training"]
        blocks.append((TrainingSettings, _old_soft_embedding_training, training))
        if "recommendation" in p:
            r = p["recommendation"]
            blocks.append((GenerationSettings, _old_generation, r["user_images"]["generation"]))
            blocks.append((MMGCNConfig, _old_mmgcn, r["model"]))
    return blocks


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_every_environments_blocks_give_the_settings_they_gave_before(env):
    params = project_config_loader(env)["parameters"]
    blocks = _blocks(params)
    assert {cls for cls, _, _ in blocks} == {
        GenerationSettings,
        WindowSettings,
        AdapterTraining,
        TrainingSettings,
        MMGCNConfig,
    }
    for cls, old, block in blocks:
        if cls is AdapterTraining:
            block = {k: v for k, v in block.items() if k != "train"}  # the node takes it out
        assert cls.from_params(block) == old(block), (cls.__name__, block)


@pytest.mark.parametrize(
    ("cls", "valid"),
    [
        (GenerationSettings, {}),
        (WindowSettings, {}),
        (AdapterTraining, {}),
        (TrainingSettings, {"steps": 1, "batch_size": 1, "learning_rate": 0.1}),
        (MMGCNConfig, {}),
    ],
)
def test_every_settings_class_refuses_an_unknown_key_by_name(cls, valid):
    allowed = ", ".join(f.name for f in fields(cls))
    with pytest.raises(ValueError, match=r"unknown key\(s\) 'colour'") as error:
        cls.from_params({**valid, "colour": 1})
    assert str(error.value).endswith(f"allowed: {allowed}")
