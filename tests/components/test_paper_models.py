"""The paper's architectures at random initialisation (components/models/paper_models.py): published
sizes, folders laid out as downloaded, tokenizers from packages, GPU swap groups."""

import json

import jinja2
import pytest
import torch

from pmg_kedro.components.models import paper_models as pm
from pmg_kedro.components.models.generator import Generator
from pmg_kedro.components.models.gpu_residency import SwapGroup, join_swap_group
from pmg_kedro.components.models.llm import LLM, GenerationSettings
from pmg_kedro.components.models.random_model_folders import MARKER, materialise_random_model
from pmg_kedro.components.models.scorer import OpenClipScorer, load_scorer
from pmg_kedro.datasets.llm_folder import LLMFolderDataset
from pmg_kedro.datasets.model_folder import ModelFolderDataset

pytestmark = pytest.mark.usefixtures("one_thread")


class _Llama2Vocab:
    """Llama-2's tokenizer as `random_llama` reads it: 32,000 tokens, BOS 1, EOS 2."""

    bos_token_id, eos_token_id = 1, 2

    def __len__(self) -> int:
        return 32000


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def llm_tokenizer():
    return pm.llm_tokenizer()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The three tiny random folders, written once through the catalog datasets."""
    root = tmp_path_factory.mktemp("random")
    for kind in ("generator", "scorer"):
        ModelFolderDataset(path=str(root / kind), kind=kind, random_init={"size": "tiny"}).load()
    LLMFolderDataset(path=str(root / "llm"), random_init={"size": "tiny"}).load()
    return root


def test_full_sizes_are_the_published_parameter_counts():
    """Built on the meta device (no memory): the counts of the released checkpoints."""
    assert _count(pm.random_llama("full", _Llama2Vocab(), device="meta")) == 6_738_415_616
    sd = pm.random_stable_diffusion("full", device="meta", tokenizer=pm.clip_tokenizer())
    assert _count(sd["unet"]) == 859_520_964
    assert _count(sd["vae"]) == 83_653_863
    assert _count(sd["text_encoder"]) == 123_060_480
    assert _count(pm.random_open_clip("full", device="meta")) == 427_616_513


def test_clip_tokenizer_is_open_clips_vocabulary():
    """SD 1.5's Hugging Face tokenizer built from open_clip's bundled BPE gives open_clip's ids."""
    import open_clip

    hf = pm.clip_tokenizer()
    reference = open_clip.tokenizer.SimpleTokenizer()
    assert len(hf) == 49408
    for text in ["a movie poster, sci-fi, dark night sky", "Costume: white cotton T-shirt!"]:
        ids = hf(text)["input_ids"]
        expected = reference([text])[0].tolist()
        assert ids == expected[: len(ids)] and expected[len(ids)] == 0  # then open_clip's padding


def test_llama2_chat_template_is_metas_format():
    messages = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "U2"},
    ]
    text = jinja2.Template(pm.LLAMA2_CHAT_TEMPLATE).render(
        messages=messages, bos_token="<s>", eos_token="</s>"
    )
    assert text == "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU1 [/INST] A1 </s><s>[INST] U2 [/INST]"


