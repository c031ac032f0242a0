"""The bias-correction LLM of paper §3.3: soft preference embeddings E_m from user behavior.

LLM_f is the frozen LLM with
  * S P-Tuning v2 prefixes (per-layer key/value prefixes, `peft` prefix tuning; S = 4 in the paper),
  * L multimodal tokens appended after the behavior prompt (L = 4 in the paper),
  * a linear mapper from the LLM's hidden size to the generator text encoder's size.
E_m = mapper(final-layer hidden states at the L token positions), shape (batch, L, dim).
E^p = concat(E_m, E_k) along the token axis, E_k the generator's encoding of the preference keywords.

The multimodal tokens are the embedding rows of L new tokens. They are held in their own
parameter instead of being appended to the frozen vocabulary matrix: the same rows, trained alone,
without resizing (and copying) the LLM's embedding table.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pmg_kedro.components.models.params import settings_from_params
from pmg_kedro.components.reporting.environment import torch_threads
from pmg_kedro.components.reporting.stats import minimum_detectable_effect, paired_test


@dataclass(frozen=True)
class SoftEmbeddingConfig:
    """Sizes of the trainable parts; `n_prefixes = 0` switches P-Tuning v2 off (paper Table 2)."""

    n_tokens: int = 4  # L
    n_prefixes: int = 4  # S
    out_dim: int = 384  # hidden size of the generator's text encoder
    hidden_size: int = 0  # of the LLM (filled in from the model)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SoftEmbeddingConfig:
        return cls(**json.loads(text))


class SoftPreferenceEmbedder(nn.Module):
    """Frozen LLM + trainable prefixes, multimodal tokens and mapper (paper §3.3.1, Figure 3)."""

    def __init__(
        self,
        llm,
        n_tokens: int,
        n_prefixes: int,
        out_dim: int,
        seed: int = 0,
        neutral_token: torch.Tensor | None = None,
    ):
        """`neutral_token` (out_dim,): where E_m starts, e.g. the mean token state of the generator's
        empty prompt, so that before training E^p = concat(E_m, E_k) conditions almost like E_k
        alone and training starts from the "w/o embeddings" condition instead of from noise tokens.
        """
        super().__init__()
        if n_tokens < 1:
            raise ValueError(f"n_tokens (L) must be >= 1, got {n_tokens}")
        if n_prefixes < 0:
            raise ValueError(f"n_prefixes (S) must be >= 0, got {n_prefixes}")
        self.llm = llm
        self.config = SoftEmbeddingConfig(n_tokens, n_prefixes, out_dim, llm.hidden_size)
        for p in llm.model.parameters():
            p.requires_grad_(False)
        generator = torch.Generator().manual_seed(seed)
        embeddings = llm.model.get_input_embeddings().weight
        # New token rows start at the statistics of the existing vocabulary rows.
        scale = float(embeddings.detach().float().std())
        self.mm_tokens = nn.Parameter(
            torch.randn(n_tokens, llm.hidden_size, generator=generator) * scale
        )
        self.mapper = nn.Linear(llm.hidden_size, out_dim)
        with torch.no_grad():
            bound = 1.0 / llm.hidden_size**0.5
            if neutral_token is None:
                self.mapper.weight.uniform_(-bound, bound, generator=generator)
                self.mapper.bias.zero_()
            else:
                # a small slope keeps gradients flowing to the tokens and prefixes from step one
                self.mapper.weight.uniform_(-0.1 * bound, 0.1 * bound, generator=generator)
                self.mapper.bias.copy_(neutral_token.float())
        self.prefix = _PrefixTuning(llm.model, n_prefixes, seed) if n_prefixes else None
        self.to(llm.device)  # trainable tensors live beside the LLM (float32 on every device)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Exactly the parameters that train: prefixes, multimodal token rows and the mapper."""
        params = {"mm_tokens": self.mm_tokens}
        params.update({f"mapper.{k}": v for k, v in self.mapper.named_parameters()})
        if self.prefix is not None:
            params.update({f"prefix.{k}": v for k, v in self.prefix.named_parameters()})
        return params

    def forward(self, behavior_prompts: list[str]) -> torch.Tensor:
        """E_m for a batch of behavior prompts: (batch, L, out_dim)."""
        llm = self.llm
        batch = llm.encode([llm.chat_prompt(p) for p in behavior_prompts])
        ids, mask = batch["input_ids"], batch["attention_mask"]
        b, n_tokens = ids.shape[0], self.config.n_tokens
        # Trainable tensors stay float32; the frozen LLM may run in bf16/fp16.
        dtype = llm.model.get_input_embeddings().weight.dtype
        token_embeds = self.mm_tokens.to(llm.device, dtype).unsqueeze(0).expand(b, -1, -1)
        token_mask = torch.ones(b, n_tokens, dtype=mask.dtype, device=mask.device)
        if self.prefix is None:
            # Nothing trainable acts on the prompt: run it once without gradients through the KV
            # cache, then only the L token positions carry gradients (cheaper backward).
            with torch.no_grad():
                cache = llm.model.get_decoder()(
                    input_ids=ids, attention_mask=mask, use_cache=True
                ).past_key_values
            hidden = llm.final_hidden_states(
                inputs_embeds=token_embeds,
                attention_mask=torch.cat([mask, token_mask], dim=1),
                past_key_values=cache,
            )  # (batch, L, hidden)
        else:
            prompt_embeds = llm.model.get_input_embeddings()(ids)
            prefix_cache = self.prefix.past_key_values(b)
            prefix_mask = torch.ones(
                b, self.config.n_prefixes, dtype=mask.dtype, device=mask.device
            )
            hidden = llm.final_hidden_states(
                inputs_embeds=torch.cat([prompt_embeds, token_embeds], dim=1),
                attention_mask=torch.cat([prefix_mask, mask, token_mask], dim=1),
                past_key_values=prefix_cache,
            )[:, -n_tokens:]  # left padding: the L tokens are the last positions of every row
        return self.mapper(hidden.float())

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The small checkpoint: trainable tensors only, never the frozen LLM."""
        return {k: v.detach().cpu().contiguous() for k, v in self.trainable_parameters().items()}

    def save_pretrained(self, path: str | Path, metadata: dict | None = None) -> None:
        """The trainable tensors as one .safetensors file whose header holds the config (and
        `metadata`): the `soft_embedding_model` file the embedding_training pipeline writes."""
        from pmg_kedro.components.models.tensor_files import write_tensors

        write_tensors(
            path, self.trainable_state(), {**(metadata or {}), "config": self.config.to_json()}
        )

    @classmethod
    def from_pretrained(cls, path: str | Path, llm) -> SoftPreferenceEmbedder:
        """The embedder of a saved file around `llm` (the frozen LLM it was trained with: its
        hidden size must match the file's config)."""
        from pmg_kedro.components.models.tensor_files import read_tensors

        saved = read_tensors(path)
        if "config" not in saved["metadata"]:
            raise ValueError(f"{path}: no soft-embedding config in the file's header")
        config = SoftEmbeddingConfig.from_json(saved["metadata"]["config"])
        if config.hidden_size != llm.hidden_size:
            raise ValueError(
                f"{path}: trained on an LLM of hidden size {config.hidden_size}, "
                f"{llm.name} has {llm.hidden_size}"
            )
        model = cls(llm, config.n_tokens, config.n_prefixes, config.out_dim)
        model.load_trainable_state(saved["tensors"])
        return model.eval()

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restore tensors saved by `trainable_state`; shapes and names must match exactly."""
        params = self.trainable_parameters()
        missing, unexpected = set(params) - set(state), set(state) - set(params)
        if missing or unexpected:
            raise ValueError(
                f"soft-embedding checkpoint does not fit this model (config {self.config}): "
                f"missing {sorted(missing)}, unexpected {sorted(unexpected)}"
            )
        with torch.no_grad():
            for name, tensor in state.items():
                if params[name].shape != tensor.shape:
                    raise ValueError(
                        f"soft-embedding tensor {name}: checkpoint shape {tuple(tensor.shape)}, "
                        f"model expects {tuple(params[name].shape)}"
                    )
                params[name].copy_(tensor)


class _PrefixTuning(nn.Module):
    """P-Tuning v2 prefixes through `peft` (PrefixTuningConfig): per-layer key/value prefixes.

    peft's prefix encoder holds the trainable tensor and turns it into the cache format the
    decoder expects (grouped-query attention included); the base model stays untouched.
    """

    def __init__(self, model, n_prefixes: int, seed: int):
        super().__init__()
        from peft import PrefixTuningConfig, get_peft_model

        torch.manual_seed(seed)
        config = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=n_prefixes)
        # get_peft_model wraps `model` without copying it; keep the wrapper out of the module tree
        # so that only the prefix encoder's parameters belong to this module.
        peft_model = get_peft_model(model, config)
        self.encoder = peft_model.prompt_encoder["default"]
        self._peft = [peft_model]

    def past_key_values(self, batch_size: int):
        return self._peft[0].get_prompt(batch_size)


# -- training (paper §3.3.2) ---------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingSettings:
    steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.0
    seed: int = 0
    log_every: int = 10
    # Noise/timestep draws per image and step: the LLM runs once per user, the cheap frozen
    # generator several times, which lowers the variance of the gradient (timesteps dominate it).
    noise_repeats: int = 1
    # The generator's context budget for E^p (None: no cut); see `preference_condition`.
    max_tokens: int | None = None
    # The LLM's attention implementation while training (`LLM.attention`; None keeps the
    # model's). On a CPU "eager" trains faster than SDPA, whose flash-attention backward there
    # was a third of a step; on a GPU SDPA's kernels are the fast ones.
    attention: str | None = None
    # A step's batch in this many parts, each with its own noise seed and at one torch thread;
    # the step's loss and gradient are the parts' means weighted by their sizes. `threads`
    # computes the parts side by side, on a CPU where one process's torch threads do not speed
    # up this model's small matrices; results depend on `micro_batches`, never on `threads`.
    # The evaluation users' losses after training run their batches in as many threads.
    micro_batches: int = 1
    threads: int = 1

    def __post_init__(self):
        if self.micro_batches < 1 or self.threads < 1:
            raise ValueError(
                f"micro_batches and threads must be >= 1, got {self.micro_batches} and "
                f"{self.threads}"
            )

    @classmethod
    def from_params(cls, params: dict) -> TrainingSettings:
        """Build from a parameters block (`training`); see `params.settings_from_params`."""
        return settings_from_params(cls, params, "soft embedding training")


def preference_condition(soft: torch.Tensor | None, keywords, max_tokens: int | None = None):
    """E^p = concat(E_m, E_k) along the token axis (§3.3.1): the one builder of the preference
    condition, for a batch (soft (batch, L, dim), keywords a batched Condition) or one user
    (soft (L, dim), keywords a single Condition). Either part may be None (the ablations).

    `max_tokens` is the text encoder's context budget (CLIP: 77 in the paper's generator): E_k is
    cut so that L + |E_k| fits, the trade-off paper §4.4.2 measures when L grows. Returns a
    Condition (embeddings, mask) of the keywords' type.
    """
    from pmg_kedro.components.models.generator import Condition

    if soft is None and keywords is None:
        raise ValueError("a preference condition needs soft embeddings, keywords or both")
    if keywords is not None and max_tokens is not None:
        n_soft = 0 if soft is None else soft.shape[-2]
        keep = max(0, int(max_tokens) - n_soft)
        keywords = Condition(keywords.embeddings[..., :keep, :], keywords.mask[..., :keep])
    if soft is None:
        return keywords
    ones = torch.ones(soft.shape[:-1], dtype=torch.long, device=soft.device)
    if keywords is None:
        return Condition(soft, ones)
    soft = soft.to(keywords.embeddings.dtype)
    return Condition(
        torch.cat([soft, keywords.embeddings], dim=-2),
        torch.cat([ones.to(keywords.mask.dtype), keywords.mask], dim=-1),
    )


def train_soft_embeddings(
    model: SoftPreferenceEmbedder,
    generator,
    prompts: list[str],
    keyword_texts: list[str],
    images: torch.Tensor,
    settings: TrainingSettings,
    on_step=None,
    progress: bool = True,
) -> list[dict]:
    """Train prefixes, multimodal tokens and mapper through the frozen generator's denoising loss.

    prompts[i]: the behavior prompt of the earlier history items of user i; images[i]: the image
    of that user's last history item (the supervision, §3.3.2); keyword_texts[i]: the preference
    keywords (E_k). Returns one record per step (step, loss, seconds).
    """
    from pmg_kedro.components.models.training_loop import LoopSettings, run_training

    if not prompts:
        raise ValueError("no training examples: every user lacks a supervision image")
    sampler = torch.Generator().manual_seed(settings.seed)
    keywords = generator.encode_text(keyword_texts)  # frozen: encoded once
    k = settings.noise_repeats
    parameters = list(model.trainable_parameters().values())

    def part_loss(idx: torch.Tensor, seed: int) -> torch.Tensor:
        soft = model([prompts[i] for i in idx])
        condition = preference_condition(soft, _rows(keywords, idx), settings.max_tokens)
        return generator.denoising_loss(
            condition.embeddings.repeat_interleave(k, dim=0),
            condition.mask.repeat_interleave(k, dim=0),
            images[idx].repeat_interleave(k, dim=0),
            seed=seed,
        )

    def loss_fn(step: int) -> torch.Tensor:
        idx = torch.randperm(len(prompts), generator=sampler)[: settings.batch_size]
        seed = settings.seed * 1_000_003 + step
        if settings.micro_batches == 1:
            return part_loss(idx, seed)
        return _micro_batched(part_loss, idx, seed, settings.micro_batches, parameters, pool)

    history = []

    def keep(record: dict) -> None:
        history.append({key: record[key] for key in ("step", "loss", "seconds")})
        if on_step is not None:
            on_step(history[-1])

    loop = LoopSettings(
        steps=settings.steps,
        lr=settings.learning_rate,
        weight_decay=settings.weight_decay,
        log_every=settings.log_every,
    )
    # micro-batches run at one torch thread each, however many threads run them: float
    # reductions depend on the torch thread count, and the result must not depend on `threads`
    parted = settings.micro_batches > 1
    with (
        model.llm.attention(settings.attention),
        ThreadPoolExecutor(settings.threads if parted else 1, "soft-embeddings") as pool,
        torch_threads(1 if parted else None),
    ):
        run_training(
            "soft embeddings",
            parameters,
            loss_fn,
            loop,
            batch_size=min(settings.batch_size, len(prompts)),
            hooks=[keep],
            progress=progress,
        )
    return history


def _micro_batched(part_loss, idx, seed: int, micro_batches: int, parameters, pool):
    """A step's loss from `micro_batches` parts of the batch `idx`, part m with noise seed
    seed * micro_batches + m, their gradients computed in `pool`'s threads: the size-weighted
    means of the parts' losses and gradients, as a loss whose backward hands those gradients to
    `parameters` (`_WithGradients`)."""
    parts = [part for part in idx.tensor_split(micro_batches) if len(part)]

    def gradients(m: int):
        loss = part_loss(parts[m], seed * micro_batches + m)
        return loss.detach(), torch.autograd.grad(loss, parameters)

    results = list(pool.map(gradients, range(len(parts))))  # in part order
    weights = [len(part) / len(idx) for part in parts]
    loss = sum(w * value for w, (value, _) in zip(weights, results, strict=True))
    grads = [
        sum(w * g[j] for w, (_, g) in zip(weights, results, strict=True))
        for j in range(len(parameters))
    ]
    return _WithGradients.apply(loss, grads, *parameters)


class _WithGradients(torch.autograd.Function):
    """The loss of a step whose micro-batches' gradients were computed already: its value is
    `loss`, and its backward hands each parameter its gradient (scaled by the incoming one)."""

    @staticmethod
    def forward(ctx, loss, gradients, *parameters):
        ctx.gradients = gradients
        return loss.clone()

    @staticmethod
    def backward(ctx, grad):
        return (None, None, *(grad * g for g in ctx.gradients))


def heldout_losses(
    model: SoftPreferenceEmbedder | None,
    generator,
    prompts: list[str],
    keyword_texts: list[str],
    images: torch.Tensor,
    seeds: list[int],
    batch_size: int = 16,
    max_tokens: int | None = None,
    threads: int = 1,
) -> dict[str, np.ndarray]:
    """Denoising losses of held-out users' supervision images under each condition.

    Conditions: `pmg` E^p = concat(E_m, E_k); `without_embeddings` E_k only (paper's
    "w/o embeddings"); `without_keywords` E_m only (when a model is given). Every condition sees
    the same noise and timesteps (one seed per repeat), so differences come from the condition.
    Returns, per condition, the losses (users, seeds): paired across conditions.
    Every batch runs at one torch thread (float reductions depend on the thread count, and the
    losses must not depend on `threads`); `threads` > 1 scores batches side by side, for a CPU
    where one process's torch threads do not speed up these small models (as the training's
    micro-batches). A batch's losses depend on its users and seeds alone.
    """
    n = len(keyword_texts)
    if model is not None and len(prompts) != n:
        raise ValueError(f"{len(prompts)} prompts for {n} keyword texts")
    if n == 0:
        raise ValueError("no held-out examples to score")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")

    @torch.no_grad()  # per thread: grad mode is thread-local
    def batch_losses(start: int) -> dict[str, np.ndarray]:
        sl = slice(start, start + batch_size)
        keywords = generator.encode_text(keyword_texts[sl])
        conditions = {"without_embeddings": (keywords.embeddings, keywords.mask)}
        if model is not None:
            soft = model(prompts[sl])
            pmg = preference_condition(soft, keywords, max_tokens)
            soft_only = preference_condition(soft.to(keywords.embeddings.dtype), None)
            conditions["pmg"] = (pmg.embeddings, pmg.mask)
            conditions["without_keywords"] = (soft_only.embeddings, soft_only.mask)
        losses = {}
        for name, (emb, mask) in conditions.items():
            per_seed = [
                generator.denoising_loss(emb, mask, images[sl], seed=seed, reduction="none")
                for seed in seeds
            ]
            losses[name] = torch.stack(per_seed, dim=1).float().cpu().numpy()
        return losses

    starts = range(0, n, batch_size)
    with (
        ThreadPoolExecutor(min(threads, len(starts)), "heldout-losses") as pool,
        torch_threads(1),
    ):
        batches = list(pool.map(batch_losses, starts))
    return {name: np.concatenate([b[name] for b in batches]) for name in batches[0]}


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> dict:
    """a - b for paired (user, seed) losses of shape (users, seeds): each user's mean difference
    over seeds, then the mean over users with its standard error, 95% bootstrap interval over
    users (seeded) and Wilcoxon p (`reporting.stats.paired_test`), the minimum detectable effect of
    the per-user differences (`mde`, with its alpha, power and note) and the share of (user, seed)
    pairs where a < b."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if diff.ndim == 1:
        diff = diff[:, None]
    per_user = diff.mean(axis=1)
    n = per_user.size
    test = paired_test(per_user, n_boot, seed, 0.95)
    return {
        "mean_difference": test["mean_difference"],
        "standard_error": float(per_user.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan"),
        "ci95": [test["ci_low"], test["ci_high"]],
        "wilcoxon_p": test["wilcoxon_p"],
        **minimum_detectable_effect(per_user),
        "share_lower": float((diff < 0).mean()),
        "users": int(n),
        "pairs": int(diff.size),
    }


def _rows(condition, idx):
    return type(condition)(condition.embeddings[idx], condition.mask[idx])
