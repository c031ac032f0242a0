"""embedding_training nodes (paper §3.3): examples, training with ablation variants, user embeddings."""

from __future__ import annotations

import logging
import time
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from ...components.images import load_images  # noqa: E402
from ...components.soft_prompt import (  # noqa: E402
    BiasCorrectionLLM,
    TrainingSettings,
    heldout_losses,
    paired_difference,
    read_adapter_file,
    train_soft_prompt,
)

logger = logging.getLogger(__name__)


def _behaviour_prompt(captions: list[str], params: dict[str, Any]) -> str:
    return params["prompt_template"].format(items="; ".join(captions))


def build_soft_prompt_examples(
    histories: pd.DataFrame,
    items: pd.DataFrame,
    image_index: pd.DataFrame,
    preference_keywords: pd.DataFrame,
    params: dict[str, Any],
) -> pd.DataFrame:
    """One row per user: the behaviour prompt of the earlier history items, the last history item's
    image as supervision (§3.3.2), the full-history prompt (for generation) and a seeded split.
    """
    captions = items.set_index("item_id")["caption"]
    images = image_index.set_index("item_id")
    keywords = preference_keywords.set_index("user_id")["keywords"]
    rows, no_image, no_keywords, too_short = [], 0, 0, 0
    for row in histories.itertuples():
        history = list(row.history)
        if len(history) < 2:
            too_short += 1
            continue
        if history[-1] not in images.index:
            no_image += 1
            continue
        if row.user_id not in keywords.index:
            no_keywords += 1
            continue
        image = images.loc[history[-1]]
        rows.append(
            {
                "user_id": row.user_id,
                "prompt": _behaviour_prompt([captions[i] for i in history[:-1]], params),
                "full_prompt": _behaviour_prompt([captions[i] for i in history], params),
                "keywords_text": ", ".join(keywords[row.user_id]),
                "supervision_item": history[-1],
                "image_path": image["image_path"],
                "image_offset": int(image["image_offset"]),
            }
        )
    examples = pd.DataFrame(rows)
    logger.info(
        "soft-prompt examples: %d users (left out: %d with < 2 history items, %d whose last "
        "history item has no image, %d without preference keywords)",
        len(examples),
        too_short,
        no_image,
        no_keywords,
    )
    if examples.empty:
        raise ValueError(
            "no soft-prompt examples: no user has an image for the last history item "
            f"({len(histories)} users, {len(image_index)} item images)"
        )
    rng = np.random.default_rng(int(params["seed"]))
    n_heldout = max(1, round(len(examples) * float(params["heldout_fraction"])))
    heldout = set(rng.permutation(examples["user_id"].to_numpy())[:n_heldout])
    examples["split"] = np.where(examples["user_id"].isin(heldout), "heldout", "train")
    return examples


def _variants(params: dict[str, Any]) -> list[dict[str, Any]]:
    chosen = params["variant_set"]
    sets = params["variant_sets"]
    if chosen not in sets:
        raise ValueError(f"variant_set {chosen!r} is not one of {sorted(sets)}")
    return [
        {"name": f"L{v['n_tokens']}_{'ptuning' if v['n_prefixes'] else 'no_ptuning'}", **v}
        for v in sets[chosen]
    ]


