"""Bias-correction LLM (paper §3.3) on a tiny random Llama and a tiny random generator."""

import json

import numpy as np
import pytest
import torch

from pmg_kedro.components.method.soft_embeddings import (
    SoftPreferenceEmbedder,
    TrainingSettings,
    heldout_losses,
    paired_difference,
    preference_condition,
    train_soft_embeddings,
)
from pmg_kedro.components.models.llm import LLM
from pmg_kedro.components.reporting.environment import torch_threads
from pmg_kedro.components.reporting.stats import minimum_detectable_effect

PROMPTS = ["a user who likes cats", "dogs and more dogs", "red dresses in summer", "ghost stories"]
KEYWORDS = ["cat, cute", "dog, park", "red, dress", "ghost, night"]


@pytest.fixture()
def llm(tiny_llama):
    return LLM.from_pretrained(tiny_llama)


@pytest.mark.parametrize("n_prefixes", [4, 0])
def test_output_shape_and_only_adapter_parameters_are_trainable(llm, n_prefixes):
    model = SoftPreferenceEmbedder(llm, n_tokens=3, n_prefixes=n_prefixes, out_dim=384)
    soft = model(PROMPTS[:2])
    assert soft.shape == (2, 3, 384)
    names = set(model.trainable_parameters())
    expected = {"mm_tokens", "mapper.weight", "mapper.bias"}
    assert names - expected == ({"prefix.encoder.embedding.weight"} if n_prefixes else set())
    assert names >= expected
    assert not any(p.requires_grad for p in llm.model.parameters())


@pytest.mark.parametrize("n_prefixes", [4, 0])
def test_training_changes_the_adapter_and_nothing_else(llm, tiny_generator, n_prefixes):
    model = SoftPreferenceEmbedder(llm, n_tokens=2, n_prefixes=n_prefixes, out_dim=384)
    frozen_llm = {k: v.clone() for k, v in llm.model.state_dict().items()}
    frozen_unet = {k: v.clone() for k, v in tiny_generator.unet.state_dict().items()}
    before = {k: v.detach().clone() for k, v in model.trainable_parameters().items()}
    images = torch.rand(4, 3, 8, 8)
    history = train_soft_embeddings(
        model,
        tiny_generator,
        PROMPTS,
        KEYWORDS,
        images,
        TrainingSettings(steps=3, batch_size=2, learning_rate=1e-2),
        progress=False,
    )
    assert len(history) == 3 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    for name, param in model.trainable_parameters().items():
        assert not torch.equal(param.detach(), before[name]), f"{name} did not train"
    for name, value in llm.model.state_dict().items():
        assert torch.equal(value, frozen_llm[name]), f"frozen LLM tensor {name} changed"
    for name, value in tiny_generator.unet.state_dict().items():
        assert torch.equal(value, frozen_unet[name]), f"frozen UNet tensor {name} changed"


def test_kv_cache_path_matches_a_full_forward(llm):
    """Without prefixes the prompt runs once under no_grad; E_m must equal the plain forward."""
    model = SoftPreferenceEmbedder(llm, n_tokens=3, n_prefixes=0, out_dim=16)
    fast = model(PROMPTS[:3])
    batch = llm.encode([llm.chat_prompt(p) for p in PROMPTS[:3]])
    embeds = llm.model.get_input_embeddings()(batch["input_ids"])
    tokens = model.mm_tokens.unsqueeze(0).expand(3, -1, -1)
    mask = torch.cat([batch["attention_mask"], torch.ones(3, 3, dtype=torch.long)], dim=1)
    hidden = llm.final_hidden_states(
        inputs_embeds=torch.cat([embeds, tokens], 1), attention_mask=mask
    )
    torch.testing.assert_close(fast, model.mapper(hidden[:, -3:]), rtol=1e-4, atol=1e-5)


