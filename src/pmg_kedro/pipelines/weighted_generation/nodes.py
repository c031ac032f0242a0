"""weighted_generation nodes (paper §3.4): conditions, one denoising batch per chunk of candidates,
scorer cosines d_p / d_t, the chosen image per (user, noise seed); the Table 1 variants and the
controls of DESIGN.md §5; Figure 7-shaped strips; a report of what ran.

Every evaluation user runs under every noise seed of `seeds`, the same seeds in every variant, so
variants compare paired by (user, seed). A candidate's starting noise depends only on its noise
seed (`Generator.generate(noise_seeds=...)`), never on how candidates are chunked into calls.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ...components.images import to_array, to_pil  # noqa: E402
from ...components.selection import choose, weight_grid, z_scores  # noqa: E402
from ...components.soft_embeddings import preference_condition  # noqa: E402

logger = logging.getLogger(__name__)

NO_SOFT_EMBEDDINGS = "not applicable: this scene has no soft preference embeddings ({why})"
SELECTION_COLUMNS = [
    "user_id",
    "target",
    "seed",
    "noise_seed",
    "w_p",
    "w_t",
    "image_key",
    "variant",
    "steps",
    "sampler",
    "mode",
    "guidance_scale",
    "d_p",
    "d_t",
    "z",
    "floored",
    "alpha",
    "select_by",
    "chosen",
]


def build_generation_requests(
    histories: pd.DataFrame,
    user_split: pd.DataFrame,
    preference_keywords: pd.DataFrame,
    target_keywords: pd.DataFrame,
) -> pd.DataFrame:
    """One row per evaluation user of the protocol's split: target and the texts of k^p and k^t."""
    evaluation = set(user_split.loc[user_split["split"] == "evaluation", "user_id"])
    preference = preference_keywords[preference_keywords["purpose"] == "evaluation"]
    k_p = preference.set_index("user_id")["keywords"]
    k_t = target_keywords.set_index("user_id")["keywords"]
    leaked = sorted(set(k_p.index) - evaluation)
    if leaked:
        raise ValueError(
            f"preference_keywords: {len(leaked)} rows marked evaluation belong to users outside "
            f"the split's evaluation users, e.g. {leaked[:5]}"
        )
    users = [u for u in histories["user_id"] if u in evaluation]
    missing = [u for u in users if u not in k_p.index or u not in k_t.index]
    if missing:
        logger.warning("%d evaluation users have no keywords: %s", len(missing), missing[:10])
    users = [u for u in users if u not in missing]
    if not users:
        raise ValueError("no evaluation user has both preference and target keywords")
    targets = histories.set_index("user_id")["target"]
    return pd.DataFrame(
        {
            "user_id": users,
            "target": [str(targets[u]) for u in users],
            "preference_text": [", ".join(k_p[u]) for u in users],
            "target_text": [", ".join(k_t[u]) for u in users],
        }
    )


def _weight_tag(w_p: float, w_t: float) -> str:
    return f"wp{w_p:g}_wt{w_t:g}"


def noise_seed(seed: int, draw: int) -> int:
    """The starting noise of draw `draw` under evaluation seed `seed`; draw 0 is `seed` itself, so
    a compute-matched control's first candidate equals the one-image baseline's image."""
    return int(seed) if draw == 0 else int(seed) * 1000 + int(draw)


def _candidate_plan(ablation: dict[str, Any], params: dict[str, Any]) -> list[tuple]:
    """(w_p, w_t, draw) per candidate of one (user, seed) for this variant."""
    grid = weight_grid(params["weight_ratios"], float(params["weight_total"]))
    has_preference = ablation["keywords"] or ablation["embeddings"]
    if ablation["grid"]:
        if not has_preference:
            raise ValueError(f"variant {ablation['name']}: a weight grid needs a preference part")
        return [(w_p, w_t, 0) for w_p, w_t in grid]
    if has_preference:
        return [(1.0, 1.0, 0)]  # the plain concatenation, no weighting
    n = ablation.get("candidates", 1)
    n = len(grid) if n == "grid" else int(n)
    return [(0.0, 1.0, draw) for draw in range(n)]


