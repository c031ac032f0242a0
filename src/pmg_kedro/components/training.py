"""Training of the embedded defaults on the icon corpus: the generator (small VAE, then a latent
UNet) and the tiny CLIP scorer (projection heads on frozen towers).

The recipe follows what made a tiny text-conditioned diffusion model work (issue 4's measurements):
classifier-free-guidance condition dropout, an EMA of the UNet weights, and enough samples
(~0.5-1M). On CPU only 8x8x4 latents make that affordable, hence the VAE: it is trained first,
briefly, then frozen; its latent statistics set `shift_factor`/`scaling_factor` so the UNet sees
unit-variance inputs as Stable Diffusion's does.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .generator import Generator, TextEncoder, latent_denoising_loss, minilm_encoder
from .icon_corpus import IconCorpus
from .images import uint8_to_float
from .scorer import TinyClip, contrastive_loss

log = logging.getLogger(__name__)


class Budget:
    """Stops a loop at `steps` or after `minutes` of wall time, whichever comes first."""

    def __init__(self, steps: int, minutes: float | None):
        self.steps, self.seconds = int(steps), None if minutes is None else 60.0 * minutes
        self.start = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def done(self, step: int) -> bool:
        return step >= self.steps or (self.seconds is not None and self.elapsed > self.seconds)


class Throughput:
    """Logs samples/s every `every` steps next to the running mean loss."""

    def __init__(self, name: str, every: int):
        self.name, self.every = name, max(1, int(every))
        self.t0, self.samples, self.losses = time.perf_counter(), 0, []

    def update(self, step: int, total: int, batch: int, loss: float, bar) -> float | None:
        self.samples += batch
        self.losses.append(loss)
        if step % self.every:
            return None
        rate = self.samples / (time.perf_counter() - self.t0)
        mean = float(np.mean(self.losses))
        log.info("%s step %d/%d loss %.4f, %.1f samples/s", self.name, step, total, mean, rate)
        bar.set_postfix(loss=f"{mean:.4f}", samples_per_s=f"{rate:.0f}")
        self.t0, self.samples, self.losses = time.perf_counter(), 0, []
        return mean


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _images_tensor(corpus: IconCorpus, rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(uint8_to_float(corpus.images[rows])) * 2 - 1


def _optimise(name: str, opt, params: dict, batch: int, loss_fn) -> tuple[list[dict], int]:
    """Step `opt` on `loss_fn()` until the step/time budget of `params` ends, with a progress bar
    and throughput log. Returns (logged mean losses, steps done)."""
    budget = Budget(params["steps"], params.get("time_limit_minutes"))
    meter = Throughput(name, params.get("log_every", 100))
    history, step = [], 0
    with tqdm(total=budget.steps, desc=name, mininterval=5) as bar:
        while not budget.done(step):
            loss = loss_fn()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            mean = meter.update(step, budget.steps, batch, loss.item(), bar)
            if mean is not None:
                history.append({"step": step, "loss": mean})
    return history, step


def train_vae(corpus: IconCorpus, rows: np.ndarray, params: dict, seed: int):
    """A small AutoencoderKL (x4 downsampling) trained with L1 + a light KL.

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
    )
    opt = torch.optim.AdamW(vae.parameters(), lr=float(params["lr"]))
    rng = np.random.default_rng(seed)
    batch = int(params["batch_size"])

    def loss_fn() -> torch.Tensor:
        x = _images_tensor(corpus, rng.choice(rows, batch))
        dist = vae.encode(x).latent_dist
        recon = vae.decode(dist.sample()).sample
        kl = dist.kl().mean() / x[0].numel()
        return (recon - x).abs().mean() + float(params["kl_weight"]) * kl

    history, step = _optimise("vae", opt, params, batch, loss_fn)
    return vae.eval().requires_grad_(False), history, step


