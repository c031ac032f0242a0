"""weighted_generation nodes (paper §3.4): conditions, one denoising batch per chunk of users,
scorer cosines d_p / d_t, z and the chosen image; Figure 7-shaped strips; a personalization report.
"""

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
from PIL import Image  # noqa: E402

from ...components.selection import choose, weight_grid, z_scores  # noqa: E402

logger = logging.getLogger(__name__)


def build_generation_requests(
    histories: pd.DataFrame,
    preference_keywords: pd.DataFrame,
    target_keywords: pd.DataFrame,
    params: dict[str, Any],
) -> pd.DataFrame:
    """One row per evaluation user: target and the keyword texts of k^p and k^t (§3.2)."""
    k_p = preference_keywords.set_index("user_id")["keywords"]
    k_t = target_keywords.set_index("user_id")["keywords"]
    users = [u for u in histories["user_id"] if u in k_p.index and u in k_t.index]
    missing = len(histories) - len(users)
    if missing:
        logger.info("%d users have no keywords yet (not in keyword_extraction's users)", missing)
    users = users[: int(params["max_users"])]
    if not users:
        raise ValueError("no user has both preference and target keywords")
    targets = histories.set_index("user_id")["target"]
    return pd.DataFrame(
        {
            "user_id": users,
            "target": [targets[u] for u in users],
            "preference_text": [", ".join(k_p[u]) for u in users],
            "target_text": [", ".join(k_t[u]) for u in users],
        }
    )


def _to_pil(images: torch.Tensor) -> list[Image.Image]:
    arrays = images.float().cpu().clamp(0, 1).permute(0, 2, 3, 1).numpy()
    arrays = (arrays * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arrays]


def _weight_tag(w_p: float, w_t: float) -> str:
    return f"wp{w_p:g}_wt{w_t:g}"


def _candidate_conditions(generator, requests, soft_embeddings, ablation, grid):
    """Per candidate: the conditions [E^p, E^t] and weights [w_p, w_t] of the variant (§3.4).

    E^p = concat(E_m, E_k) (§3.3.1); a variant without keywords drops E_k, one without embeddings
    drops E_m, one without both has no preference condition (a single target-only candidate).
    A zero weight drops its condition rather than attending to zero vectors.
    """
    target = generator.encode_text(requests["target_text"].tolist()).split()
    keywords = generator.encode_text(requests["preference_text"].tolist()).split()
    rows = []
    for i, user in enumerate(requests["user_id"]):
        parts = []
        if ablation["embeddings"]:
            soft = soft_embeddings["tensors"][user].to(generator.dtype)  # (L, dim)
            parts.append(type(target[i])(soft, torch.ones(soft.shape[0], dtype=torch.long)))
        if ablation["keywords"]:
            parts.append(keywords[i])
        if not parts:
            rows.append((user, 0.0, 1.0, [target[i]], [1.0]))
            continue
        preference = type(target[i]).concat(parts)
        for w_p, w_t in grid:
            kept = [(c, w) for c, w in ((preference, w_p), (target[i], w_t)) if w > 0]
            rows.append((user, w_p, w_t, [c for c, _ in kept], [w for _, w in kept]))
    return rows


def _denoise(generator, rows, params: dict[str, Any], what: str) -> list[Image.Image]:
    """Images for candidate rows (user, w_p, w_t, conditions, weights), `candidates_per_batch`
    candidates per denoising call.

    The same seed for every call: all candidates start from the same noise, so the candidates of a
    user differ by their weights only, and users by their conditions only.
    """
    chunk, steps = int(params["candidates_per_batch"]), int(params["steps"])
    images, start = [], time.perf_counter()
    for begin in range(0, len(rows), chunk):
        part = rows[begin : begin + chunk]
        out = generator.generate(
            [r[3] for r in part],
            [r[4] for r in part],
            mode=params["mode"],
            seed=int(params["seed"]),
            steps=steps,
            guidance_scale=float(params["guidance_scale"]),
        )
        images += _to_pil(out)
        logger.info(
            "%s: %d/%d images (%.2f s/image, batch %d, %d steps)",
            what,
            len(images),
            len(rows),
            (time.perf_counter() - start) / len(images),
            len(part),
            steps,
        )
    return images