def test_trainable_state_round_trips_and_rejects_another_shape(llm):
    a = SoftPreferenceEmbedder(llm, n_tokens=2, n_prefixes=4, out_dim=8, seed=1)
    b = SoftPreferenceEmbedder(llm, n_tokens=2, n_prefixes=4, out_dim=8, seed=2)
    b.load_trainable_state(a.trainable_state())
    torch.testing.assert_close(a(PROMPTS[:2]), b(PROMPTS[:2]))
    c = SoftPreferenceEmbedder(llm, n_tokens=4, n_prefixes=4, out_dim=8)
    with pytest.raises(ValueError, match="mm_tokens"):
        c.load_trainable_state(a.trainable_state())
    d = SoftPreferenceEmbedder(llm, n_tokens=2, n_prefixes=0, out_dim=8)
    with pytest.raises(ValueError, match="unexpected"):
        d.load_trainable_state(a.trainable_state())


def test_heldout_losses_are_paired_per_user_and_seed(llm, tiny_generator):
    model = SoftPreferenceEmbedder(llm, n_tokens=2, n_prefixes=0, out_dim=384)
    images = torch.rand(4, 3, 8, 8)
    losses = heldout_losses(model, tiny_generator, PROMPTS, KEYWORDS, images, seeds=[0, 1, 2])
    assert set(losses) == {"pmg", "without_embeddings", "without_keywords"}
    assert all(v.shape == (4, 3) for v in losses.values())
    # the same noise and timesteps for every condition: E_k alone scores the same without a model
    again = heldout_losses(None, tiny_generator, [], KEYWORDS, images, seeds=[0, 1, 2])
    np.testing.assert_allclose(again["without_embeddings"], losses["without_embeddings"])
    assert not np.allclose(losses["pmg"], losses["without_embeddings"])


def test_heldout_losses_in_threads_are_each_users_own_in_order(llm, tiny_generator):
    """Batches scored side by side come back in the users' order, each row the user's own
    losses (what scoring the user alone gives), whatever the thread count."""
    model = SoftPreferenceEmbedder(llm, n_tokens=2, n_prefixes=2, out_dim=384).eval()
    images = torch.rand(4, 3, 8, 8)
    seeds = [0, 1]
    threaded = heldout_losses(
        model, tiny_generator, PROMPTS, KEYWORDS, images, seeds, batch_size=1, threads=2
    )
    plain = heldout_losses(model, tiny_generator, PROMPTS, KEYWORDS, images, seeds, batch_size=1)
    for name in ("pmg", "without_embeddings", "without_keywords"):
        np.testing.assert_array_equal(threaded[name], plain[name])
        for i in range(4):
            alone = heldout_losses(
                model,
                tiny_generator,
                PROMPTS[i : i + 1],
                KEYWORDS[i : i + 1],
                images[i : i + 1],
                seeds,
            )
            np.testing.assert_array_equal(threaded[name][i], alone[name][0])
    assert not np.array_equal(threaded["pmg"][0], threaded["pmg"][1])
    with pytest.raises(ValueError, match="threads"):
        heldout_losses(model, tiny_generator, PROMPTS, KEYWORDS, images, seeds, threads=0)


def test_paired_difference_is_per_user_with_a_bootstrap_interval():
    stats = paired_difference(
        np.array([[1.0, 2.0], [3.0, 2.0], [0.0, 0.0]]),
        np.array([[2.0, 2.0], [4.0, 1.0], [1.0, 1.0]]),
    )
    per_user = np.array([-0.5, 0.0, -1.0])  # each user's mean difference over its seeds
    assert stats["mean_difference"] == pytest.approx(per_user.mean())
    assert stats["standard_error"] == pytest.approx(per_user.std(ddof=1) / np.sqrt(3))
    assert stats["share_lower"] == pytest.approx(4 / 6)
    assert (stats["users"], stats["pairs"]) == (3, 6)
    # the MDE of the per-user differences, not of the (user, seed) ones or of a's losses
    assert stats["mde"] == pytest.approx(minimum_detectable_effect(per_user)["mde"])
    low, high = stats["ci95"]
    assert per_user.min() <= low <= stats["mean_difference"] <= high <= per_user.max()
    # a difference of the same sign for every user: the interval excludes 0
    clear = paired_difference(np.arange(10.0)[:, None], np.arange(10.0)[:, None] + 1)
    assert clear["ci95"] == [-1.0, -1.0]


