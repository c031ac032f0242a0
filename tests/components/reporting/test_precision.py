"""`dtype: auto` (issue 28): bfloat16 only where the hardware computes it natively, float32
elsewhere, an explicit dtype always wins; the decision is logged once and kept for provenance.
The hardware is faked both ways, so these tests say the same on every machine."""

from __future__ import annotations

import logging

import pytest
import torch

from pmg_kedro.components.reporting import precision
from pmg_kedro.components.reporting.environment import machine_description

AVX2_FLAGS = {"fpu", "sse4_2", "avx", "avx2", "fma"}
AVX512_NO_BF16_FLAGS = AVX2_FLAGS | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}


@pytest.fixture
def cpu(monkeypatch):
    """Fake this machine's CPU: `cpu(flags, torch_says, machine="x86_64")`."""
    monkeypatch.delenv(precision.AUTO_OVERRIDE_VARIABLE, raising=False)
    monkeypatch.setattr(precision, "_DECISIONS", {})

    def _fake(flags: set[str] | None, torch_says: bool, machine: str = "x86_64") -> None:
        monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
        monkeypatch.setattr(precision, "torch_bf16_supported", lambda: torch_says)
        monkeypatch.setattr(precision.platform, "machine", lambda: machine)

    return _fake


@pytest.mark.parametrize(
    ("flags", "torch_says", "expected"),
    [
        (AVX2_FLAGS, False, "float32"),  # AMD Zen 2/3, Intel before Cooper Lake
        (AVX512_NO_BF16_FLAGS, True, "float32"),  # Skylake-X: torch says yes, oneDNN emulates
        (AVX512_NO_BF16_FLAGS | {"avx512_bf16"}, True, "bfloat16"),  # Cooper Lake, AMD Zen 4
        (AVX512_NO_BF16_FLAGS | {"amx_bf16", "amx_tile"}, True, "bfloat16"),  # Sapphire Rapids
        (AVX512_NO_BF16_FLAGS | {"avx512_bf16"}, False, "float32"),  # a torch built without it
        (None, True, "float32"),  # flags unreadable: not confirmed
    ],
)
def test_auto_is_bfloat16_only_where_the_cpu_computes_it_natively(cpu, flags, torch_says, expected):
    cpu(flags, torch_says)
    choice = precision.resolve_dtype("auto", "cpu")
    assert choice.dtype == expected
    assert choice.requested == "auto"
    assert choice.reason  # says why, in words
    assert precision.cpu_bf16().native is (expected == "bfloat16")


def test_auto_on_arm_follows_torchs_check_of_the_bf16_extension(cpu):
    cpu({"fp", "asimd"}, False, machine="aarch64")
    assert precision.resolve_dtype("auto").dtype == "float32"
    cpu({"fp", "asimd", "bf16"}, True, machine="aarch64")
    assert precision.resolve_dtype("auto").dtype == "bfloat16"


@pytest.mark.parametrize("native", [True, False])
def test_an_explicit_dtype_in_conf_wins_over_the_hardware(cpu, native):
    cpu(AVX2_FLAGS | ({"avx512_bf16"} if native else set()), native)
    assert precision.resolve_dtype("float32").dtype == "float32"
    assert precision.resolve_dtype("bfloat16").dtype == "bfloat16"
    assert precision.resolve_dtype("float32").reason == "set explicitly in conf"
    with pytest.raises(AttributeError):
        precision.resolve_dtype("bfloat17")


def test_the_environment_variable_replaces_autos_answer_but_not_an_explicit_one(cpu, monkeypatch):
    cpu(AVX2_FLAGS | {"avx512_bf16"}, True)
    monkeypatch.setenv(precision.AUTO_OVERRIDE_VARIABLE, "float32")
    choice = precision.resolve_dtype("auto")
    assert choice.dtype == "float32"
    assert precision.AUTO_OVERRIDE_VARIABLE in choice.reason
    assert precision.resolve_dtype("bfloat16").dtype == "bfloat16"
    assert precision.provenance()["auto_cpu_dtype"] == "float32"


def test_auto_on_cuda_is_the_paper_configurations_bfloat16_or_float16(cpu, monkeypatch):
    cpu(AVX2_FLAGS, False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.resolve_dtype("auto", "cuda").dtype == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # a V100
    assert precision.resolve_dtype("auto", "cuda:0").dtype == "float16"


def test_the_decision_is_logged_once_and_recorded_in_the_machine_block(cpu, caplog):
    cpu(AVX2_FLAGS, False)
    with caplog.at_level(logging.INFO, logger=precision.__name__):
        for _ in range(3):
            precision.resolve_dtype("auto", "cpu")
    logged = [r.getMessage() for r in caplog.records if r.name == precision.__name__]
    assert len(logged) == 1
    assert "float32" in logged[0] and "no bfloat16 kernels" in logged[0]
    block = machine_description()["precision"]
    assert block["bf16_native"] is False
    assert block["auto_cpu_dtype"] == "float32"
    assert block["decisions"] == [
        {
            "requested": "auto",
            "device": "cpu",
            "dtype": "float32",
            "reason": logged[0].split(" - ")[1],
        }
    ]


def test_the_llm_loads_in_the_resolved_dtype_and_its_workers_in_the_same(cpu, tiny_llama):
    from pmg_kedro.components.models.sharding import DEFINITION_ATTRIBUTE
    from pmg_kedro.datasets.llm_folder import LLMFolderDataset, load_llm_definition

    for flags, native, expected in (
        (AVX2_FLAGS, False, torch.float32),
        (AVX2_FLAGS | {"avx512_bf16"}, True, torch.bfloat16),
    ):
        cpu(flags, native)
        llm = LLMFolderDataset(path=str(tiny_llama), load_args={"device": "cpu"}).load()
        assert llm.model.dtype == expected
        assert llm.precision.requested == "auto"
        definition = getattr(llm, DEFINITION_ATTRIBUTE)
        # a worker on other hardware must compute in this process's precision
        cpu(set(), False)
        assert definition.config["load_args"]["dtype"] == str(expected).removeprefix("torch.")
        assert load_llm_definition(definition.config).model.dtype == expected