def generate_candidates(
    requests: pd.DataFrame,
    generator,
    params: dict[str, Any],
    ablation: dict[str, Any],
    soft_embeddings: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Image.Image]]:
    """Every (w_p, w_t) candidate of every user; all candidates of a chunk of users in one batch.

    Returns the candidates table and the images keyed `<user_id>/<wp.._wt..>`.
    """
    if ablation["embeddings"] and soft_embeddings is None:
        raise ValueError(f"variant {ablation['name']} needs soft embeddings; none were given")
    grid = weight_grid(params["weight_ratios"], float(params["weight_total"]))
    rows = _candidate_conditions(generator, requests, soft_embeddings, ablation, grid)
    seed, steps = int(params["seed"]), int(params["steps"])
    images, records = {}, []
    for (user, w_p, w_t, _, _), image in zip(
        rows, _denoise(generator, rows, params, ablation["name"]), strict=True
    ):
        key = f"{user}/{_weight_tag(w_p, w_t)}"
        images[key] = image
        records.append({"user_id": user, "w_p": w_p, "w_t": w_t, "image_key": key})
    candidates = pd.DataFrame(records).merge(requests[["user_id", "target"]], on="user_id")
    candidates = candidates.assign(
        variant=ablation["name"],
        seed=seed,
        steps=steps,
        mode=params["mode"],
        guidance_scale=float(params["guidance_scale"]),
    )
    return candidates, images


def generate_user_images(
    requests: pd.DataFrame,
    generator,
    params: dict[str, Any],
    soft_embeddings: dict[str, Any] | None = None,
) -> dict[str, Image.Image]:
    """One image per user from the preference condition alone, no target (paper §4.5's
    Generated-user features): E^p = concat(E_m, E_k) where soft embeddings exist, else E_k.
    """
    ablation = {"name": "user_only", "keywords": True, "embeddings": soft_embeddings is not None}
    preference = _candidate_conditions(generator, requests, soft_embeddings, ablation, [(1.0, 0.0)])
    out = _denoise(generator, preference, params, "user-only")
    images = {r[0]: im for r, im in zip(preference, out, strict=True)}
    logger.info(
        "user-only images: %d users (soft embeddings: %s)", len(images), ablation["embeddings"]
    )
    return images


def score_candidates(
    candidates: pd.DataFrame,
    candidate_images: dict[str, Image.Image],
    requests: pd.DataFrame,
    scorer,
    params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Image.Image]]:
    """d_p, d_t (scorer cosines with k^p and k^t), z and the argmax-z candidate per user (§3.4)."""
    texts = requests.set_index("user_id")
    images = [candidate_images[k] for k in candidates["image_key"]]
    pixels = torch.from_numpy(
        np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images]).transpose(0, 3, 1, 2)
    )
    with torch.no_grad():
        image_emb = scorer.encode_images(pixels)
        pref_emb = scorer.encode_texts(texts.loc[candidates["user_id"], "preference_text"].tolist())
        target_emb = scorer.encode_texts(texts.loc[candidates["user_id"], "target_text"].tolist())
    scored = candidates.copy()
    scored["d_p"] = (image_emb * pref_emb).sum(-1).float().cpu().numpy()
    scored["d_t"] = (image_emb * target_emb).sum(-1).float().cpu().numpy()
    alpha, floor = float(params["alpha"]), float(params["cosine_floor"])
    scored["z"] = z_scores(scored["d_p"], scored["d_t"], alpha, floor)
    scored["floored"] = (scored["d_p"] < floor) | (scored["d_t"] < floor)
    scored["alpha"] = alpha
    scored["chosen"] = choose(scored, ["user_id"])
    chosen = {
        row.user_id: candidate_images[row.image_key]
        for row in scored[scored["chosen"]].itertuples()
    }
    logger.info(
        "%s: chose among %d candidates for %d users (%.1f%% of cosines floored at %g before log)",
        scored["variant"].iat[0],
        len(scored),
        len(chosen),
        100 * scored["floored"].mean(),
        floor,
    )
    return scored, chosen


def summarize_personalization(params: dict[str, Any], *selections: pd.DataFrame) -> dict[str, Any]:
    """Averages over users of the chosen images' d_p and d_t per variant, against the baseline."""
    table = pd.concat(selections, ignore_index=True)
    chosen = table[table["chosen"]]
    per_variant = chosen.groupby("variant").agg(
        users=("user_id", "nunique"), d_p=("d_p", "mean"), d_t=("d_t", "mean"), z=("z", "mean")
    )
    baseline = params["baseline_variant"]
    report: dict[str, Any] = {
        "what": "mean over users of the chosen image's scorer cosines (d_p: with the preference "
        "keywords, d_t: with the target keywords)",
        "scorer_note": "the selection scorer; metric_evaluation uses independent metrics",
        "alpha": float(params["alpha"]),
        "cosine_floor": float(params["cosine_floor"]),
        "mode": params["mode"],
        "seed": int(params["seed"]),
        "steps": int(params["steps"]),
        "variants": per_variant.round(5).reset_index().to_dict("records"),
    }
    if baseline in per_variant.index:
        base = per_variant.loc[baseline]
        report["versus_baseline"] = {
            v: {
                "d_p_gain": round(float(r["d_p"] - base["d_p"]), 5),
                "d_t_ratio": round(float(r["d_t"] / base["d_t"]), 4) if base["d_t"] else None,
            }
            for v, r in per_variant.iterrows()
            if v != baseline
        }
    return report


