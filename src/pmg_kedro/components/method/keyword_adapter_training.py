"""The keyword adapter's training (`keyword_adapter`): LoRA on a copy of LLM_g, on the answer
tokens of the examples only, in batches of whole windows whose shared prompt prefix runs once,
with a validation loss per scene before and after.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from pmg_kedro.components.models.llm import LLM
from pmg_kedro.components.models.params import settings_from_params
from pmg_kedro.components.reporting.environment import json_safe, machine_description, torch_threads

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterTraining:
    """LoRA shape and training budget of the keyword adapter (parameters `training`)."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = (
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    )
    last_layers: int | None = 12  # LoRA in the top layers only: backward stops below them
    steps: int = 200
    batch_size: int = 8
    lr: float = 1.0e-3
    warmup_steps: int = 10
    weight_decay: float = 0.0
    time_limit_minutes: float = 38.0
    max_tokens: int = 512  # longer examples are dropped (counted)
    scene_weights: Mapping[str, float] | None = None  # share of the sampled examples per scene
    validation_users_per_scene: int = 8  # train users held out of training to measure the loss
    validation_examples_per_scene: int = 24
    log_every: int = 10
    seed: int = 0
    torch_threads: int | None = 1
    save_dtype: str = "bfloat16"

    @classmethod
    def from_params(cls, params: Mapping | None) -> AdapterTraining:
        return settings_from_params(cls, params, "keyword adapter training", target_modules=tuple)

    def lora_config(self, num_layers: int) -> dict[str, Any]:
        """`peft.LoraConfig` keyword arguments (JSON-able: they travel in the adapter's header)."""
        config: dict[str, Any] = {
            "r": self.r,
            "lora_alpha": self.alpha,
            "lora_dropout": self.dropout,
            "target_modules": list(self.target_modules),
            "bias": "none",
        }
        if self.last_layers is not None and self.last_layers < num_layers:
            config["layers_to_transform"] = list(range(num_layers - self.last_layers, num_layers))
        return config


