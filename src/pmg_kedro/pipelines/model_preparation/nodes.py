"""Nodes of `model_preparation`: corpus, training of the embedded defaults, and their checks.

Parameters (`model_preparation`): `enabled` (false in `paper` and `paper_random*`: the first node
stops the run with a message, before anything is read or written), `train` (false in `base`: the
committed weights are kept and only measured), `torch_threads`, and one block per step
(`icon_corpus`, `scorer`, `generator`, `checks`).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import numpy as np
import torch

from ...components.data.images import load_image, read_idx_labels
from ...components.data.sources.fashion_mnist import CLASS_NAMES
from ...components.method.pmg import PMG
from ...components.models.icon_corpus import SHOWCASE_CONCEPTS, IconCorpus, build_icon_corpus
from ...components.models.training_loop import UNTRAINED
from ...components.reporting.environment import torch_threads
from ...components.reporting.figures import image_grid, subplots, text_figure

log = logging.getLogger(__name__)
DISABLED = (
    "model_preparation does not run in this environment (parameter model_preparation.enabled is "
    "false): its generator and scorer are the paper's models, loaded from local folders or built "
    "at random initialisation by their catalog entries, and its LLM_g stays zero-shot "
    "(keyword_extraction.llm_adapter: none), so there is nothing to train or measure here. It "
    "runs in base (checks of the committed embedded weights), test and reference."
)
KEPT = "training disabled in this environment: the committed weights are kept (see MODEL_CARD.md)"


class ModelPreparationDisabled(RuntimeError):
    """Raised by the first node where the environment has nothing to prepare."""


def _with_threads(node):
    """Runs a node under `torch_threads` of its parameters (its last argument): the node's thread
    count, then the process setting again (it used to stay set for every later node)."""

    @functools.wraps(node)
    def run(*args, **kwargs):
        params = kwargs["params"] if "params" in kwargs else args[-1]
        with torch_threads(params.get("torch_threads")):
            return node(*args, **kwargs)

    return run


def ensure_enabled(params: dict) -> None:
    """Stops the run (ModelPreparationDisabled) where `model_preparation.enabled` is false.

    Called first by every node with no upstream node in model_preparation (the corpus and the
    keyword adapter's examples), so a disabled environment writes nothing.
    """
    if not params.get("enabled", True):
        raise ModelPreparationDisabled(DISABLED)


@_with_threads
def build_corpus(params: dict) -> tuple[IconCorpus, dict]:
    """The captioned icon corpus (emoji + Fashion-MNIST, held-out emoji concepts) and its counts.

    The generator's and scorer's nodes depend on it, so where `enabled` is false they never run.
    """
    ensure_enabled(params)
    c = params["icon_corpus"]
    corpus, counts = build_icon_corpus(
        int(c["resolution"]),
        c["fashion_mnist"]["train_images"],
        c["fashion_mnist"]["train_labels"],
        int(c["fashion_per_class"]),
        float(c["heldout_fraction"]),
        int(c["seed"]),
        c.get("emoji_limit"),
        tuple(c.get("always_train") or ()),
    )
    log.info("icon corpus: %s", counts)
    return corpus, counts


@_with_threads
def train_tiny_scorer(corpus: IconCorpus, params: dict) -> tuple[Any, dict]:
    """The tiny CLIP's projection heads trained contrastively; (scorer, training history)."""
    if not params.get("train", False):
        return UNTRAINED, {"skipped": KEPT}
    from ...components.models.training import train_scorer

    return train_scorer(corpus, params["scorer"])


@_with_threads
def train_tiny_generator(corpus: IconCorpus, params: dict) -> tuple[Any, dict]:
    """VAE then latent UNet with CFG dropout and EMA; (generator, training history)."""
    if not params.get("train", False):
        return UNTRAINED, {"skipped": KEPT}
    from ...components.models.training import train_generator

    cfg = params["generator"]
    if cfg.get("start_from"):
        return _finetune_from(cfg["start_from"], corpus, cfg)
    return train_generator(corpus, cfg, cfg.get("checkpoint_dir"))


def _finetune_from(path: str, corpus: IconCorpus, cfg: dict) -> tuple[Any, dict]:
    """Only the scene-concept stage, on the generator saved at `path` (e.g. the committed one:
    `--params model_preparation.generator.start_from=models/embedded/generator`)."""
    from ...components.models.generator import Generator
    from ...components.models.training import scene_stage, scene_stage_enabled

    if not scene_stage_enabled(cfg):
        raise ValueError(
            "model_preparation.generator.start_from is set, but scene_finetune has no concepts or "
            "steps: there is nothing to train on the loaded generator"
        )
    generator = Generator.from_pretrained(path)
    tuned, history = scene_stage(generator, corpus, cfg)
    return tuned, {"start_from": str(path), **history}


def plot_training_curves(generator_history: dict, scorer_history: dict):
    """Loss curves of the VAE, its decoder fine-tuning, the UNet, its scene-concept stage and the
    scorer heads (one figure)."""
    curves = [
        ("generator VAE (L1 + KL)", generator_history.get("vae_loss")),
        ("VAE decoder fine-tuning (L1)", generator_history.get("vae_decoder_loss")),
        ("generator UNet (epsilon MSE)", generator_history.get("unet_loss")),
        ("UNet on the scene's emoji (epsilon MSE)", generator_history.get("scene_finetune_loss")),
        ("scorer heads (contrastive)", scorer_history.get("loss")),
    ]
    if not any(points for _, points in curves):
        return text_figure(generator_history.get("skipped") or "no training in this run")
    fig, axes = subplots(1, len(curves), (4.2 * len(curves), 3.5))
    for ax, (title, points) in zip(axes[0], curves, strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        if points:
            ax.plot([p["step"] for p in points], [p["loss"] for p in points])
            ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "not trained in this run", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    return fig


def _grid(rows: list[tuple[str, np.ndarray]], title: str):
    """One row per label: images float (n, 3, H, W) in [0, 1]."""
    label = {"rotation": 0, "ha": "right", "va": "center", "fontsize": 8}
    return image_grid(
        [(name, list(images)) for name, images in rows],
        title,
        cell_size=(1.1, 1.1),
        margin=(2.2, 0.6),
        title_size=10,
        label_style=label,
        frames=False,
    )


def _generate(generator, captions: list[str], seeds: int, cfg: dict) -> np.ndarray:
    """`seeds` images per caption, all in one denoising batch of distinct noises (`PMG.render`):
    (len(captions) * seeds, 3, H, W)."""
    images = PMG(generator).render(
        captions,
        seed=int(cfg["seed"]),
        steps=int(cfg["steps"]),
        guidance_scale=float(cfg["guidance_scale"]),
        repeats=seeds,
        same_noise=False,
        what="sample grid",
    )
    return images.numpy()


@_with_threads
def render_sample_grids(generator, corpus: IconCorpus, params: dict) -> dict:
    """Sample grids: held-out emoji captions (real first), showcase emoji, Fashion-MNIST classes."""
    cfg = params["checks"]
    seeds = int(cfg["grid_seeds"])
    figures = {}
    table = corpus.table
    held = table.index[table["split"] == "heldout"].to_numpy()
    if len(held):
        rng = np.random.default_rng(int(cfg["seed"]))
        held = rng.choice(held, min(int(cfg["heldout_captions"]), len(held)), replace=False)
        captions = table["caption"].iloc[held].tolist()
        fake = _generate(generator, captions, seeds, cfg).reshape(
            len(held), seeds, 3, *_hw(generator)
        )
        real = corpus.images[held].transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        real = _resize(real, generator.resolution)
        rows = [
            (f"{cap[:28]}", np.concatenate([real[i : i + 1], fake[i]]))
            for i, cap in enumerate(captions)
        ]
        figures["heldout_captions.png"] = _grid(
            rows, "Held-out emoji captions (never trained on): real image, then generated"
        )
    showcase = list(cfg.get("emoji_concepts", SHOWCASE_CONCEPTS))
    fake = _generate(generator, showcase, seeds, cfg).reshape(
        len(showcase), seeds, 3, *_hw(generator)
    )
    figures["emoji_concepts.png"] = _grid(list(zip(showcase, fake, strict=True)), "Emoji concepts")
    classes = list(CLASS_NAMES)
    fake = _generate(generator, classes, seeds, cfg).reshape(
        len(classes), seeds, 3, *_hw(generator)
    )
    figures["fashion_classes.png"] = _grid(
        list(zip(classes, fake, strict=True)), "Fashion-MNIST classes"
    )
    return figures


def _hw(generator) -> tuple[int, int]:
    return generator.resolution, generator.resolution


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[-1] == size:
        return images
    t = torch.nn.functional.interpolate(torch.from_numpy(images), size=(size, size), mode="bicubic")
    return t.clamp(0, 1).numpy()


def _real_fashion(path_images: str, path_labels: str, per_class: int, size: int, seed: int):
    labels = read_idx_labels(path_labels)
    rng = np.random.default_rng(seed)
    offsets = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    )
    images = np.stack(
        [np.asarray(load_image(path_images, int(o), size), dtype=np.float32) / 255 for o in offsets]
    )
    return torch.from_numpy(images.transpose(0, 3, 1, 2)), labels[offsets].astype(int)


@_with_threads
def check_generator(generator, params: dict) -> dict:
    """Class-conditional check and batch cost of the generator.

    A logistic regression on MobileNetV2 features of real Fashion-MNIST test images (it never
    sees generated ones) classifies images generated from the ten class captions; chance is 10%.
    Also times one denoising call for 1 and for `batch_candidates` candidates.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    from ...components.evaluation.features import MobileNetFeatures

    cfg = params["checks"]
    fm = params["icon_corpus"]["fashion_mnist"]
    features = MobileNetFeatures(int(cfg["feature_input_size"]))
    real, labels = _real_fashion(
        fm["test_images"],
        fm["test_labels"],
        int(cfg["classifier_per_class"]),
        generator.resolution,
        int(cfg["seed"]),
    )
    real_feats = features.pooled(real).numpy()
    classifier = LogisticRegression(max_iter=2000, C=float(cfg["classifier_c"]))
    real_cv = cross_val_score(classifier, real_feats, labels, cv=3).mean()
    classifier.fit(real_feats, labels)

    per_class = int(cfg["generated_per_class"])
    started = time.perf_counter()
    fake = torch.from_numpy(_generate(generator, list(CLASS_NAMES), per_class, cfg))
    generation_seconds = time.perf_counter() - started
    predicted = classifier.predict(features.pooled(fake).numpy())
    truth = np.repeat(np.arange(10), per_class)
    per_class_acc = {CLASS_NAMES[c]: float((predicted[truth == c] == c).mean()) for c in range(10)}
    report = {
        "what": "images generated from the 10 Fashion-MNIST class captions, classified by a "
        "logistic regression on ImageNet MobileNetV2 features of real Fashion-MNIST test images",
        "captions": list(CLASS_NAMES),
        "generated_per_class": per_class,
        "top1_accuracy": float((predicted == truth).mean()),
        "chance": 0.1,
        "per_class_accuracy": per_class_acc,
        "classifier_real_cv_accuracy": float(real_cv),
        "classifier_real_images": len(labels),
        "sampling": {k: cfg[k] for k in ("steps", "guidance_scale", "seed")},
        "generation_seconds": round(generation_seconds, 2),
        "batch_cost": batch_cost(generator, cfg),
    }
    log.info("generator check: top-1 %.3f (chance 0.1)", report["top1_accuracy"])
    return report


def batch_cost(generator, cfg: dict) -> dict:
    """Seconds for one `generate` call with 1 and with `batch_candidates` candidates."""
    cond = generator.encode_text(["sneaker", "cat face"]).split()
    n = int(cfg["batch_candidates"])
    timings = {}
    for size in (1, n):
        conditions = [[cond[0], cond[1]]] * size
        weights = [[1.0, 0.5]] * size
        best = float("inf")
        for _ in range(int(cfg["timing_repeats"])):
            t0 = time.perf_counter()
            generator.generate(conditions, weights, seed=0, steps=int(cfg["timing_steps"]))
            best = min(best, time.perf_counter() - t0)
        timings[size] = best
    return {
        "steps": int(cfg["timing_steps"]),
        "seconds_1": round(timings[1], 3),
        f"seconds_{n}": round(timings[n], 3),
        "ratio": round(timings[n] / timings[1], 2),
        "threads": torch.get_num_threads(),
    }


@_with_threads
def check_scorer(scorer, corpus: IconCorpus, params: dict) -> dict:
    """Text-to-image top-k retrieval on the held-out emoji concepts, with its chance level."""
    from ...components.models.scorer import heldout_retrieval

    held = corpus.table["split"].to_numpy() == "heldout"
    if not held.any():
        return {"skipped": "no held-out images in the corpus"}
    sub = corpus.subset(held)
    result = heldout_retrieval(
        scorer,
        torch.from_numpy(sub.as_float()),
        sub.table["caption"].tolist(),
        int(params["checks"]["retrieval_k"]),
    )
    log.info("scorer check: %s", result)
    return {"what": "held-out emoji captions -> held-out images", **result}


def summarize_preparation(
    corpus_counts: dict,
    scorer_history: dict,
    generator_history: dict,
    scorer_check: dict,
    generator_check: dict,
    params: dict,
) -> dict:
    """One JSON report: corpus, training summaries (without curves) and the checks."""

    def brief(history: dict) -> dict:
        return {k: v for k, v in history.items() if not k.endswith("loss")}

    return {
        "environment_trains": bool(params.get("train", False)),
        "icon_corpus": corpus_counts,
        "scorer_training": brief(scorer_history),
        "generator_training": brief(generator_history),
        "scorer_check": scorer_check,
        "generator_check": generator_check,
    }
