"""The run's environment: the thread count of a block, the machine, JSON-safe values."""

import json

import numpy as np
import pytest
import torch

from pmg_kedro.components.reporting.environment import json_safe, machine_description, torch_threads


def test_a_block_runs_with_its_thread_count_and_restores_it_even_on_error():
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    with torch_threads(wanted):
        assert torch.get_num_threads() == wanted
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(wanted):
        raise RuntimeError("a failing node")
    assert torch.get_num_threads() == before
    for unset in (None, 0):
        with torch_threads(unset):
            assert torch.get_num_threads() == before


def test_the_machine_names_cpu_cores_threads_and_versions():
    machine = machine_description()
    assert machine["torch_threads"] == torch.get_num_threads()
    assert machine["torch"] == torch.__version__ and machine["cores"] >= 1
    assert machine_description(torch_threads=3)["torch_threads"] == 3
    json.dumps(machine, allow_nan=False)


def test_json_safe_values_are_plain_json():
    value = {
        1: (np.float32(0.5), float("nan")),
        "nested": {"n": np.int64(3), "flags": [np.bool_(True)], "nan": np.float64("nan")},
    }
    safe = json_safe(value)
    assert safe == {"1": [0.5, None], "nested": {"n": 3, "flags": [True], "nan": None}}
    assert type(safe["nested"]["n"]) is int and type(safe["nested"]["flags"][0]) is bool
    json.dumps(safe, allow_nan=False)
