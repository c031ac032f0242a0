"""embedding_training nodes (paper §3.3): examples, training of a sweep, user embeddings.

A sweep (parameter `sweep`, one of `sweeps`) lists soft-embedding configurations, its entries: L
multimodal tokens and S P-Tuning v2 prefixes each (paper Table 2). "Variant" is left to the
generation variants of weighted_generation (pmg, without_embeddings, ...).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from ...components.data.images import load_images
from ...components.method.soft_embeddings import (
    SoftPreferenceEmbedder,
    TrainingSettings,
    heldout_losses,
    paired_difference,
    train_soft_embeddings,
)
from ...components.reporting.figures import subplots, text_figure
from ...components.reporting.stats import VERDICT_RULE, holm, mde_note, verdict

logger = logging.getLogger(__name__)


NOT_APPLICABLE_NO_IMAGES = "not applicable: the scene's items have no images to supervise with"


def _behavior_prompt(captions: list[str], params: dict[str, Any]) -> str:
    return params["prompt_template"].format(items="; ".join(captions))


def build_soft_embedding_examples(
    behavior_texts: pd.DataFrame,
    preference_keywords: pd.DataFrame,
    items: pd.DataFrame,
    image_index: pd.DataFrame,
    params: dict[str, Any],
) -> pd.DataFrame:
    """One example per user and purpose (§3.3.2, DESIGN.md §5):

    - `train` (training rows of the protocol's train users): the prompt lists history[:-1], the
      keywords were extracted from history[:-1], and history[-1]'s image supervises;
    - `evaluation` (evaluation users, never trained on): the prompt lists the whole history, the
      keywords are the generation keywords, and the held-out TARGET's image is denoised for the
      report. Their prompt also gives the E_m used for generation.
    Empty (with a logged reason) when the scene's items have no images.
    """
    columns = ["user_id", "split", "prompt", "keywords_text", "supervision_item"]
    columns += ["image_path", "image_offset"]
    if image_index.empty:
        logger.info("soft-embedding examples: %s", NOT_APPLICABLE_NO_IMAGES)
        return pd.DataFrame(columns=columns)
    captions = items.set_index("item_id")["caption"]
    images = image_index.set_index("item_id")
    keywords = preference_keywords.set_index(["user_id", "purpose"])["keywords"]
    rows, no_image, no_keywords = [], 0, 0
    for row in behavior_texts.itertuples(index=False):
        training = row.purpose == "train"
        supervision = row.supervision_item if training else row.target
        if supervision not in images.index:
            no_image += 1
            continue
        if (row.user_id, row.purpose) not in keywords.index:
            no_keywords += 1
            continue
        image = images.loc[supervision]
        rows.append(
            {
                "user_id": row.user_id,
                "split": "train" if training else "evaluation",
                "prompt": _behavior_prompt([captions[i] for i in row.history], params),
                "keywords_text": ", ".join(keywords[(row.user_id, row.purpose)]),
                "supervision_item": supervision,
                "image_path": image["image_path"],
                "image_offset": int(image["image_offset"]),
            }
        )
    examples = pd.DataFrame(rows, columns=columns)
    logger.info(
        "soft-embedding examples: %s (left out: %d whose supervision item has no image, %d "
        "without preference keywords)",
        examples["split"].value_counts().to_dict(),
        no_image,
        no_keywords,
    )
    if not (examples["split"] == "train").any():
        raise ValueError(
            "no soft-embedding training example: no train user has keywords and an image for "
            f"their last history item ({len(behavior_texts)} rows, {len(image_index)} item images)"
        )
    return examples


def _sweep_entries(params: dict[str, Any]) -> list[dict[str, Any]]:
    chosen = params["sweep"]
    sets = params["sweeps"]
    if chosen not in sets:
        raise ValueError(f"embedding_training.sweep {chosen!r} is not one of {sorted(sets)}")
    return [
        {"name": f"L{v['n_tokens']}_{'ptuning' if v['n_prefixes'] else 'no_ptuning'}", **v}
        for v in sets[chosen]
    ]


def _not_applicable(why: str) -> tuple:
    record = {"tensors": {}, "metadata": {"not_applicable": why}}
    return (
        record,
        pd.DataFrame(columns=["sweep_entry", "step", "loss", "seconds"]),
        {"not_applicable": why},
        text_figure(why, fontsize=10),
        record,
        record,
    )


@torch.no_grad()
def _embed(model, prompts: list[str], users: list[str], batch: int) -> dict[str, torch.Tensor]:
    """E_m per user from their prompts: {user_id: (L, dim)}."""
    out = {}
    for start in range(0, len(prompts), batch):
        soft = model(prompts[start : start + batch])
        out.update(dict(zip(users[start : start + batch], soft.float().cpu(), strict=True)))
    return out


def train_soft_preference_embeddings(
    examples: pd.DataFrame,
    llm,
    generator,
    checkpoint: dict[str, Any] | None,
    params: dict[str, Any],
) -> tuple:
    """Train each sweep entry on the train users and score it on the evaluation users (§3.3,
    Table 2); the first starts from `checkpoint` (an earlier `soft_embedding_model`) if any.

    Returns the main model (trainable tensors + metadata; the first entry), the training log,
    the report (evaluation users' denoising loss of their held-out target image per entry,
    paired against E_k alone), the loss-curve figure, E_m of every evaluation user from the main
    model (`soft_embeddings`) and from every entry (`soft_embedding_sweep`, keys
    "<sweep_entry>/<user_id>"). A scene without item images gets "not applicable" records.
    """
    if examples.empty:
        return _not_applicable(NOT_APPLICABLE_NO_IMAGES)
    torch.manual_seed(int(params["seed"]))
    data = _TrainingData.of(examples, generator, params)
    logs, rows, sweep, main, main_embeddings = [], [], {}, None, None
    for entry in _sweep_entries(params):
        start_from = checkpoint if main is None else None
        model, history, row, embeddings = _train_entry(
            entry, data, llm, generator, params, start_from
        )
        logs += [{"sweep_entry": entry["name"], **h} for h in history]
        rows.append(row)
        sweep.update({f"{entry['name']}/{u}": e for u, e in embeddings.items()})
        metadata = {
            "config": model.config.to_json(),
            "sweep_entry": entry["name"],
            "llm": llm.name,
            "generator": generator.info.get("name", "generator"),
            "steps": data.settings.steps,
            "seed": int(params["seed"]),
            "train_users": sorted(data.train["user_id"]),
        }
        if main is None:
            main = {"tensors": model.trainable_state(), "metadata": metadata}
            main_embeddings = {"tensors": embeddings, "metadata": metadata}
        del model
    log = pd.DataFrame(logs)
    report = {
        "what": "evaluation users' denoising loss of their held-out target image, E^p = "
        "concat(E_m, E_k) against E_k alone under identical noise and timesteps (paper Table 2 "
        "shape; lower is better)",
        "llm": llm.name,
        "generator": generator.info.get("name", "generator"),
        "train_users": len(data.train),
        "evaluation_users": len(data.evaluation),
        "evaluation_seeds": data.seeds,
        "training": vars(data.settings),
        "sweep_entries": _with_verdicts(rows),
        "verdict_rule": VERDICT_RULE,
        "mde_note": mde_note("evaluation users (a user's difference: the mean over its seeds)"),
    }
    entries = [r["sweep_entry"] for r in rows]
    sweep_record = {"tensors": sweep, "metadata": {"sweep_entries": entries}}
    return main, log, report, _loss_figure(log), main_embeddings, sweep_record


def _with_verdicts(rows: list[dict]) -> list[dict]:
    """Each sweep entry's E^p - E_k loss difference with its Wilcoxon p Holm-corrected over the
    entries and the verdict (lower loss is better): `reporting.stats.VERDICT_RULE`; its minimum
    detectable effect (`mde`) comes with the difference (`paired_difference`)."""
    corrected = holm([r["pmg_minus_without_embeddings"]["wilcoxon_p"] for r in rows])
    for row, p_holm in zip(rows, corrected, strict=True):
        versus = row["pmg_minus_without_embeddings"]
        versus["holm_p"] = float(p_holm)
        versus["verdict"] = verdict(*versus["ci95"], p_holm, "lower", "pmg", "without_embeddings")
    return rows


@dataclass
class _TrainingData:
    """What every sweep entry trains and is scored on: the train and evaluation examples, their
    supervision images, the settings, the noise seeds, E_k alone's losses (the baseline) and the
    neutral token E_m starts from."""

    train: pd.DataFrame
    evaluation: pd.DataFrame
    train_images: torch.Tensor
    evaluation_images: torch.Tensor
    settings: TrainingSettings
    seeds: list
    baseline: Any  # (users, seeds) losses of E_k alone
    neutral: torch.Tensor  # (dim,)

    @classmethod
    def of(cls, examples: pd.DataFrame, generator, params: dict[str, Any]) -> _TrainingData:
        train = examples[examples["split"] == "train"]
        evaluation = examples[examples["split"] == "evaluation"]
        size = generator.resolution
        train_images = torch.from_numpy(load_images(train.to_dict("records"), size))
        evaluation_images = torch.from_numpy(load_images(evaluation.to_dict("records"), size))
        settings = TrainingSettings.from_params(params["training"])
        seeds = list(params["evaluation_seeds"])
        baseline = heldout_losses(
            None,
            generator,
            [],
            evaluation["keywords_text"].tolist(),
            evaluation_images,
            seeds,
            max_tokens=settings.max_tokens,
            threads=settings.threads,
        )["without_embeddings"]
        # E_m starts at the mean token state of the generator's empty prompt
        # (SoftPreferenceEmbedder).
        neutral = generator.unconditional().embeddings.float().mean(dim=0)
        return cls(
            train, evaluation, train_images, evaluation_images, settings, seeds, baseline, neutral
        )


def _train_entry(entry, data: _TrainingData, llm, generator, params, checkpoint):
    """One sweep entry trained (from `checkpoint` when one is given) and scored: (model, training
    history, report row,
    E_m of every evaluation user)."""
    start = time.perf_counter()
    model = SoftPreferenceEmbedder(
        llm,
        entry["n_tokens"],
        entry["n_prefixes"],
        generator.text_encoder.dim,
        seed=int(params["seed"]),
        neutral_token=data.neutral,
    )
    if checkpoint is not None:
        model.load_trainable_state(checkpoint["tensors"])
        logger.info("%s: resumed from a checkpoint of %s", entry["name"], checkpoint["metadata"])
    train = data.train
    history = train_soft_embeddings(
        model,
        generator,
        train["prompt"].tolist(),
        train["keywords_text"].tolist(),
        data.train_images,
        data.settings,
    )
    model.eval()
    prompts = data.evaluation["prompt"].tolist()
    losses = heldout_losses(
        model,
        generator,
        prompts,
        data.evaluation["keywords_text"].tolist(),
        data.evaluation_images,
        data.seeds,
        max_tokens=data.settings.max_tokens,
        threads=data.settings.threads,
    )
    versus = paired_difference(losses["pmg"], data.baseline)
    row = {
        "sweep_entry": entry["name"],
        "p_tuning_v2": bool(entry["n_prefixes"]),
        "n_tokens": entry["n_tokens"],
        "n_prefixes": entry["n_prefixes"],
        "evaluation_loss_pmg": float(losses["pmg"].mean()),
        "evaluation_loss_without_keywords": float(losses["without_keywords"].mean()),
        "evaluation_loss_without_embeddings": float(data.baseline.mean()),
        "pmg_minus_without_embeddings": versus,
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    logger.info(
        "%s: evaluation users' target denoising loss E^p %.4f vs E_k alone %.4f (difference "
        "%.4f, 95%% interval [%.4f, %.4f] over %d users; lower in %.0f%% of %d user x seed "
        "pairs)",
        entry["name"],
        losses["pmg"].mean(),
        data.baseline.mean(),
        versus["mean_difference"],
        *versus["ci95"],
        versus["users"],
        100 * versus["share_lower"],
        versus["pairs"],
    )
    users = data.evaluation["user_id"].tolist()
    return model, history, row, _embed(model, prompts, users, data.settings.batch_size)


def _loss_figure(log: pd.DataFrame):
    fig, axes = subplots(1, 1, (6, 3.5))
    ax = axes[0][0]
    for name, group in log.groupby("sweep_entry", sort=False):
        smooth = group["loss"].rolling(10, min_periods=1).mean()
        ax.plot(group["step"], smooth, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("denoising MSE (rolling mean of 10)")
    ax.set_title("Soft preference embeddings: training loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