def train_soft_preference_embeddings(
    examples: pd.DataFrame, llm, generator, params: dict[str, Any]
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any], Any]:
    """Train each variant (the first is the adapter used downstream) and score it on held-out users.

    Returns the main adapter (tensors + metadata), the training log, the Table 2-shaped report
    (held-out denoising loss per variant) and the loss-curve figure.
    """
    torch.manual_seed(int(params["seed"]))
    train = examples[examples["split"] == "train"]
    heldout = examples[examples["split"] == "heldout"]
    size = generator.resolution
    train_images = torch.from_numpy(load_images(train.to_dict("records"), size))
    heldout_images = torch.from_numpy(load_images(heldout.to_dict("records"), size))
    settings = TrainingSettings.from_params(params["training"])
    seeds = list(params["evaluation_seeds"])
    baseline = heldout_losses(
        None, generator, [], heldout["keywords_text"].tolist(), heldout_images, seeds
    )["without_embeddings"]
    # E_m starts at the mean token state of the generator's empty prompt (see BiasCorrectionLLM).
    neutral = generator.unconditional().embeddings.float().mean(dim=0)
    logs, rows, main = [], [], None
    for variant in _variants(params):
        start = time.perf_counter()
        model = BiasCorrectionLLM(
            llm,
            variant["n_tokens"],
            variant["n_prefixes"],
            generator.text_encoder.dim,
            seed=int(params["seed"]),
            neutral_token=neutral,
        )
        if main is None and params.get("resume_from"):
            model.load_adapter_state(read_adapter_file(params["resume_from"]))
            logger.info("%s: resumed from %s", variant["name"], params["resume_from"])
        history = train_soft_prompt(
            model,
            generator,
            train["prompt"].tolist(),
            train["keywords_text"].tolist(),
            train_images,
            settings,
        )
        logs += [{"variant": variant["name"], **h} for h in history]
        model.eval()
        losses = heldout_losses(
            model,
            generator,
            heldout["prompt"].tolist(),
            heldout["keywords_text"].tolist(),
            heldout_images,
            seeds,
        )
        versus = paired_difference(losses["pmg"], baseline)
        rows.append(
            {
                "variant": variant["name"],
                "p_tuning_v2": bool(variant["n_prefixes"]),
                "n_tokens": variant["n_tokens"],
                "n_prefixes": variant["n_prefixes"],
                "heldout_loss_pmg": float(losses["pmg"].mean()),
                "heldout_loss_without_keywords": float(losses["without_keywords"].mean()),
                "heldout_loss_without_embeddings": float(baseline.mean()),
                "pmg_minus_without_embeddings": versus,
                "train_seconds": round(time.perf_counter() - start, 1),
            }
        )
        logger.info(
            "%s: held-out denoising loss E^p %.4f vs E_k alone %.4f (difference %.4f +- %.4f "
            "s.e., lower in %.0f%% of %d user x seed pairs)",
            variant["name"],
            losses["pmg"].mean(),
            baseline.mean(),
            versus["mean_difference"],
            versus["standard_error"],
            100 * versus["share_lower"],
            versus["pairs"],
        )
        if main is None:
            main = {
                "tensors": model.adapter_state(),
                "metadata": {
                    "config": model.config.to_json(),
                    "variant": variant["name"],
                    "llm": llm.name,
                    "generator": generator.info.get("name", "generator"),
                    "steps": settings.steps,
                    "seed": int(params["seed"]),
                },
            }
        del model
    log = pd.DataFrame(logs)
    report = {
        "what": "held-out denoising loss of the last history item's image (paper Table 2 shape; "
        "lower is better)",
        "llm": llm.name,
        "train_users": len(train),
        "heldout_users": len(heldout),
        "evaluation_seeds": seeds,
        "training": vars(settings),
        "variants": rows,
    }
    return main, log, report, _loss_figure(log)


def _loss_figure(log: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, group in log.groupby("variant", sort=False):
        smooth = group["loss"].rolling(10, min_periods=1).mean()
        ax.plot(group["step"], smooth, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("denoising MSE (rolling mean of 10)")
    ax.set_title("Soft preference embeddings: training loss")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


@torch.no_grad()
def embed_users(
    adapter: dict[str, Any], examples: pd.DataFrame, llm, params: dict[str, Any]
) -> dict[str, Any]:
    """E_m of every user from the full-history prompt with the trained adapter: {user_id: (L, dim)}."""
    from ...components.soft_prompt import SoftPromptConfig

    config = SoftPromptConfig.from_json(adapter["metadata"]["config"])
    model = BiasCorrectionLLM(llm, config.n_tokens, config.n_prefixes, config.out_dim)
    model.load_adapter_state(adapter["tensors"])
    model.eval()
    tensors = {}
    batch = int(params["training"]["batch_size"])
    for start in range(0, len(examples), batch):
        chunk = examples.iloc[start : start + batch]
        soft = model(chunk["full_prompt"].tolist())
        tensors.update({u: e for u, e in zip(chunk["user_id"], soft, strict=True)})
    return {"tensors": tensors, "metadata": dict(adapter["metadata"])}