def _mixed_rows(rng, rows: dict[str, np.ndarray], batch: int, emoji_fraction: float) -> np.ndarray:
    """A batch with a binomial share of emoji rows (they are 6% of the corpus) and garments."""
    if not len(rows["fashion_mnist"]):
        return rng.choice(rows["twemoji"], batch)
    n_emoji = rng.binomial(batch, emoji_fraction) if len(rows["twemoji"]) else 0
    return np.concatenate(
        [rng.choice(rows["twemoji"], n_emoji), rng.choice(rows["fashion_mnist"], batch - n_emoji)]
    ).astype(np.int64)


def finetune_decoder(vae, corpus: IconCorpus, rows: dict[str, np.ndarray], params: dict, seed: int):
    """Fine-tune only the VAE decoder (encoder frozen, so the latent space the UNet learns is
    unchanged) on emoji-rich batches: the colour of the emoji, rare in the uniform VAE batches.

    Returns (logged losses, steps done).
    """
    vae.requires_grad_(False)
    decoder = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in decoder:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(decoder, lr=float(params["lr"]))
    rng = np.random.default_rng(seed + 1)
    batch = int(params["batch_size"])
    vae.decoder.train()

    def loss_fn() -> torch.Tensor:
        x = _images_tensor(corpus, _mixed_rows(rng, rows, batch, float(params["emoji_fraction"])))
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
        return (vae.decode(z).sample - x).abs().mean()

    history, step = _optimise("vae decoder", opt, params, batch, loss_fn)
    vae.eval().requires_grad_(False)
    return history, step


@torch.no_grad()
def latent_statistics(vae, corpus: IconCorpus, batch: int = 256) -> tuple[torch.Tensor, ...]:
    """Per-image latent mean and std (n, c, h, w) for the whole corpus, and the global shift/scale."""
    means, stds = [], []
    for sl in tqdm(list(_batches(len(corpus.images), batch)), desc="encode latents", mininterval=5):
        dist = vae.encode(_images_tensor(corpus, np.arange(sl.start, sl.stop))).latent_dist
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


def _ema_update(ema, model, decay: float) -> None:
    ema_params = [p for p in ema.parameters()]
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)


