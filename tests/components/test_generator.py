"""Generator interface on both backends at tiny sizes and random initialisation."""

import json

import pytest
import torch

from pmg_kedro.components.models.generator import Condition, Generator, minilm_encoder
from pmg_kedro.components.models.training import build_unet

# Tiny models on a shared CPU run fastest without intra-op threads.
pytestmark = pytest.mark.usefixtures("one_thread")

SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "epsilon",
    "clip_sample": False,
}


def tiny_vae(block_out_channels=(8, 16, 16), latent_channels=4):
    from diffusers import AutoencoderKL

    n = len(block_out_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=block_out_channels,
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
        mid_block_add_attention=False,
    )


@pytest.fixture(scope="module")
def embedded():
    """The embedded layout: UNet on 8x8x4 latents of a small VAE, MiniLM condition tokens."""
    torch.manual_seed(0)
    unet_params = {
        "block_out_channels": [16, 32, 32],
        "cross_attention_blocks": [False, True, True],
        "layers_per_block": 1,
        "attention_head_dim": 8,
        "norm_num_groups": 8,
    }
    unet = build_unet(unet_params, 8, 4, 384)
    return Generator(unet, minilm_encoder(24), SCHEDULE, tiny_vae(), {"resolution": 32})


def clip_tokenizer_files(folder):
    """A byte-level CLIP BPE vocabulary without merges (every byte is a token), as SD ships it."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    chars = [chr(b) for b in bs] + [chr(256 + i) for i in range(256 - len(bs))]
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77})
    )


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """Stable Diffusion 1.5's architecture (UNet, VAE, CLIP text model, PNDM scheduler) at tiny
    width, saved by diffusers' own pipeline as a downloaded snapshot is laid out."""
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("sd15")
    clip_tokenizer_files(root / "tok")
    tokenizer = CLIPTokenizer.from_pretrained(root / "tok")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    unet = UNet2DConditionModel(  # SD 1.5 block layout at tiny width
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
        scaling_factor=0.18215,
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = root / "stable-diffusion-v1-5"
    pipe.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):  # as on the Hub
        (folder / "tokenizer" / name).write_bytes((root / "tok" / name).read_bytes())
    return folder


def test_condition_concat_scales_and_stack_pads():
    a = Condition(torch.ones(2, 3), torch.ones(2, dtype=torch.long))
    b = Condition(torch.ones(4, 3), torch.ones(4, dtype=torch.long))
    joined = Condition.concat([a, b], [0.5, 2.0])
    assert joined.embeddings.shape == (6, 3)
    assert torch.equal(joined.embeddings[:2], torch.full((2, 3), 0.5))
    assert torch.equal(joined.embeddings[2:], torch.full((4, 3), 2.0))
    batch = Condition.stack([a, joined])
    assert batch.embeddings.shape == (2, 6, 3)
    assert batch.mask.tolist() == [[1, 1, 0, 0, 0, 0], [1] * 6]
    assert torch.equal(batch[0].embeddings, a.embeddings)  # padding dropped again


def test_encode_text_masks_minilm_padding(embedded):
    cond = embedded.encode_text(["cat face", "a dark patterned ankle boot"])
    assert cond.embeddings.shape[0] == 2 and cond.embeddings.shape[2] == 384
    assert cond.mask.shape == cond.embeddings.shape[:2]
    assert cond.mask[0].sum() < cond.mask[1].sum()  # the short caption is padded
    assert cond[0].embeddings.shape[0] == int(cond.mask[0].sum())


def test_denoising_loss_is_seeded_and_differentiable(embedded):
    cond = embedded.encode_text(["cat face", "sneaker"])
    emb = cond.embeddings.clone().requires_grad_(True)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    loss = embedded.denoising_loss(emb, cond.mask, images, seed=3)
    loss.backward()
    assert loss.dim() == 0 and emb.grad is not None and emb.grad.abs().sum() > 0
    again = embedded.denoising_loss(cond.embeddings, cond.mask, images, seed=3)
    assert torch.allclose(loss.detach(), again)
    per_image = embedded.denoising_loss(
        cond.embeddings, cond.mask, images, seed=3, reduction="none"
    )
    assert per_image.shape == (2,) and torch.allclose(per_image.mean(), again)
    assert not torch.allclose(again, embedded.denoising_loss(emb, cond.mask, images, seed=4))
    # the frozen generator receives no gradient
    assert all(p.grad is None for p in embedded.unet.parameters())


def test_embedding_scale_is_the_papers_formula(embedded):
    """§3.4: M = G(w_p E^p, w_t E^t): weights scale the token embeddings, then concatenate."""
    p, t = embedded.encode_text(["red heart", "ghost"]).split()
    kw = {"seed": 1, "steps": 3, "guidance_scale": 1.5}
    weighted = embedded.generate([[p, t]], [[0.5, 2.0]], **kw)
    manual = Condition.concat([p, t], [0.5, 2.0])
    assert torch.allclose(weighted, embedded.generate([[manual]], [[1.0]], **kw), atol=1e-6)
    assert weighted.shape == (1, 3, 32, 32)
    assert weighted.min() >= 0.0 and weighted.max() <= 1.0
    other = embedded.generate([[p, t]], [[2.0, 0.5]], **kw)
    assert not torch.allclose(weighted, other)


