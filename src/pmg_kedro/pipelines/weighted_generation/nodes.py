"""weighted_generation nodes (paper §3.4): the method object `components.method.pmg.PMG` per variant —
candidates over the weight grid, scorer cosines d_p / d_t, the chosen image per (user, noise seed);
the Table 1 variants and the controls of DESIGN.md §5; Figure 7-shaped strips; a report of what ran.

Every evaluation user runs under every noise seed of `seeds`, the same seeds in every variant, so
variants compare paired by (user, seed). A candidate's starting noise depends only on its noise
seed (`Generator.generate(noise_seeds=...)`), never on how candidates are chunked into calls.
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from PIL import Image

from ...components.data.hidden_taste import has_hidden_tastes, oracle_keywords
from ...components.data.splits import derangement
from ...components.method.pmg import (
    CANDIDATE_COLUMNS,
    PMG,
    SELECTION_COLUMNS,
    PMGSettings,
    Variant,
    chosen_images,
)
from ...components.method.selection import weight_grid
from ...components.models.sharding import ShardSettings, concat_tables, run_shards
from ...components.reporting.figures import subplots

logger = logging.getLogger(__name__)

NO_SOFT_EMBEDDINGS = "not applicable: this scene has no soft preference embeddings ({why})"


def build_generation_requests(
    histories: pd.DataFrame,
    user_split: pd.DataFrame,
    preference_keywords: pd.DataFrame,
    target_keywords: pd.DataFrame,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
    params: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per evaluation user of the protocol's split: target and the texts of k^p and k^t,
    and for the positive controls (issue 29) the ORACLE k^p (`oracle_text`: a SIMULATED user's
    hidden taste; empty for real users) and the target item's category (`category_text`, from the
    items column `params.category_column`; empty where the scene declares none); for the PLACEBO
    the donor (`shuffled_user`: another evaluation user, `_donors`) and its k^p (`shuffled_text`).
    Without `items`, `users` and `params` (the demo's one request) all are empty."""
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
    user_ids = [u for u in histories["user_id"] if u in evaluation]
    missing = [u for u in user_ids if u not in k_p.index or u not in k_t.index]
    if missing:
        logger.warning("%d evaluation users have no keywords: %s", len(missing), missing[:10])
    user_ids = [u for u in user_ids if u not in missing]
    if not user_ids:
        raise ValueError("no evaluation user has both preference and target keywords")
    targets = histories.set_index("user_id")["target"]
    target_ids = [str(targets[u]) for u in user_ids]
    preference_texts = [", ".join(k_p[u]) for u in user_ids]
    donors = _donors(len(user_ids), (params or {}).get("placebo_seed"))
    return pd.DataFrame(
        {
            "user_id": user_ids,
            "target": target_ids,
            "preference_text": preference_texts,
            "target_text": [", ".join(k_t[u]) for u in user_ids],
            "oracle_text": _oracle_texts(user_ids, users),
            "category_text": _category_texts(
                target_ids, items, (params or {}).get("category_column")
            ),
            "shuffled_user": [user_ids[d] if d >= 0 else "" for d in donors],
            "shuffled_text": [preference_texts[d] if d >= 0 else "" for d in donors],
        }
    )


def _donors(n: int, seed: int | None) -> list[int]:
    """The PLACEBO's donor of each of the n evaluation users (in their order): a seeded
    derangement (`splits.derangement`, as Table 3's Shuffled-user), so no user keeps its own
    preference; -1 for every user without a seed or with a single user (nothing to derange)."""
    if seed is None or n < 2:
        return [-1] * n
    return [int(d) for d in derangement(n, int(seed))]


def _oracle_texts(user_ids: list[str], users: pd.DataFrame) -> list[str]:
    """The ORACLE k^p of each user (hidden taste as keywords), "" where users have none."""
    if users is None or not has_hidden_tastes(users):
        return [""] * len(user_ids)
    oracle = oracle_keywords(users)
    return [", ".join(oracle[str(u)]) if str(u) in oracle.index else "" for u in user_ids]


def _category_texts(target_ids: list[str], items: pd.DataFrame, column: str | None) -> list[str]:
    """Each target item's category (items.`column`), "" without a declared column or where the
    items lack it (POG items have no Fashion-MNIST class: the category variants then say "not
    applicable")."""
    if not column or items is None or column not in items.columns:
        if column:
            logger.info("category target: items have no %r column (not applicable)", column)
        return [""] * len(target_ids)
    category = items.assign(item_id=items["item_id"].astype(str)).set_index("item_id")[column]
    missing = sorted(set(target_ids) - set(category.index))
    if missing:
        raise KeyError(f"items: no row for target items {missing[:5]}")
    return [str(category[t]) for t in target_ids]


def _pmg(params: dict[str, Any], generator=None, scorer=None) -> PMG:
    return PMG(generator, scorer, PMGSettings.from_params(params))


def _not_applicable_why(
    ablation: dict[str, Any], soft_embeddings: dict[str, Any], requests: pd.DataFrame
) -> str | None:
    if ablation["embeddings"] and "not_applicable" in soft_embeddings.get("metadata", {}):
        return NO_SOFT_EMBEDDINGS.format(why=soft_embeddings["metadata"]["not_applicable"])
    why = Variant.from_params(ablation).missing_texts(requests)
    return f"not applicable: {why}" if why else None


