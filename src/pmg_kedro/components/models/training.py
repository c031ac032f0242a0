"""Training of the embedded defaults on the icon corpus: the generator (small VAE, then a latent
UNet) and the tiny CLIP scorer (projection heads on frozen towers).

The recipe follows what made a tiny text-conditioned diffusion model work (issue 4's measurements):
classifier-free-guidance condition dropout, an EMA of the UNet weights, and enough samples
(~0.5-1M). On CPU only 8x8x4 latents make that affordable, hence the VAE: it is trained first,
briefly, then frozen; its latent statistics set `shift_factor`/`scaling_factor` so the UNet sees
unit-variance inputs as Stable Diffusion's does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pmg_kedro.components.data.images import uint8_to_float
from pmg_kedro.components.models.generator import (
    Generator,
    TextEncoder,
    latent_denoising_loss,
    minilm_encoder,
)
from pmg_kedro.components.models.icon_corpus import IconCorpus
from pmg_kedro.components.models.scorer import TinyClip, contrastive_loss
from pmg_kedro.components.models.training_loop import LoopSettings, WeightEma, run_training

log = logging.getLogger(__name__)


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _images_tensor(corpus: IconCorpus, rows: np.ndarray, device="cpu") -> torch.Tensor:
    return (torch.from_numpy(uint8_to_float(corpus.images[rows])) * 2 - 1).to(device)


def training_device(params: dict) -> torch.device:
    """Where a model trains: the block's `device` (cpu, cuda, cuda:1 ...; default cpu). Batches
    and random draws are made on the CPU and moved, so a seed draws the same numbers anywhere."""
    device = torch.device(params.get("device") or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"model_preparation asks for device {device}, but CUDA is not available")
    return device


def _settings(params: dict, **fixed) -> LoopSettings:
    """The step/time budget, learning rate and log interval of a model_preparation block, plus
    what the model fixes (weight decay, clipping, schedule)."""
    return LoopSettings(
        steps=int(params["steps"]),
        lr=float(params["lr"]),
        time_limit_minutes=params.get("time_limit_minutes"),
        log_every=int(params.get("log_every", 100)),
        **fixed,
    )


def train_vae(corpus: IconCorpus, rows: np.ndarray, params: dict, seed: int, device="cpu"):
    """A small AutoencoderKL (x4 downsampling) trained with L1 + a light KL, on `device`.

    Returns (vae, logged losses, steps done).
    """
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    channels = tuple(params["block_out_channels"])
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels,
        latent_channels=int(params["latent_channels"]),
        layers_per_block=int(params["layers_per_block"]),
        norm_num_groups=int(params["norm_num_groups"]),
        sample_size=int(corpus.images.shape[1]),
        mid_block_add_attention=False,
    ).to(device)
    rng = np.random.default_rng(seed)
    batch = int(params["batch_size"])

    def loss_fn(step: int) -> torch.Tensor:
        x = _images_tensor(corpus, rng.choice(rows, batch), device)
        dist = vae.encode(x).latent_dist
        recon = vae.decode(dist.sample()).sample
        kl = dist.kl().mean() / x[0].numel()
        return (recon - x).abs().mean() + float(params["kl_weight"]) * kl

    run = run_training("vae", vae.parameters(), loss_fn, _settings(params), batch)
    return vae.eval().requires_grad_(False), run.history, run.steps


def _mixed_rows(rng, rows: dict[str, np.ndarray], batch: int, emoji_fraction: float) -> np.ndarray:
    """A batch with a binomial share of emoji rows (they are 6% of the corpus) and garments."""
    if not len(rows["fashion_mnist"]):
        return rng.choice(rows["twemoji"], batch)
    n_emoji = rng.binomial(batch, emoji_fraction) if len(rows["twemoji"]) else 0
    return np.concatenate(
        [rng.choice(rows["twemoji"], n_emoji), rng.choice(rows["fashion_mnist"], batch - n_emoji)]
    ).astype(np.int64)


def finetune_decoder(
    vae, corpus: IconCorpus, rows: dict[str, np.ndarray], params: dict, seed: int, device="cpu"
):
    """Fine-tune only the VAE decoder (encoder frozen, so the latent space the UNet learns is
    unchanged) on emoji-rich batches: the colour of the emoji, rare in the uniform VAE batches.

    Returns (logged losses, steps done).
    """
    vae.requires_grad_(False)
    decoder = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in decoder:
        p.requires_grad_(True)
    rng = np.random.default_rng(seed + 1)
    batch = int(params["batch_size"])
    vae.decoder.train()

    def loss_fn(step: int) -> torch.Tensor:
        picked = _mixed_rows(rng, rows, batch, float(params["emoji_fraction"]))
        x = _images_tensor(corpus, picked, device)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
        return (vae.decode(z).sample - x).abs().mean()

    run = run_training("vae decoder", decoder, loss_fn, _settings(params), batch)
    vae.eval().requires_grad_(False)
    return run.history, run.steps


@torch.no_grad()
def latent_statistics(vae, corpus: IconCorpus, batch: int = 256) -> tuple[torch.Tensor, ...]:
    """Per-image latent mean and std (n, c, h, w) for the whole corpus (on the VAE's device), and
    the global shift/scale."""
    means, stds = [], []
    device = next(vae.parameters()).device
    for sl in tqdm(list(_batches(len(corpus.images), batch)), desc="encode latents", mininterval=5):
        images = _images_tensor(corpus, np.arange(sl.start, sl.stop), device)
        dist = vae.encode(images).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    mean, std = torch.cat(means), torch.cat(stds)
    shift = float(mean.mean())
    scale = float(1.0 / torch.sqrt(((mean - shift) ** 2).mean() + (std**2).mean()))
    return mean, std, shift, scale


@torch.no_grad()
def text_table(encoder: TextEncoder, texts: list[str], batch: int = 256):
    """Token states of every distinct text, padded: (n, tokens, dim), mask (n, tokens)."""
    embs, masks = [], []
    for sl in _batches(len(texts), batch):
        cond = encoder(texts[sl])
        embs.append(cond.embeddings)
        masks.append(cond.mask)
    length = max(e.shape[1] for e in embs)
    emb = torch.cat([torch.nn.functional.pad(e, (0, 0, 0, length - e.shape[1])) for e in embs])
    mask = torch.cat([torch.nn.functional.pad(m, (0, length - m.shape[1])) for m in masks])
    return emb, mask


def build_unet(params: dict, sample_size: int, in_channels: int, cross_attention_dim: int):
    from diffusers import UNet2DConditionModel

    channels = tuple(params["block_out_channels"])
    attn = tuple(params["cross_attention_blocks"])  # per level, True = cross-attention block
    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        block_out_channels=channels,
        layers_per_block=int(params["layers_per_block"]),
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in attn[::-1]),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=int(params["attention_head_dim"]),
        norm_num_groups=int(params["norm_num_groups"]),
    )


@dataclass
class _CaptionTable:
    """Every distinct caption and concept of the corpus (and "") encoded once: embeddings and
    masks by text, and each corpus row's caption and concept as indices into them."""

    encoder: TextEncoder
    emb: torch.Tensor  # (texts, tokens, dim)
    mask: torch.Tensor  # (texts, tokens)
    caption_ix: np.ndarray
    concept_ix: np.ndarray
    empty: int  # the index of "" (classifier-free guidance's unconditional text)

    @classmethod
    def of(
        cls, table, max_length: int, device="cpu", encoder: TextEncoder | None = None
    ) -> _CaptionTable:
        """Encoded on the CPU (the text encoder stays there), kept on `device`; `encoder`: a
        trained generator's own (else a new MiniLM encoder of `max_length` tokens)."""
        encoder = encoder or minilm_encoder(max_length)
        texts = sorted(set(table["caption"]) | set(table["concept"]) | {""})
        text_index = {t: i for i, t in enumerate(texts)}
        emb, mask = (t.to(device) for t in text_table(encoder, texts))
        caption_ix = table["caption"].map(text_index).to_numpy()
        concept_ix = table["concept"].map(text_index).to_numpy()
        return cls(encoder, emb, mask, caption_ix, concept_ix, text_index[""])


def _training_rows(table) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Row indices of the corpus's training split: all, and per source (twemoji, fashion_mnist)."""
    train = table["split"].to_numpy() == "train"
    rows = {
        src: np.flatnonzero(train & (table["source"].to_numpy() == src))
        for src in ("twemoji", "fashion_mnist")
    }
    return np.flatnonzero(train), rows


def _autoencoder(corpus: IconCorpus, all_train, rows, params: dict, seed: int, device="cpu"):
    """The VAE on every training image, then (where `vae_decoder` asks) its decoder fine-tuned;
    returns it and its part of the history (losses, steps, samples)."""
    vae, vae_history, vae_steps = train_vae(corpus, all_train, params["vae"], seed, device)
    decoder_history, decoder_steps = [], 0
    if params.get("vae_decoder") and int(params["vae_decoder"]["steps"]):
        decoder_history, decoder_steps = finetune_decoder(
            vae, corpus, rows, params["vae_decoder"], seed, device
        )
    return vae, {
        "vae_loss": vae_history,
        "vae_steps": vae_steps,
        "vae_samples": vae_steps * int(params["vae"]["batch_size"]),
        "vae_decoder_loss": decoder_history,
        "vae_decoder_steps": decoder_steps,
    }


def _caption_batch_loss(
    idx: np.ndarray, cfg: dict, captions, latents, unet, scheduler, rng, gen, device
) -> torch.Tensor:
    """The denoising loss of one batch of corpus rows `idx`, as both UNet stages draw it: each
    row's caption or concept (`concept_caption_prob`) as text, the empty text for a
    `cond_dropout` share, a latent sampled from the row's posterior (`latents`: per-row mean and
    std, shift, scale), `rng` and `gen` drawn in that order."""
    lat_mean, lat_std, shift, scale = latents
    batch = len(idx)
    use_concept = rng.random(batch) < float(cfg["concept_caption_prob"])
    tix = np.where(use_concept, captions.concept_ix[idx], captions.caption_ix[idx])
    tix[rng.random(batch) < float(cfg["cond_dropout"])] = captions.empty
    tix_t, idx_t = torch.from_numpy(tix).to(device), torch.from_numpy(idx).to(device)
    noise = torch.randn(lat_mean[idx_t].shape, generator=gen).to(device)
    x0 = (lat_mean[idx_t] + lat_std[idx_t] * noise - shift) * scale
    return latent_denoising_loss(
        unet, scheduler, x0, captions.emb[tix_t], captions.mask[tix_t], gen
    ).mean()


def train_generator(
    corpus: IconCorpus, params: dict, checkpoint_dir: str | None = None
) -> tuple[Generator, dict]:
    """VAE, then the latent UNet with CFG dropout and weight EMA, on the corpus's training split,
    then the scene-concept stage where `scene_finetune` asks. Returns the generator (EMA weights,
    on the CPU) and a history (losses per logged step, steps, samples, wall time); the models train
    on `params["device"]`. With `checkpoint_dir`, the EMA generator is saved there every
    `checkpoint_every` steps (a cut-short run leaves weights)."""
    from diffusers import DDPMScheduler

    seed, device = int(params["seed"]), training_device(params)
    table = corpus.table
    all_train, rows = _training_rows(table)
    started = time.perf_counter()
    vae, vae_summary = _autoencoder(corpus, all_train, rows, params, seed, device)
    lat_mean, lat_std, shift, scale = latent_statistics(vae, corpus)
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    log.info("latent shift %.4f scale %.4f, latents %s", shift, scale, tuple(lat_mean.shape[1:]))

    captions = _CaptionTable.of(table, int(params["text"]["max_length"]), device)
    encoder = captions.encoder

    cfg = params["training"]
    torch.manual_seed(seed)
    unet = build_unet(params["unet"], lat_mean.shape[-1], lat_mean.shape[1], encoder.dim).to(device)
    ema = WeightEma(unet, float(cfg["ema_decay"]))
    scheduler = DDPMScheduler(**params["noise_schedule"])
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    batch = int(cfg["batch_size"])
    emoji_fraction = float(cfg["emoji_fraction"]) if len(rows["twemoji"]) else 0.0
    info = {"resolution": int(corpus.images.shape[1]), "recipe": "pmg_kedro model_preparation"}

    def snapshot() -> Generator:
        return Generator(ema.averaged(), encoder, scheduler.config, vae, info)

    def loss_fn(step: int) -> torch.Tensor:
        idx = _mixed_rows(rng, rows, batch, emoji_fraction)
        return _caption_batch_loss(
            idx, cfg, captions, (lat_mean, lat_std, shift, scale), unet, scheduler, rng, gen, device
        )

    def checkpoint(record: dict) -> None:
        done = record["step"] + 1
        if checkpoint_dir and done % int(cfg["checkpoint_every"]) == 0:
            snapshot().save_pretrained(Path(checkpoint_dir))
            log.info("checkpoint at step %d -> %s", done, checkpoint_dir)

    settings = _settings(
        cfg,
        weight_decay=0.0,
        max_grad_norm=1.0,
        schedule="constant_with_warmup",
        warmup_steps=int(cfg["warmup_steps"]),
    )
    unet.train()
    run = run_training("unet", unet.parameters(), loss_fn, settings, batch, [ema, checkpoint])
    wall = time.perf_counter() - started
    generator = snapshot().to("cpu")
    summary = {
        **vae_summary,
        "unet_loss": run.history,
        "unet_steps": run.steps,
        "unet_samples": run.steps * batch,
        "unet_seconds": round(run.seconds, 1),
        "wall_seconds": round(wall, 1),
        "latent_shift": shift,
        "latent_scale": scale,
        "torch_threads": torch.get_num_threads(),
    }
    generator = _scene_stage(generator, corpus, params, summary, started)
    if checkpoint_dir:
        generator.save_pretrained(Path(checkpoint_dir))
    return generator, summary


def scene_stage(generator: Generator, corpus: IconCorpus, params: dict) -> tuple[Generator, dict]:
    """`finetune_scene_concepts` with the generator block's `scene_finetune`, seed and device."""
    return finetune_scene_concepts(
        generator, corpus, params["scene_finetune"], int(params["seed"]), training_device(params)
    )


def _scene_stage(generator: Generator, corpus: IconCorpus, params: dict, summary: dict, started):
    """After the main stage, the scene-concept stage where the block asks for it (its history
    joins `summary`, whose wall time then counts it); else the generator as it is."""
    if not scene_stage_enabled(params):
        return generator
    generator, scene = scene_stage(generator, corpus, params)
    summary |= scene
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    return generator


def scene_stage_enabled(params: dict) -> bool:
    """Whether the generator block asks for the scene-concept fine-tuning stage."""
    stage = params.get("scene_finetune") or {}
    return bool(stage.get("concepts")) and int(stage.get("steps", 0)) > 0


def scene_concept_rows(table, concepts: list[str]) -> np.ndarray:
    """Training-split rows of the corpus whose concept is one of `concepts`; every concept must
    have one (`icon_corpus.always_train` keeps a scene's concepts out of the held-out split)."""
    train = table["split"].to_numpy() == "train"
    missing = [c for c in concepts if not (train & (table["concept"] == c).to_numpy()).any()]
    if missing:
        raise ValueError(
            f"scene concepts without a training image in the icon corpus: {missing} (held out? "
            "list them under model_preparation.icon_corpus.always_train)"
        )
    return np.flatnonzero(train & table["concept"].isin(list(concepts)).to_numpy())


def finetune_scene_concepts(
    generator: Generator, corpus: IconCorpus, params: dict, seed: int, device="cpu"
) -> tuple[Generator, dict]:
    """A trained generator's UNet fine-tuned to draw a scene's own concepts (issue 29: the
    emoticon scene's emoji, which the main stage barely told apart at 32 px).

    Batches hold a binomial `scene_fraction` share of the scene's concept rows (their caption or
    concept name as text, as the main stage) and the rest drawn as the main stage draws them
    (`emoji_fraction` of emoji), so the other concepts are not forgotten; condition dropout as
    the main stage; an EMA of the weights (`ema_decay`) is the result. VAE and text encoder stay
    frozen. Returns the generator (on the CPU) and the stage's history.
    """
    from diffusers import DDPMScheduler

    table = corpus.table
    concepts = list(params["concepts"])
    scene_rows = scene_concept_rows(table, concepts)
    _, rows = _training_rows(table)
    started = time.perf_counter()
    generator = generator.to(device=device, dtype=torch.float32)
    vae = generator.vae
    lat_mean, lat_std, _, _ = latent_statistics(vae, corpus)
    shift, scale = generator._shift, float(vae.config.scaling_factor)
    captions = _CaptionTable.of(table, 0, device, encoder=generator.text_encoder)
    torch.manual_seed(seed)
    unet = generator.unet.train().requires_grad_(True)
    ema = WeightEma(unet, float(params["ema_decay"]))
    scheduler = DDPMScheduler.from_config(generator.noise_scheduler.config)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    batch = int(params["batch_size"])

    def loss_fn(step: int) -> torch.Tensor:
        n_scene = rng.binomial(batch, float(params["scene_fraction"]))
        rest = _mixed_rows(rng, rows, batch - n_scene, float(params["emoji_fraction"]))
        idx = np.concatenate([rng.choice(scene_rows, n_scene), rest]).astype(np.int64)
        return _caption_batch_loss(
            idx,
            params,
            captions,
            (lat_mean, lat_std, shift, scale),
            unet,
            scheduler,
            rng,
            gen,
            device,
        )

    settings = _settings(params, weight_decay=0.0, max_grad_norm=1.0)
    run = run_training("unet scene concepts", unet.parameters(), loss_fn, settings, batch, [ema])
    info = {
        **generator.info,
        "scene_finetune": {
            "concepts": concepts,
            "steps": run.steps,
            "samples": run.steps * batch,
        },
    }
    tuned = Generator(ema.averaged(), generator.text_encoder, scheduler.config, vae, info).to("cpu")
    return tuned, {
        "scene_finetune_loss": run.history,
        "scene_finetune_concepts": concepts,
        "scene_finetune_rows": len(scene_rows),
        "scene_finetune_steps": run.steps,
        "scene_finetune_samples": run.steps * batch,
        "scene_finetune_seconds": round(run.seconds, 1),
        "scene_finetune_wall_seconds": round(time.perf_counter() - started, 1),
    }


@torch.no_grad()
def _image_features(scorer: TinyClip, corpus: IconCorpus, rows: np.ndarray, batch: int = 128):
    feats = []
    for sl in tqdm(list(_batches(len(rows), batch)), desc="image features", mininterval=5):
        x = torch.from_numpy(uint8_to_float(corpus.images[rows[sl]]))
        feats.append(scorer.image_features(x))
    return torch.cat(feats) if feats else torch.zeros(0, scorer.image_tower.num_features)


def scorer_rows(table, fashion_per_class: int, seed: int) -> np.ndarray:
    """Every emoji row and a seeded class-balanced sample of Fashion-MNIST rows."""
    rng = np.random.default_rng(seed)
    fashion = table["source"].to_numpy() == "fashion_mnist"
    parts = [np.flatnonzero(~fashion)]
    for concept in sorted(table.loc[fashion, "concept"].unique()):
        rows = np.flatnonzero(fashion & (table["concept"].to_numpy() == concept))
        parts.append(rng.choice(rows, min(len(rows), fashion_per_class), replace=False))
    return np.sort(np.concatenate(parts))


def train_scorer(corpus: IconCorpus, params: dict) -> tuple[TinyClip, dict]:
    """Projection heads of the tiny CLIP on frozen, precomputed tower features (training split).

    Returns the scorer and a history with the loss curve (held-out retrieval: `heldout_retrieval`).
    """
    seed = int(params["seed"])
    torch.manual_seed(seed)
    scorer = TinyClip(int(params["dim"]), int(params["hidden"]), int(params["image_size"]))
    table = corpus.table
    rows = scorer_rows(table, int(params["fashion_per_class"]), seed)
    split = table["split"].to_numpy()
    train_rows = rows[split[rows] == "train"]
    started = time.perf_counter()
    train_feats = _image_features(scorer, corpus, train_rows)
    texts = sorted(set(table["caption"].iloc[train_rows]) | set(table["concept"].iloc[train_rows]))
    text_index = {t: i for i, t in enumerate(texts)}
    text_feats = torch.cat([scorer.text_features(texts[sl]) for sl in _batches(len(texts), 256)])
    caption_ix = table["caption"].iloc[train_rows].map(text_index).to_numpy()
    concept_ix = table["concept"].iloc[train_rows].map(text_index).to_numpy()
    features_seconds = time.perf_counter() - started

    heads = [p for p in scorer.parameters() if p.requires_grad]
    rng = np.random.default_rng(seed)
    batch = min(int(params["batch_size"]), len(train_rows))
    scorer.train()

    def loss_fn(step: int) -> torch.Tensor:
        # emoji and garments in equal measure, else the 10 garment classes dominate
        pick = rng.choice(len(train_rows), batch, p=_balance(table["source"].iloc[train_rows]))
        use_concept = rng.random(batch) < float(params["concept_caption_prob"])
        tix = torch.from_numpy(np.where(use_concept, concept_ix[pick], caption_ix[pick]))
        return contrastive_loss(
            scorer.project_images(train_feats[torch.from_numpy(pick)]),
            scorer.project_texts(text_feats[tix]),
            tix,
            scorer.logit_scale,
        )

    settings = _settings(params, weight_decay=float(params["weight_decay"]))
    run = run_training("scorer", heads, loss_fn, settings, batch)
    scorer.eval()
    summary = {
        "loss": run.history,
        "steps": run.steps,
        "train_images": len(train_rows),
        "features_seconds": round(features_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    return scorer, summary


def _balance(sources) -> np.ndarray:
    counts = sources.map(sources.value_counts()).to_numpy(dtype=float)
    p = 1.0 / counts
    return p / p.sum()