def test_preference_condition_is_soft_tokens_then_keywords_within_the_budget():
    from pmg_kedro.components.models.generator import Condition

    soft = torch.randn(2, 3, 4)  # (batch, L, dim)
    keywords = Condition(torch.randn(2, 5, 4), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]))
    both = preference_condition(soft, keywords)
    torch.testing.assert_close(both.embeddings[:, :3], soft)
    torch.testing.assert_close(both.embeddings[:, 3:], keywords.embeddings)
    assert both.mask.tolist() == [[1, 1, 1, 1, 1, 1, 0, 0], [1] * 8]
    cut = preference_condition(soft, keywords, max_tokens=5)
    assert cut.embeddings.shape == (2, 5, 4)
    torch.testing.assert_close(cut.embeddings[:, 3:], keywords.embeddings[:, :2])
    assert preference_condition(None, keywords[1]).embeddings.shape == (5, 4)
    single = preference_condition(soft[0], None)
    assert single.mask.tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="needs soft embeddings, keywords or both"):
        preference_condition(None, None)


def test_neutral_start_puts_every_soft_token_near_the_given_state(llm):
    neutral = torch.linspace(-1, 1, 384)
    model = SoftPreferenceEmbedder(
        llm, n_tokens=3, n_prefixes=4, out_dim=384, neutral_token=neutral
    )
    soft = model(PROMPTS[:2])
    spread = (soft - neutral).norm(dim=-1) / neutral.norm()
    assert spread.max() < 0.2  # the small initial slope keeps E_m close to where it starts
    assert not torch.allclose(soft[0], soft[1])  # but it still depends on the prompt


def test_noise_repeats_train_on_several_draws_per_image(llm, tiny_generator):
    model = SoftPreferenceEmbedder(llm, n_tokens=2, n_prefixes=0, out_dim=384)
    calls = []
    original = tiny_generator.denoising_loss

    def spy(emb, mask, images, **kw):
        calls.append(images.shape[0])
        return original(emb, mask, images, **kw)

    tiny_generator.denoising_loss = spy
    try:
        settings = TrainingSettings(steps=1, batch_size=2, learning_rate=1e-2, noise_repeats=3)
        train_soft_embeddings(
            model,
            tiny_generator,
            PROMPTS,
            KEYWORDS,
            torch.rand(4, 3, 8, 8),
            settings,
            progress=False,
        )
    finally:
        tiny_generator.denoising_loss = original
    assert calls == [6]


def _plain_loss(model, generator, keywords, images, rows, seed):
    """The denoising loss of users `rows` written out by hand: E^p of their prompts and keywords,
    2 noise repeats per image, one noise seed (what the training loop must compute)."""
    condition = preference_condition(
        model([PROMPTS[i] for i in rows]),
        type(keywords)(keywords.embeddings[rows], keywords.mask[rows]),
    )
    return generator.denoising_loss(
        condition.embeddings.repeat_interleave(2, dim=0),
        condition.mask.repeat_interleave(2, dim=0),
        images[rows].repeat_interleave(2, dim=0),
        seed=seed,
    )