def test_candidates_in_one_batch_match_single_generation(embedded):
    """Padding to the batch's longest condition is masked: a candidate is the same alone."""
    p, t = embedded.encode_text(["cat face", "a dark patterned ankle boot"]).split()
    conditions = [[p], [p, t], [t]]
    weights = [[1.0], [1.0, 0.5], [2.0]]
    for mode in ("embedding_scale", "composed_guidance"):
        kw = {"mode": mode, "seed": 2, "steps": 3, "guidance_scale": 2.0}
        batch = embedded.generate(conditions, weights, **kw)
        assert batch.shape == (3, 3, 32, 32)
        for i in range(3):
            alone = embedded.generate([conditions[i]], [weights[i]], **kw)
            assert torch.allclose(batch[i], alone[0], atol=1e-4), (mode, i)
        assert torch.equal(batch, embedded.generate(conditions, weights, **kw))  # deterministic


def test_composed_guidance_reduces_to_cfg_for_one_condition(embedded):
    (c,) = embedded.encode_text(["rocket"]).split()
    kw = {"seed": 0, "steps": 3, "guidance_scale": 3.0}
    single = embedded.generate([[c]], [[1.0]], mode="composed_guidance", **kw)
    assert torch.allclose(single, embedded.generate([[c]], [[1.0]], **kw), atol=1e-5)
    with pytest.raises(ValueError, match="mode"):
        embedded.generate([[c]], [[1.0]], mode="nope")
    with pytest.raises(ValueError, match="weights"):
        embedded.generate([[c, c]], [[1.0]], mode="composed_guidance")


def test_independent_noise_per_candidate(embedded):
    (c,) = embedded.encode_text(["sun"]).split()
    kw = {"seed": 0, "steps": 2, "guidance_scale": 1.0}
    same = embedded.generate([[c], [c]], [[1.0], [1.0]], **kw)
    different = embedded.generate([[c], [c]], [[1.0], [1.0]], same_noise=False, **kw)
    assert torch.allclose(same[0], same[1])
    assert not torch.allclose(different[0], different[1])


@pytest.mark.parametrize("fp16", [False, True])
def test_embedded_round_trip(embedded, tmp_path, fp16):
    embedded.save_pretrained(tmp_path, fp16=fp16)
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert not (tmp_path / "text_encoder").exists()  # MiniLM comes from its package
    loaded = Generator.from_pretrained(tmp_path)
    assert loaded.resolution == 32 and loaded.dtype == torch.float32
    (c,) = embedded.encode_text(["ship"]).split()
    kw = {"seed": 0, "steps": 2, "guidance_scale": 1.5}
    a = embedded.generate([[c]], [[1.0]], **kw)
    b = loaded.generate([[c]], [[1.0]], **kw)
    assert torch.allclose(a, b, atol=2e-2 if fp16 else 1e-6)


def test_stable_diffusion_folder_loads_and_runs(sd_folder, tmp_path):
    generator = Generator.from_pretrained(sd_folder)
    assert type(generator.text_encoder.model).__name__ == "CLIPTextModel"
    assert generator.resolution == 16
    cond = generator.encode_text(["a movie poster", "sci-fi"])
    assert cond.embeddings.shape == (2, 77, 32)  # SD 1.5: 77 CLIP tokens, padding attended
    assert bool(cond.mask.all())
    emb = cond.embeddings.clone().requires_grad_(True)
    loss = generator.denoising_loss(emb, cond.mask, torch.rand(2, 3, 16, 16), seed=0)
    loss.backward()
    assert emb.grad.abs().sum() > 0
    p, t = cond.split()
    images = generator.generate([[p, t], [p]], [[1.0, 0.5], [1.0]], seed=0, steps=2)
    assert images.shape == (2, 3, 16, 16)
    generator.save_pretrained(tmp_path / "copy")  # keeps its own text encoder and tokenizer
    copy = Generator.from_pretrained(tmp_path / "copy")
    again = copy.generate([[p, t], [p]], [[1.0, 0.5], [1.0]], seed=0, steps=2)
    assert torch.allclose(images, again, atol=1e-6)


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        Generator.from_pretrained(tmp_path)


def test_model_preparation_trains_where_its_device_says_and_refuses_a_missing_gpu():
    from pmg_kedro.components.models.training import training_device

    assert training_device({}) == torch.device("cpu")
    assert training_device({"device": "cpu"}) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="asks for device cuda, but CUDA is not available"):
            training_device({"device": "cuda"})