def split_validation_users(
    examples: pd.DataFrame, n_users: int, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, validation) examples: per scene, `n_users` train users (seeded) only validate."""
    rng = np.random.default_rng(seed)
    held: set[tuple[str, str]] = set()
    for scene, group in examples.groupby("scene", sort=True):
        users = sorted(group["user_id"].unique())
        n = min(n_users, max(0, len(users) - 1))  # at least one user still trains
        held |= {(scene, u) for u in rng.choice(users, size=n, replace=False)} if n else set()
    is_held = [(s, u) in held for s, u in zip(examples["scene"], examples["user_id"], strict=True)]
    mask = np.asarray(is_held, dtype=bool)
    return examples[~mask].reset_index(drop=True), examples[mask].reset_index(drop=True)


WINDOW_KEY = ["scene", "user_id", "window_end"]


def sample_examples(
    examples: pd.DataFrame, n: int, weights: Mapping[str, float] | None, seed: int
) -> pd.DataFrame:
    """About `n` examples, as whole windows (every attribute of a drawn window, so training shares
    its prompt prefix), drawn (seeded) per scene by `weights` (default: equal); at most all of a
    scene's; windows in a shuffled order, a window's examples together."""
    scenes = sorted(examples["scene"].unique())
    weights = {s: float((weights or {}).get(s, 1.0 if not weights else 0.0)) for s in scenes}
    total = sum(weights.values()) or 1.0
    rng = np.random.default_rng(seed)
    keys = examples[WINDOW_KEY].astype(str).agg("/".join, axis=1)
    chosen = []
    for scene in scenes:
        group = keys[examples["scene"] == scene]
        sizes = group.value_counts(sort=False)
        windows = sizes.index.to_numpy()[rng.permutation(len(sizes))]
        take = np.searchsorted(np.cumsum(sizes[windows].to_numpy()), n * weights[scene] / total)
        chosen += list(windows[: min(len(windows), int(take) + 1)] if weights[scene] else [])
    order = {key: i for i, key in enumerate(chosen[i] for i in rng.permutation(len(chosen)))}
    sampled = examples[keys.isin(order)].assign(_order=keys.map(order))
    return (
        sampled.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    )


def tokenize_examples(llm: LLM, examples: pd.DataFrame) -> list[tuple[list[int], int]]:
    """(token ids, prompt length) per example: the chat prompt (with the example's system prompt,
    "" for the template's default) and answer prefix exactly as `LLM.generate` encodes them, then
    the answer and EOS (the tokens the loss is taken on)."""
    tokenizer = llm.tokenizer
    add_special = tokenizer.chat_template is None  # as `LLM.encode`
    prompts = [
        llm.chat_prompt(m, s or None) + p
        for m, p, s in zip(
            examples["message"], examples["answer_prefix"], examples["system_prompt"], strict=True
        )
    ]
    prompt_ids = tokenizer(prompts, add_special_tokens=add_special)["input_ids"]
    answers = [f" {a}" for a in examples["answer"]]
    answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    return [(p + a + [eos], len(p)) for p, a in zip(prompt_ids, answer_ids, strict=True)]


def window_groups(examples: pd.DataFrame) -> list[list[int]]:
    """Row positions of each window's examples (its attributes), windows in order of appearance."""
    keys = examples[WINDOW_KEY].astype(str).agg("/".join, axis=1).tolist()
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _batches(
    groups: Sequence[Sequence[int]],
    lengths: Sequence[int],
    batch_size: int,
    rng: np.random.Generator,
) -> list[list[list[int]]]:
    """Batches of whole windows holding about `batch_size` examples, in a random order; a shuffled
    pass is cut into chunks of 16 batches, each chunk sorted by length first (less padding)."""
    order = rng.permutation(len(groups)).tolist()
    per_batch = max(1, round(batch_size / np.mean([len(g) for g in groups])))
    chunk = per_batch * 16
    batches = []
    for c in range(0, len(order), chunk):
        part = sorted(order[c : c + chunk], key=lambda g: lengths[groups[g][0]])
        batches += [
            [list(groups[g]) for g in part[b : b + per_batch]]
            for b in range(0, len(part), per_batch)
        ]
    return [batches[i] for i in rng.permutation(len(batches))]


def _shared_prefix_length(tokenized: Sequence[tuple[list[int], int]], rows: Sequence[int]) -> int:
    """Tokens every example of a window starts with, before any answer and one short of the
    shortest prompt (each rest starts inside its prompt)."""
    sequences = [tokenized[i][0] for i in rows]
    limit = min(tokenized[i][1] for i in rows) - 1
    n = 0
    while n < limit and all(s[n] == sequences[0][n] for s in sequences):
        n += 1
    return n


def _collate_shared(
    tokenized: Sequence[tuple[list[int], int]], windows: Sequence[Sequence[int]], pad_id: int
) -> dict[str, torch.Tensor]:
    """A batch of windows: each window's shared prompt prefix once (left-padded), then each
    example's rest (right-padded) with its answer mask and the window (`owner`) it continues.

    The attributes of a window differ only in their question, so its history runs once for all
    of them: about half the tokens of a step, at the same loss (a test checks it).
    """
    cuts = [_shared_prefix_length(tokenized, rows) for rows in windows]
    longest = max(cuts)
    prefix = torch.full((len(windows), longest), pad_id, dtype=torch.long)
    prefix_mask = torch.zeros((len(windows), longest), dtype=torch.long)
    rests, owners, answer_starts = [], [], []
    for w, (rows, cut) in enumerate(zip(windows, cuts, strict=True)):
        if cut:
            prefix[w, longest - cut :] = torch.tensor(tokenized[rows[0]][0][:cut])
            prefix_mask[w, longest - cut :] = 1
        for i in rows:
            tokens, n_prompt = tokenized[i]
            rests.append(tokens[cut:])
            answer_starts.append(n_prompt - cut)
            owners.append(w)
    width = max(len(r) for r in rests)
    rest = torch.full((len(rests), width), pad_id, dtype=torch.long)
    rest_mask = torch.zeros((len(rests), width), dtype=torch.long)
    answer = torch.zeros((len(rests), width), dtype=torch.bool)
    for row, (tokens, start) in enumerate(zip(rests, answer_starts, strict=True)):
        rest[row, : len(tokens)] = torch.tensor(tokens)
        rest_mask[row, : len(tokens)] = 1
        answer[row, start : len(tokens)] = True
    return {
        "prefix_ids": prefix,
        "prefix_mask": prefix_mask,
        "input_ids": rest,
        "attention_mask": rest_mask,
        "answer_mask": answer,
        "owner": torch.tensor(owners, dtype=torch.long),
        "prefix_length": torch.tensor(cuts, dtype=torch.long),
    }


def shared_answer_loss(model, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """`answer_loss` of a `_collate_shared` batch: the prefixes run once, their keys and values
    are gathered for every example that continues them, the rests run on top."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = causal_lm.get_decoder()
    device = next(causal_lm.parameters()).device
    prefix_mask = batch["prefix_mask"].to(device)
    # left padding: positions count real tokens only, as generation computes them
    prefix_positions = (prefix_mask.cumsum(-1) - 1).clamp(min=0)
    cache = decoder(
        input_ids=batch["prefix_ids"].to(device),
        attention_mask=prefix_mask,
        position_ids=prefix_positions,
        use_cache=True,
    ).past_key_values
    owner = batch["owner"].to(device)
    cache.batch_select_indices(owner)  # (windows, ...) -> (examples, ...)
    ids = batch["input_ids"].to(device)
    width = ids.shape[1]
    positions = batch["prefix_length"].to(device)[owner, None] + torch.arange(width, device=device)
    hidden = decoder(
        input_ids=ids,
        attention_mask=torch.cat([prefix_mask[owner], batch["attention_mask"].to(device)], dim=1),
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state  # (examples, rest tokens, hidden)
    predicts = batch["answer_mask"][:, 1:].to(device)  # position i predicts token i + 1
    logits = causal_lm.lm_head(hidden[:, :-1][predicts]).float()  # (answer tokens, vocab)
    targets = ids[:, 1:][predicts]
    loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    return loss, int(targets.numel())


def _collate(
    tokenized: Sequence[tuple[list[int], int]], index: Sequence[int], pad_id: int
) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask and answer mask (True on answer tokens and EOS).

    Right padding keeps every sequence's positions from 0, as left-padded generation computes
    them from the attention mask.
    """
    longest = max(len(tokenized[i][0]) for i in index)
    ids = torch.full((len(index), longest), pad_id, dtype=torch.long)
    attention = torch.zeros((len(index), longest), dtype=torch.long)
    answer = torch.zeros((len(index), longest), dtype=torch.bool)
    for row, i in enumerate(index):
        tokens, n_prompt = tokenized[i]
        ids[row, : len(tokens)] = torch.tensor(tokens)
        attention[row, : len(tokens)] = 1
        answer[row, n_prompt : len(tokens)] = True
    return {"input_ids": ids, "attention_mask": attention, "answer_mask": answer}


def answer_loss(model, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy of the answer tokens and their count.

    Logits are computed at the positions that predict an answer token only: the LM head over all
    prompt positions would cost a quarter of the step for nothing.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = causal_lm.get_decoder()
    device = next(causal_lm.parameters()).device
    ids = batch["input_ids"].to(device)
    hidden = decoder(
        input_ids=ids, attention_mask=batch["attention_mask"].to(device)
    ).last_hidden_state  # (batch, tokens, hidden)
    predicts = batch["answer_mask"][:, 1:].to(device)  # position i predicts token i + 1
    logits = causal_lm.lm_head(hidden[:, :-1][predicts]).float()  # (answer tokens, vocab)
    targets = ids[:, 1:][predicts]
    loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    return loss, int(targets.numel())


@torch.no_grad()
def mean_answer_loss(
    model, tokenized: Sequence[tuple[list[int], int]], pad_id: int, batch_size: int
) -> float:
    """Mean cross-entropy per answer token (nan without examples)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for b in range(0, len(tokenized), batch_size):
        index = list(range(b, min(b + batch_size, len(tokenized))))
        loss, n = answer_loss(model, _collate(tokenized, index, pad_id))
        total, count = total + float(loss), count + n
    model.train(was_training)
    return total / count if count else float("nan")


def train_keyword_lora(
    llm: LLM,
    train: pd.DataFrame,
    validation: pd.DataFrame,
    settings: AdapterTraining,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Train a LoRA adapter on a copy of LLM_g (the shared one is untouched).

    Returns (adapter tensors as `peft.get_peft_model_state_dict` names them, training history:
    losses, the validation loss per scene before and after, steps, wall time, throughput).
    Stops early at `time_limit_minutes` (logged and recorded).
    """
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    start = time.perf_counter()
    with torch_threads(settings.torch_threads):
        torch.manual_seed(settings.seed)
        config = settings.lora_config(llm.num_layers)
        model = get_peft_model(copy.deepcopy(llm.model), LoraConfig(**config))
        pad_id = llm.tokenizer.pad_token_id
        tokenized = tokenize_examples(llm, train)
        keep = [i for i, (t, _) in enumerate(tokenized) if len(t) <= settings.max_tokens]
        dropped = len(tokenized) - len(keep)
        if dropped:
            logger.info("%d examples over %d tokens left out", dropped, settings.max_tokens)
        tokenized = [tokenized[i] for i in keep]
        if not tokenized:
            raise ValueError("keyword adapter: no training example (check the windows and split)")
        validation_sets = {
            scene: tokenize_examples(llm, group)
            for scene, group in validation.groupby("scene", sort=True)
        }
        before = _validation_losses(model, validation_sets, pad_id, settings.batch_size)
        logger.info("keyword adapter: validation loss before training %s", before)
        groups = window_groups(train.iloc[keep].reset_index(drop=True))
        run = _train_steps(model, tokenized, groups, pad_id, settings, start)
        after = _validation_losses(model, validation_sets, pad_id, settings.batch_size)
        logger.info("keyword adapter: validation loss after training %s", after)
        machine = machine_description()
        dtype = getattr(torch, settings.save_dtype)
        tensors = {
            k: v.detach().to(dtype).contiguous()
            for k, v in get_peft_model_state_dict(model).items()
        }
    seconds = run.pop("train_seconds")
    history = {
        "lora_config": config,
        "settings": json_safe(asdict(settings)),
        **run,
        "planned_steps": settings.steps,
        "train_examples_available": len(tokenized),
        "examples_over_max_tokens": dropped,
        "train_seconds": round(seconds, 1),
        "wall_seconds": round(time.perf_counter() - start, 1),
        "examples_per_second": round(run["examples_seen"] / seconds, 3) if seconds else None,
        "tokens_per_second": round(run["tokens_seen"] / seconds, 1) if seconds else None,
        "validation_examples": {s: len(v) for s, v in validation_sets.items()},
        "validation_loss_before": {s: _round(v) for s, v in before.items()},
        "validation_loss_after": {s: _round(v) for s, v in after.items()},
        "machine": machine,
    }
    return tensors, history


def _validation_losses(model, validation_sets, pad_id: int, batch_size: int) -> dict[str, float]:
    return {s: mean_answer_loss(model, v, pad_id, batch_size) for s, v in validation_sets.items()}


def _train_steps(model, tokenized, groups, pad_id: int, settings: AdapterTraining, start: float):
    """The training steps (AdamW, linear warmup and decay, whole windows per batch) until
    `settings.steps` or the time limit (counted from `start`); returns what the history records
    of them: steps_done, stopped_by_time_limit, examples_seen, tokens_seen, train_seconds,
    loss_log, trainable_parameters."""
    from transformers import get_linear_schedule_with_warmup

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, settings.warmup_steps, settings.steps)
    rng = np.random.default_rng(settings.seed)
    lengths = [len(t) for t, _ in tokenized]
    queue: list[list[list[int]]] = []
    log, window_loss, window_tokens = [], 0.0, 0
    tokens_seen, examples_seen, stopped_by_time = 0, 0, False
    train_start = time.perf_counter()
    model.train()
    progress = tqdm(range(settings.steps), desc="keyword adapter (LoRA)", unit="step")
    step = 0
    for step in progress:
        if time.perf_counter() - start > settings.time_limit_minutes * 60:
            stopped_by_time = True
            logger.warning(
                "keyword adapter: time limit %.1f min reached after %d of %d steps",
                settings.time_limit_minutes,
                step,
                settings.steps,
            )
            break
        if not queue:
            queue = _batches(groups, lengths, settings.batch_size, rng)
        batch = _collate_shared(tokenized, queue.pop(), pad_id)
        loss_sum, n = shared_answer_loss(model, batch)
        (loss_sum / n).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        window_loss, window_tokens = window_loss + float(loss_sum.detach()), window_tokens + n
        tokens_seen += int(batch["attention_mask"].sum() + batch["prefix_mask"].sum())
        examples_seen += len(batch["owner"])
        if (step + 1) % settings.log_every == 0 or step + 1 == settings.steps:
            elapsed = time.perf_counter() - train_start
            log.append(
                {
                    "step": step + 1,
                    "loss": round(window_loss / max(window_tokens, 1), 4),
                    "lr": float(schedule.get_last_lr()[0]),
                    "elapsed_s": round(elapsed, 1),
                }
            )
            progress.set_postfix(loss=log[-1]["loss"])
            logger.info(
                "keyword adapter step %d/%d: answer loss %.3f, %.2f examples/s, %.0f tokens/s",
                step + 1,
                settings.steps,
                log[-1]["loss"],
                examples_seen / elapsed,
                tokens_seen / elapsed,
            )
            window_loss, window_tokens = 0.0, 0
    else:
        step = settings.steps
    return {
        "steps_done": int(step),
        "stopped_by_time_limit": stopped_by_time,
        "examples_seen": examples_seen,
        "tokens_seen": tokens_seen,
        "train_seconds": time.perf_counter() - train_start,
        "loss_log": log,
        "trainable_parameters": int(sum(p.numel() for p in params)),
    }


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)
