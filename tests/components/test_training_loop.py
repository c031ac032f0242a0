"""The one training loop (components/models/training_loop.py) against plain loops written out here: the
loop the embedded weights were trained with must compute the same thing."""

import pytest
import torch

from pmg_kedro.components.models import training_loop
from pmg_kedro.components.models.training_loop import LoopSettings, WeightEma, run_training

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_regression(seed: int = 0):
    """A linear model, fixed data and its MSE loss (a fresh batch per step from a seeded stream)."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    data = torch.Generator().manual_seed(seed)
    target = torch.tensor([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])

    def loss_fn(step: int) -> torch.Tensor:
        x = torch.randn(4, 3, generator=data)
        return ((model(x) - x @ target.T - step) ** 2).mean()

    return model, loss_fn


def test_unet_recipe_matches_the_old_hand_written_loop():
    """AdamW without weight decay, clipping at 1 and the old LambdaLR warm-up, as the UNet loop
    was written before: every loss and the final weights are bit for bit the same."""
    warmup, steps, lr = 3, 7, 0.05
    model, loss_fn = tiny_regression()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    lr_at = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    old_losses, old_lrs = [], []
    for step in range(steps):
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        old_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        lr_at.step()
        old_losses.append(loss.item())

    new, new_loss_fn = tiny_regression()
    records = []
    settings = LoopSettings(
        steps=steps,
        lr=lr,
        weight_decay=0.0,
        max_grad_norm=1.0,
        schedule="constant_with_warmup",
        warmup_steps=warmup,
        log_every=0,
    )
    run = run_training("t", new.parameters(), new_loss_fn, settings, 4, [records.append], False)
    assert run.steps == steps
    assert [r["loss"] for r in records] == old_losses
    # the old lambda at each step: lr * 1/3, 2/3, then the full lr
    assert [r["lr"] for r in records] == old_lrs
    assert old_lrs == pytest.approx([lr / 3, 2 * lr / 3] + [lr] * 5, rel=1e-12)
    for name, value in model.state_dict().items():
        assert torch.equal(new.state_dict()[name], value), name


def test_constant_schedule_and_default_weight_decay_match_plain_adamw():
    """The VAE and scorer recipe: AdamW with its default weight decay, no schedule, no clipping."""
    model, loss_fn = tiny_regression(seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for step in range(5):
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    new, new_loss_fn = tiny_regression(seed=1)
    records = []
    settings = LoopSettings(steps=5, lr=0.01)
    run_training("t", new.parameters(), new_loss_fn, settings, 4, [records.append], False)
    assert [r["lr"] for r in records] == [0.01] * 5
    for name, value in model.state_dict().items():
        assert torch.equal(new.state_dict()[name], value), name


def test_logged_history_is_the_mean_loss_of_each_log_interval():
    w = torch.nn.Parameter(torch.zeros(2))
    records = []
    run = run_training(
        "t",
        [w],
        lambda step: w.sum() * 0 + float(step),  # loss = the step's index
        LoopSettings(steps=7, lr=0.1, log_every=3),
        batch_size=5,
        hooks=[records.append],
        progress=False,
    )
    # steps 1-3 have losses 0, 1, 2 and steps 4-6 losses 3, 4, 5; step 7 is not logged
    assert run.history == [{"step": 3, "loss": 1.0}, {"step": 6, "loss": 4.0}]
    assert [(r["step"], r["loss"]) for r in records] == [(s, float(s)) for s in range(7)]


def test_time_budget_stops_the_loop(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(training_loop.time, "perf_counter", lambda: clock[0])
    w = torch.nn.Parameter(torch.zeros(1))

    def loss_fn(step: int) -> torch.Tensor:
        clock[0] += 20.0  # every step takes 20 s
        return (w**2).sum()

    records = []
    settings = LoopSettings(steps=100, lr=0.1, time_limit_minutes=1, log_every=0)
    run = run_training("t", [w], loss_fn, settings, 1, [records.append], False)
    # 60 s is not over the minute: the step that ends at 80 s is the last
    assert run.steps == 4 and run.seconds == 80.0
    assert [r["seconds"] for r in records] == [20.0, 40.0, 60.0, 80.0]


def test_gradients_are_clipped_to_the_max_norm():
    w = torch.nn.Parameter(torch.zeros(4))
    grads = []
    settings = LoopSettings(steps=2, lr=0.1, max_grad_norm=1.0, log_every=0)
    hooks = [lambda record: grads.append(w.grad.clone())]
    # gradient 10 per element, norm 20: clipped to norm 1, 0.5 per element
    run_training("t", [w], lambda step: 10 * w.sum(), settings, 1, hooks, progress=False)
    assert len(grads) == 2
    for grad in grads:
        torch.testing.assert_close(grad, torch.full((4,), 0.5))


def test_ema_matches_the_closed_form_of_diffusers_decay():
    """EMAModel's decay on its k-th update: d_1 = 0, d_k = min(decay, k / (9 + k)); the average
    after N steps is sum_k (1 - d_k) prod_{j>k} d_j theta_k."""
    decay, steps = 0.5, 12  # the cap binds from k = 10 on (10/19 > 0.5)
    model, loss_fn = tiny_regression(seed=2)
    ema = WeightEma(model, decay)
    thetas = []

    def keep(record: dict) -> None:
        thetas.append([p.detach().clone() for p in model.parameters()])

    settings = LoopSettings(steps=steps, lr=0.05, log_every=0)
    run_training("t", model.parameters(), loss_fn, settings, 4, [ema, keep], False)
    d = [0.0] + [min(decay, k / (9 + k)) for k in range(2, steps + 1)]
    share = [
        (1 - d[k]) * torch.tensor(d[k + 1 :], dtype=torch.float64).prod() for k in range(steps)
    ]
    assert sum(share) == pytest.approx(1.0)
    averaged = ema.averaged()
    for i, param in enumerate(averaged.parameters()):
        expected = sum(float(share[k]) * thetas[k][i].double() for k in range(steps))
        torch.testing.assert_close(param.double(), expected, rtol=1e-5, atol=1e-6)
        assert not param.requires_grad
    # the hand-written EMA before, min(decay, (1 + k) / (10 + k)) from the initial weights, is
    # the same schedule one step ahead: a different average (the documented library swap)
    old = next(tiny_regression(seed=2)[0].parameters()).detach().double()
    for k in range(1, steps + 1):
        d_old = min(decay, (1 + k) / (10 + k))
        old = d_old * old + (1 - d_old) * thetas[k - 1][0].double()
    assert not torch.allclose(next(averaged.parameters()).double(), old, atol=1e-6)