def _condition_rows(generator, requests, soft_embeddings, ablation, params) -> list[dict]:
    """Per candidate: its user, seeds, weights and conditions [E^p, E^t] (§3.4).

    E^p = concat(E_m, E_k) (`preference_condition`); a variant without keywords drops E_k, one
    without embeddings drops E_m. A zero weight drops its condition rather than attending to zero
    vectors.
    """
    target = generator.encode_text(requests["target_text"].tolist()).split()
    keywords = generator.encode_text(requests["preference_text"].tolist()).split()
    budget = params.get("max_condition_tokens")
    plan = _candidate_plan(ablation, params)
    rows = []
    for i, (user, item) in enumerate(zip(requests["user_id"], requests["target"], strict=True)):
        preference = None
        if ablation["keywords"] or ablation["embeddings"]:
            soft = soft_embeddings["tensors"][user] if ablation["embeddings"] else None
            preference = preference_condition(
                soft, keywords[i] if ablation["keywords"] else None, budget
            )
        for seed in params["seeds"]:
            for w_p, w_t, draw in plan:
                kept = [(c, w) for c, w in ((preference, w_p), (target[i], w_t)) if w > 0]
                tag = _weight_tag(w_p, w_t) if draw == 0 else f"draw{draw}"
                rows.append(
                    {
                        "user_id": user,
                        "target": item,
                        "seed": int(seed),
                        "noise_seed": noise_seed(seed, draw),
                        "w_p": w_p,
                        "w_t": w_t,
                        "image_key": f"{user}/s{seed}/{tag}",
                        "conditions": [c for c, _ in kept],
                        "weights": [w for _, w in kept],
                    }
                )
    return rows


def _denoise(generator, rows: list[dict], params: dict[str, Any], what: str) -> list[Image.Image]:
    """Images for candidate rows, `candidates_per_batch` candidates per denoising call."""
    chunk, steps = int(params["candidates_per_batch"]), int(params["steps"])
    images, start = [], time.perf_counter()
    for begin in range(0, len(rows), chunk):
        part = rows[begin : begin + chunk]
        out = generator.generate(
            [r["conditions"] for r in part],
            [r["weights"] for r in part],
            mode=params["mode"],
            noise_seeds=[r["noise_seed"] for r in part],
            sampler=params["sampler"],
            steps=steps,
            guidance_scale=float(params["guidance_scale"]),
        )
        images += to_pil(out)
        logger.info(
            "%s: %d/%d images (%.3f s/image, batch %d, %d %s steps)",
            what,
            len(images),
            len(rows),
            (time.perf_counter() - start) / len(images),
            len(part),
            steps,
            params["sampler"],
        )
    return images


def _not_applicable_why(ablation: dict[str, Any], soft_embeddings: dict[str, Any]) -> str | None:
    if ablation["embeddings"] and "not_applicable" in soft_embeddings.get("metadata", {}):
        return NO_SOFT_EMBEDDINGS.format(why=soft_embeddings["metadata"]["not_applicable"])
    return None


def generate_candidates(
    requests: pd.DataFrame,
    generator,
    soft_embeddings: dict[str, Any],
    params: dict[str, Any],
    ablation: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Image.Image]]:
    """Every candidate of every (evaluation user, seed) for one variant, chunked into denoising
    calls. Returns the candidates table and the images keyed "<user>/s<seed>/<weights or draw>";
    empty when the variant does not apply to the scene (the report says why).
    """
    why = _not_applicable_why(ablation, soft_embeddings)
    if why:
        logger.info("%s: %s", ablation["name"], why)
        return pd.DataFrame(columns=SELECTION_COLUMNS[:13]), {}
    rows = _condition_rows(generator, requests, soft_embeddings, ablation, params)
    images = _denoise(generator, rows, params, ablation["name"])
    candidates = pd.DataFrame(
        [{k: v for k, v in r.items() if k not in ("conditions", "weights")} for r in rows]
    ).assign(
        variant=ablation["name"],
        steps=int(params["steps"]),
        sampler=params["sampler"],
        mode=params["mode"],
        guidance_scale=float(params["guidance_scale"]),
    )
    return candidates, dict(zip(candidates["image_key"], images, strict=True))