def plot_weight_strips(
    selections: pd.DataFrame, candidate_images: dict[str, Image.Image], params: dict[str, Any]
):
    """Figure 7 shape: a few users across the weight grid, the chosen candidate framed."""
    users = list(dict.fromkeys(selections["user_id"]))[: int(params["figure_users"])]
    grid = weight_grid(params["weight_ratios"], float(params["weight_total"]))
    fig, axes = plt.subplots(
        len(users), len(grid), figsize=(1.6 * len(grid), 1.9 * len(users)), squeeze=False
    )
    for r, user in enumerate(users):
        rows = selections[selections["user_id"] == user].set_index(["w_p", "w_t"])
        for c, (w_p, w_t) in enumerate(grid):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if (w_p, w_t) not in rows.index:
                ax.set_visible(False)
                continue
            row = rows.loc[(w_p, w_t)]
            ax.imshow(candidate_images[row["image_key"]])
            ax.set_title(f"{w_p:g}:{w_t:g}  z={row['z']:.2f}", fontsize=7)
            if row["chosen"]:
                for spine in ax.spines.values():
                    spine.set_edgecolor("red")
                    spine.set_linewidth(3)
        axes[r][0].set_ylabel(str(user)[:10], fontsize=7)
    fig.suptitle(f"w_p : w_t sweep ({params['mode']}); red = argmax z", fontsize=9)
    fig.tight_layout()
    return fig


def _pixels(images: list[Image.Image]) -> torch.Tensor:
    arrays = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images])
    return torch.from_numpy(arrays.transpose(0, 3, 1, 2))


def recover_hidden_tastes(
    users: pd.DataFrame,
    items: pd.DataFrame,
    image_index: pd.DataFrame,
    params: dict[str, Any],
    **chosen_images: dict[str, Image.Image],
) -> dict[str, Any]:
    """SIMULATED users only: how often the chosen image's class (nearest MobileNetV2 class centroid
    of real item images) is one of the user's hidden favourite classes, per variant.

    The classifier is checked on real items it did not use for its centroids (its accuracy is
    reported), and the chance level is the share of generated users' taste classes among all.
    """
    from ...components.features import MobileNetFeatures
    from ...components.images import load_image

    cfg = params["taste_recovery"]
    rng = np.random.default_rng(int(params["seed"]))
    labelled = items[["item_id", "class_name"]].merge(image_index, on="item_id")
    per_class = int(cfg["reference_per_class"])
    shuffled = labelled.iloc[rng.permutation(len(labelled))].reset_index(drop=True)
    rank = shuffled.groupby("class_name").cumcount()
    picked = shuffled[rank < 2 * per_class].copy()
    picked["role"] = np.where(rank[rank < 2 * per_class] < per_class, "ref", "check")
    features = MobileNetFeatures(input_size=int(cfg["input_size"]))
    size = int(cfg["image_size"])
    real = features.pooled(
        _pixels(
            [
                load_image(p, int(o), size)
                for p, o in zip(picked["image_path"], picked["image_offset"], strict=True)
            ]
        )
    )
    real = torch.nn.functional.normalize(real, dim=1)
    classes = sorted(picked["class_name"].unique())
    ref = picked["role"].to_numpy() == "ref"
    labels = picked["class_name"].to_numpy()
    centroids = torch.stack(
        [torch.nn.functional.normalize(real[ref & (labels == c)].mean(0), dim=0) for c in classes]
    )

    def classify(x: torch.Tensor) -> list[str]:
        return [
            classes[i] for i in (torch.nn.functional.normalize(x, dim=1) @ centroids.T).argmax(1)
        ]

    check = ~ref
    check_accuracy = float(np.mean(np.array(classify(real[check])) == labels[check]))
    tastes = users.set_index("user_id")["taste_classes"]
    report: dict[str, Any] = {
        "what": "share of SIMULATED users whose chosen image is classified (nearest MobileNetV2 "
        "class centroid of real Fashion-MNIST items) as one of their hidden favourite classes",
        "simulated": True,
        "classifier_accuracy_on_real_items": round(check_accuracy, 4),
        "classifier_real_items": {"centroids": int(ref.sum()), "checked": int(check.sum())},
        "chance": round(len(next(iter(tastes))) / len(classes), 4) if len(tastes) else None,
        "variants": {},
    }
    for variant, images in chosen_images.items():
        keys = [u for u in images if u in tastes.index]
        predicted = classify(features.pooled(_pixels([images[u] for u in keys])))
        hits = [p in list(tastes[u]) for u, p in zip(keys, predicted, strict=True)]
        report["variants"][variant] = {
            "users": len(keys),
            "recovered": round(float(np.mean(hits)), 4) if hits else None,
        }
    logger.info("hidden-taste recovery (SIMULATED users): %s", report["variants"])
    return report
