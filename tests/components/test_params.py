"""Settings from parameters: one key check for the LLM's, MMGCN's and the keyword adapter's."""

from dataclasses import dataclass

import pytest

from pmg_kedro.components.evaluation.mmgcn import MMGCNConfig
from pmg_kedro.components.models.llm import GenerationSettings
from pmg_kedro.components.models.params import known_params


@dataclass(frozen=True)
class _Settings:
    steps: int = 10
    lr: float = 0.1


def test_known_keys_pass_and_missing_ones_take_the_defaults():
    assert _Settings(**known_params(_Settings, {"steps": 3}, "toy")) == _Settings(steps=3)
    assert known_params(_Settings, None, "toy") == {}


def test_an_unknown_key_names_what_was_configured_and_the_fields():
    with pytest.raises(ValueError, match=r"unknown toy parameters \['rate'\]; .*\['lr', 'steps'\]"):
        known_params(_Settings, {"rate": 1}, "toy")
    with pytest.raises(ValueError, match=r"unknown generation parameters \['top_k'\]"):
        GenerationSettings.from_params({"top_k": 5})
    with pytest.raises(ValueError, match=r"unknown MMGCN parameters \['depth'\]"):
        MMGCNConfig.from_params({"depth": 3})