def generate_candidates(
    requests: pd.DataFrame,
    generator,
    soft_embeddings: dict[str, Any],
    params: dict[str, Any],
    ablation: dict[str, Any],
    sharding: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Image.Image]]:
    """Every candidate of every (evaluation user, seed) for one variant (`PMG.generate`), in shards
    of users where `sharding` says so. Returns the candidates table and the images keyed
    "<user>/s<seed>/<weights or draw>"; empty when the variant does not apply to the scene (the
    report says why).
    """
    why = _not_applicable_why(ablation, soft_embeddings, requests)
    if why:
        logger.info("%s: %s", ablation["name"], why)
        return pd.DataFrame(columns=CANDIDATE_COLUMNS), {}
    parts = run_shards(
        ShardSettings.from_params(sharding),
        f"{ablation['name']}.candidates",
        Variant.from_params(ablation).requests_for(requests),
        _candidates_of_shard,
        data={"soft": soft_embeddings.get("tensors"), "params": params, "ablation": ablation},
        models={"generator": generator},
    )
    images = {key: image for _, shard_images in parts for key, image in shard_images.items()}
    return concat_tables([table for table, _ in parts]), images


def _candidates_of_shard(requests, soft, params, ablation, generator):
    return _pmg(params, generator).generate(requests, Variant.from_params(ablation), soft)


def score_candidates(
    candidates: pd.DataFrame,
    candidate_images: dict[str, Image.Image],
    requests: pd.DataFrame,
    scorer,
    params: dict[str, Any],
    ablation: dict[str, Any],
    sharding: dict[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Image.Image]]:
    """d_p (cosine with k^p), d_t (with k^t), z, and the chosen candidate per (user, seed): argmax
    z, or argmax d_t for target-only variants (`PMG.score`, §3.4), in shards of users. Chosen
    images keyed "<user>/s<seed>"."""
    if candidates.empty:
        return pd.DataFrame(columns=SELECTION_COLUMNS), {}
    variant = Variant.from_params(ablation)
    # Each shard carries its own candidates' images (a column), not the whole variant's.
    parts = run_shards(
        ShardSettings.from_params(sharding),
        f"{variant.name}.selections",
        candidates.assign(image=candidates["image_key"].map(candidate_images)),
        _scores_of_shard,
        data={"requests": variant.requests_for(requests), "params": params, "ablation": ablation},
        models={"scorer": scorer},
    )
    scored = concat_tables(parts)
    chosen = chosen_images(scored, candidate_images)
    floor = float(params["cosine_floor"])
    logger.info(
        "%s: chose by %s among %d candidates for %d (user, seed) pairs (%.1f%% of cosines floored "
        "at %g before the log)",
        variant.name,
        variant.select_by,
        len(scored),
        len(chosen),
        100 * scored["floored"].mean(),
        floor,
    )
    return scored, chosen


def _scores_of_shard(candidates, requests, params, ablation, scorer) -> pd.DataFrame:
    images = dict(zip(candidates["image_key"], candidates["image"], strict=True))
    return _pmg(params, scorer=scorer).score(
        candidates.drop(columns="image"), images, requests, Variant.from_params(ablation)
    )


def generate_user_images(
    requests: pd.DataFrame,
    generator,
    soft_embeddings: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, Image.Image]:
    """One image per evaluation user from the preference condition alone, no target, first seed
    (paper §4.5's Generated-user, `PMG.preference_only`): E^p = concat(E_m, E_k) where soft
    embeddings exist, else E_k."""
    with_embeddings = "not_applicable" not in soft_embeddings.get("metadata", {})
    soft = soft_embeddings["tensors"] if with_embeddings else None
    images = _pmg(params, generator).preference_only(requests, soft)
    logger.info("user-only images: %d users (soft embeddings: %s)", len(images), with_embeddings)
    return images


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
    pmg = _pmg(params, generator)
    concatenated = Variant("table2", keywords=True, embeddings=True, grid=False)
    records, images = [], {}
    for entry in entries:
        tensors = {u: soft_embedding_sweep["tensors"][f"{entry}/{u}"] for u in requests["user_id"]}
        rows = pmg.conditions(requests, concatenated, tensors)
        for row, image in zip(rows, pmg.denoise(rows, entry), strict=True):
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
    requests: pd.DataFrame,
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
        # the seed of the shuffled PLACEBO's derangement of evaluation users (None: not drawn)
        "placebo_seed": None if params.get("placebo_seed") is None else int(params["placebo_seed"]),
        "variants": {},
        "not_applicable": {},
    }
    for name, table in selections.items():
        ablation = ablations[name]
        if table.empty:
            why = _not_applicable_why(ablation, soft_embeddings, requests)
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
            "preference": ablation.get("preference", "llm"),
            "target": ablation.get("target", "keywords"),
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
    fig, axes = subplots(len(users), len(grid), size=(1.6 * len(grid), 1.9 * len(users)))
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