@pytest.mark.parametrize("n_prefixes", [4, 0])
def test_training_loop_is_the_plain_seeded_loop(llm, tiny_generator, n_prefixes):
    """The shared training loop computes what the plain loop written here computes: AdamW on the
    trainable tensors, a seeded batch sampler, one noise seed per step, noise repeats; the same
    losses and tensors bit for bit, one {"step", "loss", "seconds"} record per step."""
    settings = TrainingSettings(
        steps=3, batch_size=3, learning_rate=1e-2, weight_decay=0.1, seed=5, noise_repeats=2
    )
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    reference = SoftPreferenceEmbedder(llm, n_tokens=2, n_prefixes=n_prefixes, out_dim=384)
    model = SoftPreferenceEmbedder(llm, n_tokens=2, n_prefixes=n_prefixes, out_dim=384)
    model.load_trainable_state(reference.trainable_state())

    params = list(reference.trainable_parameters().values())
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    sampler = torch.Generator().manual_seed(5)
    keywords = tiny_generator.encode_text(KEYWORDS)
    expected = []
    for step in range(3):
        idx = torch.randperm(4, generator=sampler)[:3]
        loss = _plain_loss(reference, tiny_generator, keywords, images, idx, 5 * 1_000_003 + step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        expected.append(loss.item())

    seen = []
    history = train_soft_embeddings(
        model, tiny_generator, PROMPTS, KEYWORDS, images, settings, seen.append, progress=False
    )
    assert [h["loss"] for h in history] == expected
    assert [h["step"] for h in history] == [0, 1, 2]
    assert all(set(h) == {"step", "loss", "seconds"} for h in history)
    assert seen == history
    for name, value in reference.trainable_state().items():
        assert torch.equal(model.trainable_state()[name], value), name


@pytest.mark.parametrize("n_prefixes", [2, 0])
def test_save_pretrained_round_trips_through_from_pretrained(llm, tmp_path, n_prefixes):
    model = SoftPreferenceEmbedder(llm, n_tokens=3, n_prefixes=n_prefixes, out_dim=16, seed=5)
    with torch.no_grad():
        model.mapper.weight.add_(0.5)  # a change the round trip must carry
    model.save_pretrained(tmp_path / "e.safetensors", {"seed": 5})
    loaded = SoftPreferenceEmbedder.from_pretrained(tmp_path / "e.safetensors", llm)
    assert loaded.config == model.config
    with torch.no_grad():
        torch.testing.assert_close(loaded(PROMPTS[:2]), model.eval()(PROMPTS[:2]))


def test_from_pretrained_refuses_another_llms_checkpoint(llm, tmp_path):
    from pmg_kedro.components.models.tensor_files import read_tensors, write_tensors

    model = SoftPreferenceEmbedder(llm, n_tokens=2, n_prefixes=0, out_dim=16)
    model.save_pretrained(tmp_path / "e.safetensors")
    saved = read_tensors(tmp_path / "e.safetensors")
    config = json.loads(saved["metadata"]["config"])
    other = {**saved["metadata"], "config": json.dumps({**config, "hidden_size": 4096})}
    write_tensors(tmp_path / "other.safetensors", saved["tensors"], other)
    with pytest.raises(ValueError, match="hidden size 4096"):
        SoftPreferenceEmbedder.from_pretrained(tmp_path / "other.safetensors", llm)


def test_training_runs_under_the_set_attention_and_restores_the_models_own(llm, tiny_generator):
    """`attention: eager` (base, for the CPU) changes how the LLM's attention is computed while
    training, not what: the losses equal SDPA's up to rounding, and the model is left as it was."""
    own = llm.model.config._attn_implementation
    assert own == "sdpa"
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    start = SoftPreferenceEmbedder(llm, n_tokens=2, n_prefixes=2, out_dim=384).trainable_state()
    seen, losses = [], {}
    original = tiny_generator.denoising_loss

    def spy(*args, **kwargs):
        seen.append(llm.model.config._attn_implementation)
        return original(*args, **kwargs)

    tiny_generator.denoising_loss = spy
    try:
        for attention in ("eager", None):
            model = SoftPreferenceEmbedder(llm, n_tokens=2, n_prefixes=2, out_dim=384)
            model.load_trainable_state(start)
            settings = TrainingSettings(
                steps=2, batch_size=2, learning_rate=1e-2, attention=attention
            )
            history = train_soft_embeddings(
                model, tiny_generator, PROMPTS, KEYWORDS, images, settings, progress=False
            )
            losses[attention] = [h["loss"] for h in history]
            assert llm.model.config._attn_implementation == own
    finally:
        tiny_generator.denoising_loss = original
    assert seen == ["eager", "eager", "sdpa", "sdpa"]
    assert np.allclose(losses["eager"], losses[None], rtol=1e-4)


def test_the_llms_attention_context_restores_the_implementation_after_an_error(llm):
    with pytest.raises(RuntimeError, match="inside"), llm.attention("eager"):
        assert llm.model.config._attn_implementation == "eager"
        raise RuntimeError("inside")
    assert llm.model.config._attn_implementation == "sdpa"
    with llm.attention(None):
        assert llm.model.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("threads", [1, 2])
def test_micro_batches_are_the_size_weighted_mean_of_their_seeded_parts(
    llm, tiny_generator, threads
):
    """A step's batch in micro-batches: each part its own noise seed, the loss and gradient the
    parts' means weighted by size (3 users -> parts of 2 and 1), whether the parts run one after
    the other or in two threads: the plain loop written here, bit for bit."""
    settings = TrainingSettings(
        steps=2,
        batch_size=3,
        learning_rate=1e-2,
        seed=5,
        noise_repeats=2,
        micro_batches=2,
        threads=threads,
    )
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    reference = SoftPreferenceEmbedder(llm, n_tokens=2, n_prefixes=2, out_dim=384)
    model = SoftPreferenceEmbedder(llm, n_tokens=2, n_prefixes=2, out_dim=384)
    model.load_trainable_state(reference.trainable_state())

    params = list(reference.trainable_parameters().values())
    optimizer = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.0)
    sampler = torch.Generator().manual_seed(5)
    keywords = tiny_generator.encode_text(KEYWORDS)
    expected = []
    for step in range(2):
        idx = torch.randperm(4, generator=sampler)[:3]
        loss, grads = 0.0, [0.0] * len(params)
        with torch_threads(1):  # micro-batches run at one torch thread each
            for m, part in enumerate((idx[:2], idx[2:])):
                seed = (5 * 1_000_003 + step) * 2 + m
                part_loss = _plain_loss(reference, tiny_generator, keywords, images, part, seed)
                weight = len(part) / 3
                part_grads = torch.autograd.grad(part_loss, params)
                loss = loss + weight * part_loss.item()
                grads = [g + weight * pg for g, pg in zip(grads, part_grads, strict=True)]
        optimizer.zero_grad(set_to_none=True)
        for param, grad in zip(params, grads, strict=True):
            param.grad = grad
        optimizer.step()
        expected.append(loss)

    history = train_soft_embeddings(
        model, tiny_generator, PROMPTS, KEYWORDS, images, settings, progress=False
    )
    np.testing.assert_allclose([h["loss"] for h in history], expected, rtol=1e-6)
    for name, value in reference.trainable_state().items():
        assert torch.equal(model.trainable_state()[name], value), name


def test_the_threads_of_micro_batches_do_not_change_the_result(llm, tiny_generator):
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    start = SoftPreferenceEmbedder(llm, n_tokens=2, n_prefixes=2, out_dim=384).trainable_state()
    trained = {}
    for threads in (1, 2):
        model = SoftPreferenceEmbedder(llm, n_tokens=2, n_prefixes=2, out_dim=384)
        model.load_trainable_state(start)
        settings = TrainingSettings(
            steps=3, batch_size=4, learning_rate=1e-2, micro_batches=2, threads=threads
        )
        losses = train_soft_embeddings(
            model, tiny_generator, PROMPTS, KEYWORDS, images, settings, progress=False
        )
        trained[threads] = ([h["loss"] for h in losses], model.trainable_state())
    assert trained[1][0] == trained[2][0]
    for name, value in trained[1][1].items():
        assert torch.equal(trained[2][1][name], value), name


@pytest.mark.parametrize("field", ["micro_batches", "threads"])
def test_micro_batches_and_threads_below_one_are_refused(field):
    with pytest.raises(ValueError, match="micro_batches and threads must be >= 1"):
        TrainingSettings(steps=1, batch_size=2, learning_rate=1e-2, **{field: 0})
