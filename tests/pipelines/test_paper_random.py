"""The paper path end to end on the CPU, so that it cannot rot unnoticed.

`paper_random_tiny` runs `__default__` with the paper's architectures (Llama-2-7B-chat's layout,
Stable Diffusion 1.5, CLIP ViT-L/14) at tiny width and random weights, written by their catalog
entries as folders laid out as downloaded and loaded through the same code as the paper's weights,
with conf/paper_random's parameters (the paper's method settings, a handful of users). The run is
checked against the data contract; the configuration tests check that conf/paper and
conf/paper_random only set keys the code reads and keep the paper's method settings.

The same contract checks a run made elsewhere: `PMG_PAPER_RANDOM_ENV=paper_random
PMG_PAPER_RANDOM_REUSE_RUN=1 pytest tests/pipelines/test_paper_random.py -k "not configuration"` on
the GPU machine after `benchmarks/paper_random_chain.py` (benchmarks/gpu_session.sh does this):
the run is not repeated, its outputs are loaded and checked at that environment's sizes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from pmg_kedro.components.data.images import to_array
from pmg_kedro.components.models.paper_models import SD15
from pmg_kedro.components.models.random_model_folders import MARKER, spec_of
from pmg_kedro.config_loader import project_config_loader
from pmg_kedro.scenes import scene_conf

ENV = "paper_random_tiny"
RUN_ENV = os.environ.get("PMG_PAPER_RANDOM_ENV", ENV)  # whose run the contract tests check
REUSE_RUN = bool(os.environ.get("PMG_PAPER_RANDOM_REUSE_RUN"))  # check a run made beforehand
SCENE_CONF = scene_conf(RUN_ENV)  # the scenes and variants of the run these tests read
SCENES = tuple(SCENE_CONF["scenes"])
CONF = Path(__file__).resolve().parents[2] / "conf"
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.timeout(1200)]
CONTRACT_COLUMNS = {
    "user_id",
    "target",
    "seed",
    "w_p",
    "w_t",
    "d_p",
    "d_t",
    "z",
    "chosen",
    "image_key",
    "variant",
    "steps",
    "mode",
    "guidance_scale",
    "alpha",
}
# Parameters the code reads only when present (`split.get("max_users")`), so base leaves them out.
OPTIONAL_PER_SCENE = {("ingestion", "split", "max_users")}
PARKED: list[str] = []  # the models the run's swap group parked (`run`)


def _loader(env: str):
    return project_config_loader(env, CONF)


def _leaves(tree, prefix=()):
    """Key paths of a parameters tree; YAML anchor blocks (`_name:`) are not parameters."""
    if isinstance(tree, dict) and tree:
        tree = {k: v for k, v in tree.items() if prefix or not str(k).startswith("_")}
        for key, value in tree.items():
            yield from _leaves(value, (*prefix, key))
    else:
        yield prefix


# -- configuration (no run) -------------------------------------------------------------------
@pytest.mark.parametrize("env", ["paper", "paper_random", ENV])
def test_environment_sets_only_parameters_the_code_reads(env):
    """An override of a key base does not have (renamed or removed in code) is a dead setting."""
    base = set(_leaves(_loader("base")["parameters"]))
    optional = {(scene, *key) for scene in SCENES for key in OPTIONAL_PER_SCENE}
    extra = set(_leaves(_loader(env)["parameters"])) - base - optional
    extra = sorted(".".join(k) for k in extra)
    assert extra == [], f"conf/{env} sets parameters base does not have: {extra}"


def test_tiny_environment_links_paper_randoms_parameters():
    """paper_random_tiny differs from paper_random by its models (and the metrics note) only."""
    own = {"parameters_metric_evaluation.yml"}
    full = {p.name for p in (CONF / "paper_random").glob("parameters*.yml")}
    tiny = {p.name for p in (CONF / ENV).glob("parameters*.yml")}
    assert tiny == full
    for name in full - own:
        link = CONF / ENV / name
        assert link.is_symlink(), f"conf/{ENV}/{name} must link conf/paper_random/{name}"
        assert link.resolve() == (CONF / "paper_random" / name).resolve()


def test_paper_random_keeps_the_papers_method_settings():
    paper, random = _loader("paper")["parameters"], _loader("paper_random")["parameters"]
    same = {
        "weighted_generation": [
            "mode",
            "sampler",
            "guidance_scale",
            "weight_ratios",
            "weight_total",
            "alpha",
            "cosine_floor",
            "candidates_per_batch",
            "score_batch_size",
            "max_condition_tokens",
        ],
        "embedding_training": ["sweep", "sweeps", "prompt_template"],
    }
    for scene in SCENES:
        for block, keys in same.items():
            for key in keys:
                assert random[scene][block][key] == paper[scene][block][key], (scene, block, key)
        for key in ("learning_rate", "noise_repeats", "max_tokens"):
            a = random[scene]["embedding_training"]["training"][key]
            assert a == paper[scene]["embedding_training"]["training"][key], (scene, key)
        for block in ("keyword_extraction", "behavior_summarization"):
            assert random[scene][block] == paper[scene][block], (scene, block)
    assert paper["movie"]["weighted_generation"]["max_condition_tokens"] == 77  # CLIP's context


def test_model_entries_and_data_roots_per_environment():
    roots = {}
    for env, device, size in [
        ("paper", "cuda", None),
        ("paper_random", "cuda", "full"),
        (ENV, "cpu", "tiny"),
    ]:
        loader = _loader(env)
        roots[env] = loader["globals"]["data_root"]
        for name in ("llm", "generator", "scorer"):
            dataset = loader["catalog"][name]["dataset"]
            assert dataset["load_args"]["device"] == device, (env, name)
            assert dataset.get("random_init", {}).get("size") == size, (env, name)
            if size:
                assert dataset["path"].startswith(roots[env] + "/"), (env, name)
    roots["base"] = _loader("base")["globals"]["data_root"]
    roots["test"] = _loader("test")["globals"]["data_root"]
    assert len(set(roots.values())) == len(roots), roots


# -- the run ----------------------------------------------------------------------------------
def _size() -> str:
    """The random models' size in the checked run's environment (tiny, or full on a GPU)."""
    return _loader(RUN_ENV)["catalog"]["generator"]["dataset"]["random_init"]["size"]


def _resolution() -> int:
    """SD 1.5's image side at that size: 64 px tiny (8x8 latents), 512 px full."""
    return SD15[_size()]["vae"]["sample_size"]