def train_generator(
    corpus: IconCorpus, params: dict, checkpoint_dir: str | None = None
) -> tuple[Generator, dict]:
    """VAE, then the latent UNet with CFG dropout and weight EMA, on the corpus's training split.

    Returns the generator (EMA weights) and a history: losses per logged step, steps, samples,
    wall time. With `checkpoint_dir`, the EMA generator is saved there every `checkpoint_every`
    steps so a cut-short run still leaves usable weights.
    """
    from diffusers import DDPMScheduler

    seed = int(params["seed"])
    table = corpus.table
    train = table["split"].to_numpy() == "train"
    rows = {
        src: np.flatnonzero(train & (table["source"].to_numpy() == src))
        for src in ("twemoji", "fashion_mnist")
    }
    all_train = np.flatnonzero(train)
    started = time.perf_counter()
    vae, vae_history, vae_steps = train_vae(corpus, all_train, params["vae"], seed)
    decoder_history, decoder_steps = [], 0
    if params.get("vae_decoder") and int(params["vae_decoder"]["steps"]):
        decoder_history, decoder_steps = finetune_decoder(
            vae, corpus, rows, params["vae_decoder"], seed
        )
    lat_mean, lat_std, shift, scale = latent_statistics(vae, corpus)
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    log.info("latent shift %.4f scale %.4f, latents %s", shift, scale, tuple(lat_mean.shape[1:]))

    encoder = minilm_encoder(int(params["text"]["max_length"]))
    texts = sorted(set(table["caption"]) | set(table["concept"]) | {""})
    text_index = {t: i for i, t in enumerate(texts)}
    text_emb, text_mask = text_table(encoder, texts)
    caption_ix = table["caption"].map(text_index).to_numpy()
    concept_ix = table["concept"].map(text_index).to_numpy()

    cfg = params["training"]
    torch.manual_seed(seed)
    unet = build_unet(params["unet"], lat_mean.shape[-1], lat_mean.shape[1], encoder.dim)
    ema = copy.deepcopy(unet).requires_grad_(False)
    scheduler = DDPMScheduler(**params["noise_schedule"])
    opt = torch.optim.AdamW(unet.parameters(), lr=float(cfg["lr"]), weight_decay=0.0)
    warmup = int(cfg["warmup_steps"])
    lr_at = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    batch = int(cfg["batch_size"])
    emoji_fraction = float(cfg["emoji_fraction"]) if len(rows["twemoji"]) else 0.0
    budget = Budget(cfg["steps"], cfg.get("time_limit_minutes"))
    meter = Throughput("unet", cfg["log_every"])
    history, step = [], 0
    info = {"resolution": int(corpus.images.shape[1]), "recipe": "pmg_kedro model_preparation"}

    def snapshot() -> Generator:
        return Generator(copy.deepcopy(ema), encoder, scheduler.config, vae, info)

    unet.train()
    with tqdm(total=budget.steps, desc="unet", mininterval=10) as bar:
        while not budget.done(step):
            idx = _mixed_rows(rng, rows, batch, emoji_fraction)
            use_concept = rng.random(batch) < float(cfg["concept_caption_prob"])
            tix = np.where(use_concept, concept_ix[idx], caption_ix[idx])
            tix[rng.random(batch) < float(cfg["cond_dropout"])] = text_index[""]
            tix_t, idx_t = torch.from_numpy(tix), torch.from_numpy(idx)
            noise = torch.randn(lat_mean[idx_t].shape, generator=gen)
            x0 = (lat_mean[idx_t] + lat_std[idx_t] * noise - shift) * scale
            loss = latent_denoising_loss(
                unet, scheduler, x0, text_emb[tix_t], text_mask[tix_t], gen
            ).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            lr_at.step()
            step += 1
            _ema_update(ema, unet, min(float(cfg["ema_decay"]), (1 + step) / (10 + step)))
            bar.update(1)
            mean = meter.update(step, budget.steps, batch, loss.item(), bar)
            if mean is not None:
                history.append({"step": step, "loss": mean})
            if checkpoint_dir and step % int(cfg["checkpoint_every"]) == 0:
                snapshot().save_pretrained(Path(checkpoint_dir))
                log.info("checkpoint at step %d -> %s", step, checkpoint_dir)
    wall = time.perf_counter() - started
    generator = snapshot()
    summary = {
        "vae_loss": vae_history,
        "unet_loss": history,
        "vae_steps": vae_steps,
        "vae_samples": vae_steps * int(params["vae"]["batch_size"]),
        "vae_decoder_loss": decoder_history,
        "vae_decoder_steps": decoder_steps,
        "unet_steps": step,
        "unet_samples": step * batch,
        "unet_seconds": round(budget.elapsed, 1),
        "wall_seconds": round(wall, 1),
        "latent_shift": shift,
        "latent_scale": scale,
        "torch_threads": torch.get_num_threads(),
    }
    if checkpoint_dir:
        generator.save_pretrained(Path(checkpoint_dir))
    return generator, summary


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
    opt = torch.optim.AdamW(
        heads, lr=float(params["lr"]), weight_decay=float(params["weight_decay"])
    )
    rng = np.random.default_rng(seed)
    batch = min(int(params["batch_size"]), len(train_rows))
    scorer.train()

    def loss_fn() -> torch.Tensor:
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

    history, step = _optimise("scorer", opt, params, batch, loss_fn)
    scorer.eval()
    summary = {
        "loss": history,
        "steps": step,
        "train_images": len(train_rows),
        "features_seconds": round(features_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    return scorer, summary


def _balance(sources) -> np.ndarray:
    counts = sources.map(sources.value_counts()).to_numpy(dtype=float)
    p = 1.0 / counts
    return p / p.sum()