def score_candidates(
    candidates: pd.DataFrame,
    candidate_images: dict[str, Image.Image],
    requests: pd.DataFrame,
    scorer,
    params: dict[str, Any],
    ablation: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Image.Image]]:
    """d_p (cosine with k^p), d_t (with k^t), z, and the chosen candidate per (user, seed): argmax
    z, or argmax d_t for target-only variants (§3.4). Chosen images keyed "<user>/s<seed>"."""
    if candidates.empty:
        return pd.DataFrame(columns=SELECTION_COLUMNS), {}
    texts = requests.set_index("user_id").loc[candidates["user_id"]]
    preference, target = texts["preference_text"].tolist(), texts["target_text"].tolist()
    keys, batch = candidates["image_key"].tolist(), int(params["score_batch_size"])
    cosines = []
    for i in range(0, len(keys), batch):  # at most `batch` decoded images in memory at a time
        pixels = torch.from_numpy(to_array([candidate_images[k] for k in keys[i : i + batch]]))
        cosines.append(
            scorer.paired_scores(pixels, [preference[i : i + batch], target[i : i + batch]], batch)
        )
    d_p, d_t = torch.cat(cosines, dim=1).float().cpu().numpy()
    scored = candidates.copy()
    scored["d_p"], scored["d_t"] = d_p, d_t
    alpha, floor = float(params["alpha"]), float(params["cosine_floor"])
    scored["z"] = z_scores(scored["d_p"], scored["d_t"], alpha, floor)
    scored["floored"] = (scored["d_p"] < floor) | (scored["d_t"] < floor)
    scored["alpha"] = alpha
    scored["select_by"] = ablation["select_by"]
    scored["chosen"] = choose(scored.assign(z=scored[ablation["select_by"]]), ["user_id", "seed"])
    chosen = {
        f"{row.user_id}/s{row.seed}": candidate_images[row.image_key]
        for row in scored[scored["chosen"]].itertuples()
    }
    logger.info(
        "%s: chose by %s among %d candidates for %d (user, seed) pairs (%.1f%% of cosines floored "
        "at %g before the log)",
        ablation["name"],
        ablation["select_by"],
        len(scored),
        len(chosen),
        100 * scored["floored"].mean(),
        floor,
    )
    return scored[SELECTION_COLUMNS], chosen


def generate_user_images(
    requests: pd.DataFrame,
    generator,
    soft_embeddings: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, Image.Image]:
    """One image per evaluation user from the preference condition alone, no target, first seed
    (paper §4.5's Generated-user): E^p = concat(E_m, E_k) where soft embeddings exist, else E_k."""
    with_embeddings = "not_applicable" not in soft_embeddings.get("metadata", {})
    ablation = {"name": "user_only", "keywords": True, "embeddings": with_embeddings}
    ablation.update(grid=True)
    only = {**params, "seeds": params["seeds"][:1], "weight_ratios": [[1, 0]], "weight_total": 1}
    rows = _condition_rows(generator, requests, soft_embeddings, ablation, only)
    images = _denoise(generator, rows, only, "user-only")
    logger.info("user-only images: %d users (soft embeddings: %s)", len(images), with_embeddings)
    return {r["user_id"]: im for r, im in zip(rows, images, strict=True)}


def generate_table2_images(
    requests: pd.DataFrame,
    generator,
    soft_embedding_sweep: dict[str, Any],
    params: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Image.Image]]:
    """Paper Table 2's images: full PMG at w_p = w_t = 1 with E_m of every sweep entry (L, with
    or without P-Tuning v2), every evaluation user and seed. Empty without soft embeddings."""
    columns = ["user_id", "seed", "sweep_entry", "n_tokens", "p_tuning", "image_key"]
    entries = soft_embedding_sweep.get("metadata", {}).get("sweep_entries", [])
    if not entries:
        return pd.DataFrame(columns=columns), {}
    ablation = {"name": "table2", "keywords": True, "embeddings": True, "grid": False}
    records, images = [], {}
    for entry in entries:
        tensors = {u: soft_embedding_sweep["tensors"][f"{entry}/{u}"] for u in requests["user_id"]}
        rows = _condition_rows(generator, requests, {"tensors": tensors}, ablation, params)
        for row, image in zip(rows, _denoise(generator, rows, params, entry), strict=True):
            key = f"{entry}/{row['user_id']}/s{row['seed']}"
            images[key] = image
            n_tokens = int(tensors[row["user_id"]].shape[0])
            records.append(
                (row["user_id"], row["seed"], entry, n_tokens, "no_ptuning" not in entry, key)
            )
    return pd.DataFrame(records, columns=columns), images