@pytest.fixture(scope="module")
def run(project_root, request):
    """`kedro run --env paper_random_tiny` (the __default__ pipeline); then a fresh catalog.

    The run is the child process the root conftest started when it collected this module
    (paper_random_background.py), waited for here; without one (REUSE_RUN, another env), as
    before: made here, or (REUSE_RUN) made elsewhere."""
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from tests.pipelines.paper_random_background import STASH_KEY, parked_models

    bootstrap_project(project_root)
    background = request.config.stash.get(STASH_KEY, None)
    if background is not None:
        PARKED[:] = background.wait(timeout=1200)["parked"]
    elif not REUSE_RUN:
        with KedroSession.create(project_path=project_root, env=RUN_ENV) as session:
            session.run()
        PARKED[:] = parked_models()
    with KedroSession.create(project_path=project_root, env=RUN_ENV) as session:
        catalog = session.load_context().catalog
        params = session.load_context().params
    return catalog, params, pipelines["__default__"]


def test_every_output_of_the_default_pipeline_was_written(run):
    catalog, _, pipeline = run
    persisted = [n for n in sorted(pipeline.all_outputs()) if n in catalog]
    assert persisted, "no persisted outputs"
    missing = [n for n in persisted if not catalog.exists(n)]
    assert missing == []


def test_models_are_the_paper_architectures_from_their_folders(run):
    catalog, params, _ = run
    llm, generator, scorer = (catalog.load(n) for n in ("llm", "generator", "scorer"))
    assert type(llm.model).__name__ == "LlamaForCausalLM"
    assert llm.chat_prompt("hi", "sys").endswith("[INST] <<SYS>>\nsys\n<</SYS>>\n\nhi [/INST]")
    assert type(generator.text_encoder.model).__name__ == "CLIPTextModel"
    assert generator.text_encoder.max_length == 77 and generator.text_encoder.attend_padding
    assert generator.resolution == _resolution()
    assert generator.unet.config.cross_attention_dim == generator.text_encoder.dim
    assert type(scorer).__name__ == "OpenClipScorer"
    root = Path(_loader(RUN_ENV)["catalog"]["llm"]["dataset"]["path"]).parent
    for kind, folder in [
        ("llm", "random-llama-2-7b-chat"),
        ("generator", "random-stable-diffusion-v1-5"),
        ("scorer", "random-clip-vit-large-patch14"),
    ]:
        marker = json.loads((root / folder / MARKER).read_text())
        assert marker == spec_of(kind, _size(), 0)
    assert (root / "random-stable-diffusion-v1-5" / "model_index.json").is_file()


