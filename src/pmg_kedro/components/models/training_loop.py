"""The one training loop of this project: the embedded VAE, its decoder fine-tune, the latent UNet
and the tiny CLIP scorer (`training.py`), and the soft preference embeddings of paper §3.3.2
(`soft_embeddings.py`).

AdamW on the given parameters, a loss per step from the caller, optional gradient clipping, a
`diffusers.optimization.get_scheduler` learning-rate schedule, a step and wall-time budget, a
progress bar and a throughput log. What differs between models (an EMA of the weights,
checkpoints, per-step records) are hooks called after every optimizer step.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

Hook = Callable[[dict], None]


class Untrained:
    """What a training step returns where its environment trains nothing (`train: false`): no new
    weights. A model's dataset keeps the weights it already holds (`ModelFolderDataset`)."""

    def __repr__(self) -> str:
        return "UNTRAINED"


UNTRAINED = Untrained()


@dataclass(frozen=True)
class LoopSettings:
    """Optimizer, schedule and budget of one training run."""

    steps: int
    lr: float
    weight_decay: float = 0.01  # AdamW's own default
    time_limit_minutes: float | None = None  # stop earlier than `steps` when the time is up
    log_every: int = 100  # steps per throughput log line and logged mean loss; 0: no log
    max_grad_norm: float | None = None  # clip the gradient's global norm to this
    schedule: str = "constant"  # a diffusers.optimization.get_scheduler name
    warmup_steps: int = 0


class LoopResult(NamedTuple):
    history: list[dict]  # {"step": steps done, "loss": mean loss since the previous log line}
    steps: int  # optimizer steps done
    seconds: float  # wall time of the loop


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
    """Logs samples/s every `every` steps (never when 0) next to the running mean loss."""

    def __init__(self, name: str, every: int):
        self.name, self.every = name, int(every)
        self.t0, self.samples, self.losses = time.perf_counter(), 0, []

    def update(self, step: int, total: int, batch: int, loss: float, bar) -> float | None:
        """Counts one step; returns the mean loss since the last log line when it logs one."""
        self.samples += batch
        self.losses.append(loss)
        if not self.every or step % self.every:
            return None
        rate = self.samples / (time.perf_counter() - self.t0)
        mean = float(np.mean(self.losses))
        log.info("%s step %d/%d loss %.4f, %.1f samples/s", self.name, step, total, mean, rate)
        bar.set_postfix(loss=f"{mean:.4f}", samples_per_s=f"{rate:.0f}")
        self.t0, self.samples, self.losses = time.perf_counter(), 0, []
        return mean


def run_training(
    name: str,
    parameters: Iterable[torch.nn.Parameter],
    loss_fn: Callable[[int], torch.Tensor],
    settings: LoopSettings,
    batch_size: int,
    hooks: Sequence[Hook] = (),
    progress: bool = True,
) -> LoopResult:
    """Minimise `loss_fn(step)` (step: 0-based index, a scalar tensor back) with AdamW over
    `parameters` until the step or time budget of `settings` ends.

    After every optimizer step each hook gets that step's {"step", "loss", "seconds", "lr"}
    (seconds since the loop started, lr the learning rate the step used). `batch_size` counts the
    samples for the throughput log. Returns the logged mean losses, steps done and wall time.
    """
    from diffusers.optimization import get_scheduler

    parameters = list(parameters)
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    # Start the schedule at last_epoch=0 (hence `initial_lr`, which torch asks for on a resumed
    # schedule) so that optimizer step k uses the schedule's value at k: a warm-up of W steps
    # trains at lr * k / W on step k and at the full lr from step W on, as the embedded UNet was
    # trained. Counted from 0, diffusers' warm-up would spend step 1 at lr 0.
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    schedule = get_scheduler(
        settings.schedule,
        optimizer,
        num_warmup_steps=settings.warmup_steps,
        num_training_steps=settings.steps,  # the decaying schedules (cosine, linear) need it
        last_epoch=0,
    )
    budget = Budget(settings.steps, settings.time_limit_minutes)
    meter = Throughput(name, settings.log_every)
    history, step = [], 0
    with tqdm(total=budget.steps, desc=name, mininterval=5, disable=not progress) as bar:
        while not budget.done(step):
            loss = loss_fn(step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            schedule.step()
            record = {"step": step, "loss": loss.item(), "seconds": budget.elapsed, "lr": lr}
            for hook in hooks:
                hook(record)
            step += 1
            bar.update(1)
            mean = meter.update(step, budget.steps, batch_size, record["loss"], bar)
            if mean is not None:
                history.append({"step": step, "loss": mean})
    return LoopResult(history, step, budget.elapsed)


class WeightEma:
    """An exponential moving average of a module's weights (diffusers' `EMAModel`), updated by
    using the object as a hook of `run_training`; `averaged()` is a copy holding the average.

    EMAModel (use_ema_warmup=False) decays by min(decay, k / (9 + k)) on its k-th update, by 0 on
    the first: the average starts at the weights after step 1. The hand-written EMA that trained
    the committed UNet used min(decay, (1 + k) / (10 + k)) on step k, the same schedule one step
    ahead, so the random initialisation kept a 2/11 share after step 1 (below 1e-9 by step 50);
    the cap is reached at step 8991 instead of 8990 for decay 0.999.
    """

    def __init__(self, module: torch.nn.Module, decay: float):
        from diffusers.training_utils import EMAModel

        self.module = module
        self.ema = EMAModel(module.parameters(), decay=float(decay), foreach=True)
        self._average = copy.deepcopy(module).requires_grad_(False)  # buffers as at the start

    def __call__(self, record: dict) -> None:
        self.ema.step(self.module.parameters())

    def averaged(self) -> torch.nn.Module:
        self.ema.copy_to(self._average.parameters())
        return copy.deepcopy(self._average)