def test_generator_folder_is_sd15_as_downloaded_and_matches_memory(folders):
    index = json.loads((folders / "generator" / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["scheduler"] == ["diffusers", "PNDMScheduler"]
    files = {p.name for p in (folders / "generator" / "tokenizer").iterdir()}
    assert {"vocab.json", "merges.txt"} <= files and "tokenizer.json" not in files
    loaded = ModelFolderDataset(
        path=str(folders / "generator"), kind="generator", random_init={"size": "tiny"}
    ).load()
    assert isinstance(loaded, Generator) and loaded.resolution == 64  # 8x8 latents, VAE factor 8
    memory = pm.random_generator("tiny", seed=0)
    p, t = loaded.encode_text(["a movie poster", "a red dress"]).split()
    kw = {"seed": 3, "steps": 3, "guidance_scale": 7.5}
    images = loaded.generate([[p, t]], [[1.0, 0.5]], **kw)
    assert images.shape == (1, 3, 64, 64)
    p2, t2 = memory.encode_text(["a movie poster", "a red dress"]).split()
    assert torch.allclose(images, memory.generate([[p2, t2]], [[1.0, 0.5]], **kw), atol=1e-6)


def test_scorer_and_llm_folders_load_as_the_paper_models_do(folders):
    scorer = load_scorer(folders / "scorer")
    assert isinstance(scorer, OpenClipScorer) and scorer.image_size == 32
    memory = pm.random_scorer("tiny", seed=0)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(scorer.score(images, ["cat"]), memory.score(images, ["cat"]), atol=1e-6)
    llm = LLM.from_pretrained(folders / "llm")
    assert type(llm.model).__name__ == "LlamaForCausalLM"
    assert llm.chat_prompt("hi").endswith("[INST] hi [/INST]")
    answers = llm.generate(["hi", "what do you like?"], GenerationSettings(max_new_tokens=4))
    assert llm.last_stats.new_tokens > 0 and len(answers) == 2


def test_materialise_reuses_rebuilds_stale_and_refuses_foreign(folders, tmp_path):
    marker = folders / "scorer" / MARKER
    written = marker.stat().st_mtime_ns
    materialise_random_model("scorer", folders / "scorer", "tiny", seed=0)
    assert marker.stat().st_mtime_ns == written  # same spec: reused
    copy = tmp_path / "scorer"
    materialise_random_model("scorer", copy, "tiny", seed=0)
    before = (copy / "open_clip_model.safetensors").read_bytes()
    materialise_random_model("scorer", copy, "tiny", seed=1)  # stale: rebuilt
    assert json.loads((copy / MARKER).read_text())["seed"] == 1
    assert (copy / "open_clip_model.safetensors").read_bytes() != before
    foreign = tmp_path / "downloaded"
    foreign.mkdir()
    with pytest.raises(FileExistsError, match="downloaded"):
        materialise_random_model("scorer", foreign, "tiny")
    with pytest.raises(ValueError, match="size"):
        ModelFolderDataset(path=str(tmp_path / "x"), kind="scorer", random_init={"size": "huge"})


class _Stub:
    """A model that records where it is moved; loaded to the GPU."""

    def __init__(self):
        self.device = "cuda"

    def to(self, device):
        self.device = str(device)


def test_swap_group_keeps_one_exclusive_user_on_the_device():
    group = SwapGroup("test", "cuda")
    llm, generator = _Stub(), _Stub()
    group.register("llm", llm, _Stub.to)
    group.register("generator", generator, _Stub.to)
    assert group.resident == {"llm", "generator"}  # both arrive on the device they loaded to
    group.activate("generator", exclusive=True)  # images: the LLM leaves
    assert group.resident == {"generator"} and llm.device == "cpu"
    group.activate("llm", exclusive=False)  # training: the LLM returns, the generator stays
    assert group.resident == {"llm", "generator"} and llm.device == "cuda"
    assert group.moves == [("llm", "park"), ("llm", "load")]
    del llm  # released by Kedro: nothing holds it, nothing is moved
    group.activate("generator", exclusive=True)
    assert group.resident == {"generator"} and len(group.moves) == 2


def test_joined_llm_answers_as_before_and_reports_the_group_device(folders):
    llm = LLM.from_pretrained(folders / "llm")
    settings = GenerationSettings(max_new_tokens=5)
    expected = llm.generate(["which colours?"], settings)
    group = SwapGroup("cpu-test", "cpu")
    moved = []
    join_swap_group(llm, group, "llm", lambda _, device: moved.append(str(device)))
    other = _Stub()
    group.register("generator", other, _Stub.to)
    assert llm.generate(["which colours?"], settings) == expected
    assert other.device == "cpu" and group.resident == {"llm"}  # exclusive: the other left
    assert moved == []  # the LLM was resident already
    assert isinstance(llm, LLM) and llm.device == torch.device("cpu")
    with pytest.raises(TypeError, match="swap group"):
        join_swap_group(object(), group, "x", print)