def test_the_llm_left_the_device_while_images_were_generated(run):
    """conf/paper_random_tiny puts the three models in one swap group: the run parked the LLM
    when the generator's first inference call came (and every node still got its models)."""
    if RUN_ENV != ENV or REUSE_RUN:
        pytest.skip(f"{RUN_ENV} has no swap group, or its run was made elsewhere")
    assert any(key.startswith("llm:") for key in PARKED), PARKED


@pytest.mark.parametrize("scene", SCENES)
def test_soft_embeddings_live_in_the_clip_text_space(run, scene):
    catalog, params, _ = run
    embeddings = catalog.load(f"{scene}.soft_embeddings")
    if SCENE_CONF["scenes"][scene]["item_images"] != "required":  # movie without posters
        assert "not_applicable" in embeddings["metadata"] and not embeddings["tensors"]
        return
    tensors = embeddings["tensors"]
    dim = catalog.load("generator").text_encoder.dim
    n_tokens = params[scene]["embedding_training"]["sweeps"]["main"][0]["n_tokens"]
    assert tensors and all(t.shape == (n_tokens, dim) for t in tensors.values())
    first, *others = tensors.values()
    assert any(not torch.equal(first, t) for t in others)  # E_m depends on the user's prompt


@pytest.mark.parametrize("scene", SCENES)
def test_generation_follows_the_contract(run, scene):
    catalog, params, _ = run
    wg = params[scene]["weighted_generation"]
    ablations = SCENE_CONF["ablations"]
    report = catalog.load(f"{scene}.personalization_report")
    split = catalog.load(f"{scene}.user_split")
    evaluation = set(split.loc[split["split"] == "evaluation", "user_id"])
    grid = len(wg["weight_ratios"])
    ran = []
    for variant in ablations:
        table = catalog.load(f"{scene}.{variant}.selections")
        images = catalog.load(f"{scene}.{variant}.chosen_images")
        assert set(table.columns) >= CONTRACT_COLUMNS, variant
        if table.empty:
            assert variant in report["not_applicable"] and images == {}, variant
            continue
        ran.append(variant)
        assert set(table["user_id"]) <= evaluation
        assert sorted(table["seed"].unique()) == sorted(wg["seeds"])
        per_pair = table.groupby(["user_id", "seed"])
        assert per_pair["chosen"].sum().eq(1).all(), variant
        a = ablations[variant]
        expected = grid if a["grid"] or a.get("candidates") == "grid" else 1
        assert per_pair.size().eq(expected).all(), variant
        z = wg["alpha"] * np.log(np.maximum(table["d_p"], wg["cosine_floor"]))
        z += (1 - wg["alpha"]) * np.log(np.maximum(table["d_t"], wg["cosine_floor"]))
        np.testing.assert_allclose(table["z"], z, rtol=1e-6)
        best = table.loc[table.groupby(["user_id", "seed"])[a["select_by"]].idxmax()]
        assert best["chosen"].all(), variant
        assert set(images) == {f"{r.user_id}/s{r.seed}" for r in best.itertuples()}
        assert {im.size for im in images.values()} == {(_resolution(),) * 2}
    assert {"without_both", "target_best_of_n"} <= set(ran)
    users = {v: set(catalog.load(f"{scene}.{v}.selections")["user_id"]) for v in ran}
    assert len({frozenset(u) for u in users.values()}) == 1  # every variant: the same users


def test_the_scorer_recomputes_a_chosen_images_d_p(run):
    """The stored d_p is the CLIP scorer's cosine of the saved image with k^p."""
    catalog, params, _ = run
    scene, variant = "costume", "without_embeddings"
    table = catalog.load(f"{scene}.{variant}.selections")
    row = table[table["chosen"]].iloc[0]
    image = catalog.load(f"{scene}.{variant}.chosen_images")[f"{row.user_id}/s{row.seed}"]
    requests = catalog.load(f"{scene}.generation_requests").set_index("user_id")
    scorer = catalog.load("scorer")
    pixels = torch.from_numpy(to_array([image]))
    d_p = scorer.paired_scores(pixels, [[requests.loc[row.user_id, "preference_text"]]])[0]
    assert float(d_p[0]) == pytest.approx(float(row.d_p), abs=1e-5)