def summarize_personalization(
    params: dict[str, Any],
    ablations: dict[str, Any],
    soft_embeddings: dict[str, Any],
    **selections: pd.DataFrame,
) -> dict[str, Any]:
    """What ran per variant (users, seeds, candidates, selection rule) or why it did not, and the
    chosen images' mean d_p and d_t — the selection scorer's own terms, not an evaluation."""
    report: dict[str, Any] = {
        "what": "per variant: evaluation users, noise seeds and candidates per (user, seed); the "
        "chosen images' mean scorer cosines d_p (with k^p) and d_t (with k^t)",
        "scorer_note": "d_p and d_t are the SELECTION scorer's terms and favour variants that "
        "select by them; metric_evaluation reports independent metrics",
        "alpha": float(params["alpha"]),
        "cosine_floor": float(params["cosine_floor"]),
        "mode": params["mode"],
        "sampler": params["sampler"],
        "steps": int(params["steps"]),
        "guidance_scale": float(params["guidance_scale"]),
        "seeds": [int(s) for s in params["seeds"]],
        "variants": {},
        "not_applicable": {},
    }
    for name, table in selections.items():
        ablation = ablations[name]
        if table.empty:
            why = _not_applicable_why(ablation, soft_embeddings)
            report["not_applicable"][name] = why or "no candidates were generated"
            continue
        chosen = table[table["chosen"]]
        report["variants"][name] = {
            "users": int(table["user_id"].nunique()),
            "seeds": sorted(int(s) for s in table["seed"].unique()),
            "candidates_per_user_and_seed": round(len(table) / len(chosen), 3),
            "select_by": ablation["select_by"],
            "keywords": bool(ablation["keywords"]),
            "embeddings": bool(ablation["embeddings"]),
            "chosen_d_p": round(float(chosen["d_p"].mean()), 5),
            "chosen_d_t": round(float(chosen["d_t"].mean()), 5),
        }
    return report


def plot_weight_strips(
    ablations: dict[str, Any],
    params: dict[str, Any],
    **variants: Any,
):
    """Figure 7 shape: a few users across the weight grid (first seed), the chosen candidate
    framed; from the first variant with a weight grid that ran (`pmg` where it applies).

    `variants` holds `<variant>_selections` and `<variant>_candidate_images` pairs.
    """
    grid_variants = [v for v, a in ablations.items() if a["grid"]]
    ran = [v for v in grid_variants if not variants[f"{v}_selections"].empty]
    if not ran:
        raise ValueError(f"no variant with a weight grid ran ({grid_variants})")
    name = ran[0]
    selections = variants[f"{name}_selections"]
    images = variants[f"{name}_candidate_images"]
    selections = selections[selections["seed"] == selections["seed"].min()]
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
            row = rows.loc[(w_p, w_t)]
            ax.imshow(images[row["image_key"]])
            ax.set_title(f"{w_p:g}:{w_t:g}  z={row['z']:.2f}", fontsize=7)
            if row["chosen"]:
                for spine in ax.spines.values():
                    spine.set_edgecolor("red")
                    spine.set_linewidth(3)
        axes[r][0].set_ylabel(str(user)[:10], fontsize=7)
    fig.suptitle(
        f"{name}: w_p : w_t sweep ({params['mode']}, seed {int(selections['seed'].min())}); "
        "red = argmax z",
        fontsize=9,
    )
    fig.tight_layout()
    return fig
