"""PMG, the method of the paper (§3), as one object: "personalize this for these users".

    pmg = PMG(generator, scorer, PMGSettings.from_params(params["weighted_generation"]), llm=llm)
    k_p, k_t = pmg.keywords(behavior_texts, items, params[scene]["keyword_extraction"],
                            adapter="lora", keyword_adapter=adapter)  # §3.2.2: k^p, k^t by LLM_g
    requests = pd.DataFrame({"user_id": ..., "target": ..., "preference_text": ...,
                             "target_text": ...})           # k^p, k^t joined with ", "
    result = pmg.personalize(requests, soft={user_id: E_m})  # §3.3 E_m optional; §3.4
    result.candidates   # every candidate: user, seed, noise seed, w_p, w_t, d_p, d_t, z, chosen
    result.chosen       # {"<user>/s<seed>": the chosen image}

It reads top to bottom as the paper:
  §3.2.2  `keywords`: k^p = merge(LLM_g(p, a_i, e, x, y)) over the scene's attributes, k^t =
          prefix + LLM_g(p, e, x^t) (`components.method.keywords`, the functions the keyword_extraction
          nodes run);
  §3.3    `soft_embeddings`: E_m = LLM_f(behavior prompt) through the bias-correction embedder;
  §3.4    `conditions`: E^p = concat(E_m, E_k), E^t; `generate`: one denoising batch per chunk of
          candidates over the (w_p, w_t) grid; `score`: d_p, d_t by the scorer; z = alpha log d_p
          + (1 - alpha) log d_t; `select`: the argmax per (user, noise seed).
A `Variant` switches parts off (paper Table 1's ablations and the compute-matched controls of
DESIGN.md §5) or swaps whose preference conditions it (the ORACLE control, the shuffled PLACEBO);
`render` is the plain text-to-image call of the same generator (paper §4.5's
Generated-user images and posters, the embedded generator's checks).

Every stage that generates calls this object: the weighted_generation, recommendation and
model_preparation nodes, the benchmarks and the demo (which also takes its keywords from `keywords`). A candidate's starting noise depends only on its noise
seed, never on how candidates are chunked into calls, so results do not depend on batch sizes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from typing import Any

import pandas as pd
import torch
from PIL import Image

from pmg_kedro.components.data.images import to_array, to_pil
from pmg_kedro.components.method.selection import choose, weight_grid, z_scores
from pmg_kedro.components.method.soft_embeddings import preference_condition
from pmg_kedro.components.models.params import settings_from_params
from pmg_kedro.components.models.sharding import ShardSettings, run_shards

logger = logging.getLogger(__name__)

# The candidates table (and, with the scores, the selections table) of `personalize`.
CANDIDATE_COLUMNS = [
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
]
SELECTION_COLUMNS = [
    *CANDIDATE_COLUMNS,
    "d_p",
    "d_t",
    "z",
    "floored",
    "alpha",
    "select_by",
    "chosen",
]
REQUEST_COLUMNS = ("user_id", "target", "preference_text", "target_text")


@dataclass(frozen=True)
class PMGSettings:
    """The method's settings (paper §3.4; defaults are the paper's: Figure 7's five weight pairs,
    DDIM at 50 steps, guidance 7.5, alpha 0.5, CLIP's 77-token context)."""

    seeds: tuple[int, ...] = (0,)
    mode: str = "embedding_scale"  # paper formula; or composed_guidance (ours)
    sampler: str = "ddim"
    steps: int = 50
    guidance_scale: float = 7.5
    weight_ratios: tuple[tuple[float, float], ...] = ((0, 4), (1, 3), (2, 2), (3, 1), (4, 0))
    weight_total: float = 2.0
    alpha: float = 0.5
    cosine_floor: float = 0.001
    candidates_per_batch: int = 16
    score_batch_size: int = 64
    max_condition_tokens: int | None = 77

    # keys of a `weighted_generation` parameters block that belong to its nodes, not the method
    NODE_KEYS = frozenset({"figure_users", "category_column", "placebo_seed"})

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PMGSettings:
        """From a `weighted_generation` parameters block (`models.params.settings_from_params`:
        an unknown key is an error); its node-level keys (NODE_KEYS) are not the method's."""
        method = {k: v for k, v in params.items() if k not in cls.NODE_KEYS}
        return settings_from_params(
            cls,
            method,
            "weighted_generation",
            seeds=lambda seeds: tuple(int(s) for s in seeds),
            weight_ratios=lambda ratios: tuple(tuple(r) for r in ratios),
        )

    def replace(self, **changes: Any) -> PMGSettings:
        return PMGSettings(**{**{f.name: getattr(self, f.name) for f in fields(self)}, **changes})

    @property
    def grid(self) -> list[tuple[float, float]]:
        """The (w_p, w_t) pairs, ratios scaled to sum `weight_total` (2:2 -> (1, 1))."""
        return weight_grid([list(r) for r in self.weight_ratios], float(self.weight_total))


@dataclass(frozen=True)
class Variant:
    """Which parts of PMG run (paper Table 1's ablations; DESIGN.md §5's controls).

    `keywords` / `embeddings`: E_k / E_m in E^p; `grid`: candidates over the weight grid (else one
    candidate at (1, 1), or, without any preference part, `candidates` target-only noise draws: 1,
    or "grid" for as many as the grid has, the compute-matched best-of-N); `select_by`: z or d_t.
    `preference`: where k^p comes from — "llm" (paper §3.2), "oracle" (a SIMULATED user's hidden
    taste in words, the positive control of issue 29: the most keywords can carry; never a row
    PMG is judged by) or "shuffled" (the PLACEBO: k^p AND E_m of ANOTHER evaluation user, a seeded
    derangement, so d_p is scored against that donor's k^p: PMG as if the user were somebody
    else; never a row PMG is judged by, it judges whether a PMG gain is personal, as Table 3's
    Shuffled-user does). `target`: the target condition x^t / k^t — "keywords" (k^t from the
    target item, the paper's) or "category" (the target item's category only, "ankle boot": any
    taste in the image must then come from the user's history).
    """

    name: str = "pmg"
    keywords: bool = True
    embeddings: bool = True
    grid: bool = True
    select_by: str = "z"
    candidates: int | str = 1
    preference: str = "llm"
    target: str = "keywords"

    PREFERENCE_SOURCES = ("llm", "oracle", "shuffled")
    TARGET_SOURCES = ("keywords", "category")

    def __post_init__(self) -> None:
        if self.preference not in self.PREFERENCE_SOURCES:
            raise ValueError(
                f"variant {self.name}: preference {self.preference!r} is not one of "
                f"{self.PREFERENCE_SOURCES}"
            )
        if self.target not in self.TARGET_SOURCES:
            raise ValueError(
                f"variant {self.name}: target {self.target!r} is not one of {self.TARGET_SOURCES}"
            )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Variant:
        """From an `ablations` entry (conf/base/parameters_scenes.yml); unknown keys are errors."""
        return settings_from_params(cls, params, "ablations entry")

    def requests_for(self, requests: pd.DataFrame) -> pd.DataFrame:
        """`requests` with the texts this variant conditions and scores on: k^p from the
        `oracle_text` column for an oracle variant; for a shuffled one k^p from `shuffled_text`
        and an `embedding_user` column (`shuffled_user`: whose E_m `PMG.conditions` takes); k^t
        from `category_text` for a category target. Raises where the requests lack them
        (`missing_texts` says why first)."""
        why = self.missing_texts(requests)
        if why:
            raise ValueError(f"variant {self.name}: {why}")
        swapped = requests.copy()
        if self.preference == "oracle":
            swapped["preference_text"] = requests["oracle_text"]
        if self.preference == "shuffled":
            swapped["preference_text"] = requests["shuffled_text"]
            swapped["embedding_user"] = requests["shuffled_user"]
        if self.target == "category":
            swapped["target_text"] = requests["category_text"]
        return swapped

    def missing_texts(self, requests: pd.DataFrame) -> str | None:
        """Why this variant cannot run on `requests` (None: it can)."""
        needs = []
        if self.preference == "oracle":
            needs.append(("oracle_text", "oracle keywords need simulated users' hidden tastes"))
        if self.preference == "shuffled":
            why = (
                "a shuffled preference needs at least 2 evaluation users and a placebo seed "
                "(another user's k^p and E_m)"
            )
            needs += [("shuffled_user", why), ("shuffled_text", why)]
        if self.target == "category":
            needs.append(("category_text", "a category target needs an item category column"))
        for column, why in needs:
            if column not in requests.columns or not requests[column].fillna("").astype(bool).all():
                return why
        return None

    @property
    def has_preference(self) -> bool:
        return self.keywords or self.embeddings


FULL = Variant()  # PMG as the paper has it


def noise_seed(seed: int, draw: int) -> int:
    """The starting noise of draw `draw` under seed `seed`; draw 0 is `seed` itself, so a
    compute-matched control's first candidate equals the one-image baseline's image."""
    return int(seed) if draw == 0 else int(seed) * 1000 + int(draw)


def weight_tag(w_p: float, w_t: float) -> str:
    return f"wp{w_p:g}_wt{w_t:g}"


def candidate_plan(variant: Variant, settings: PMGSettings) -> list[tuple[float, float, int]]:
    """(w_p, w_t, draw) of every candidate of one (user, seed) under `variant`."""
    if variant.grid:
        if not variant.has_preference:
            raise ValueError(f"variant {variant.name}: a weight grid needs a preference part")
        return [(w_p, w_t, 0) for w_p, w_t in settings.grid]
    if variant.has_preference:
        return [(1.0, 1.0, 0)]  # the plain concatenation, no weighting
    n = len(settings.grid) if variant.candidates == "grid" else int(variant.candidates)
    return [(0.0, 1.0, draw) for draw in range(n)]


@dataclass
class Personalization:
    """What `personalize` returns: every candidate with its scores, the images, the choice."""

    selections: pd.DataFrame  # SELECTION_COLUMNS, one row per candidate
    images: dict[str, Image.Image]  # every candidate, keyed by image_key
    chosen: dict[str, Image.Image]  # "<user>/s<seed>" -> the chosen candidate's image
    seconds: dict[str, float] = field(default_factory=dict)  # generation, scoring

    def for_user(self, user_id: str) -> pd.DataFrame:
        return self.selections[self.selections["user_id"] == user_id]


class PMG:
    """LLM_g (keywords), LLM_f (soft embeddings, optional), the generator and the scorer, with one
    settings object; see the module docstring. `scorer` may be None for `render` alone."""

    def __init__(
        self,
        generator,
        scorer=None,
        settings: PMGSettings | None = None,
        *,
        llm=None,
        embedder=None,
    ):
        self.generator = generator
        self.scorer = scorer
        self.settings = settings or PMGSettings()
        self.llm = llm
        self.embedder = embedder

    # -- §3.2.2 keywords ------------------------------------------------------------------------
    def keywords(
        self,
        behavior_texts: pd.DataFrame,
        items: pd.DataFrame,
        params: dict[str, Any],
        *,
        adapter: str = "none",
        keyword_adapter: Mapping[str, Any] | None = None,
        merge: Callable[[], Any] | None = None,
        concurrent: bool = False,
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(k^p table, k^t table) of the behavior rows, with the scene's `keyword_extraction`
        parameters (prompts, attributes, K_p, K_t, fallback rules). k^p by LLM_g as `adapter`
        says (`none`: zero-shot; `lora`: `keyword_adapter` merged in, after refusing evaluation
        users it was trained on; `merge` returns the adapted LLM made once by the caller), k^t
        always zero-shot. The keyword_extraction nodes run the same two functions in shards.

        `concurrent` (with `lora` only: k^p and k^t then run on two copies of the weights): k^t
        in a second thread while k^p runs, each LLM call at the LLM's own thread count, so a
        request for a few users takes the longer of the two instead of their sum (the demo; the
        answers are the same)."""
        from pmg_kedro.components.method.keywords import preference_keywords, target_keywords

        if self.llm is None:
            raise ValueError("PMG.keywords needs an LLM (PMG(..., llm=...))")
        keyword_adapter = dict(keyword_adapter or {})

        def k_p() -> pd.DataFrame:
            return preference_keywords(
                behavior_texts, items, self.llm, params, adapter, keyword_adapter, merge
            )

        def k_t() -> pd.DataFrame:
            return target_keywords(behavior_texts, items, self.llm, params)

        if not (concurrent and adapter == "lora"):  # one LLM object: one call at a time
            return k_p(), k_t()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pmg-target-keywords") as pool:
            target = pool.submit(k_t)
            preference = k_p()
            return preference, target.result()

    # -- §3.3 soft preference embeddings --------------------------------------------------------
    @torch.no_grad()
    def soft_embeddings(
        self, user_ids: list[str], prompts: list[str], batch_size: int = 32
    ) -> dict[str, torch.Tensor]:
        """E_m per user, (L, dim) float32 on the CPU, from LLM_f on each behavior prompt.

        With P-Tuning v2 prefixes a user's E_m depends on the left padding of its batch (the
        prompt's positions shift against the prefixes): use the batch size the embeddings were
        made with to reproduce them exactly (embedding_training: `training.batch_size`)."""
        if self.embedder is None:
            raise ValueError("PMG.soft_embeddings needs an embedder (PMG(..., embedder=...))")
        out = [
            self.embedder(prompts[i : i + batch_size]) for i in range(0, len(prompts), batch_size)
        ]
        soft = torch.cat(out) if out else torch.empty(0)
        return {u: soft[i].float().cpu() for i, u in enumerate(user_ids)}

    # -- §3.4 conditions, weighted generation, scoring, selection -------------------------------
    def conditions(
        self,
        requests: pd.DataFrame,
        variant: Variant = FULL,
        soft: Mapping[str, torch.Tensor] | None = None,
    ) -> list[dict[str, Any]]:
        """Per candidate: its user, seeds, weights and conditions [E^p, E^t].

        E^p = concat(E_m, E_k) (`preference_condition`); a variant without keywords drops E_k, one
        without embeddings drops E_m. E_m is `soft[embedding_user]` where the requests have that
        column (the shuffled PLACEBO: another user's E_m, `Variant.requests_for`), else the
        row's own user's. A zero weight drops its condition rather than attending to zero vectors.
        """
        settings = self.settings
        target = self.generator.encode_text(requests["target_text"].tolist()).split()
        keywords = self.generator.encode_text(requests["preference_text"].tolist()).split()
        owners = requests.get("embedding_user", requests["user_id"]).tolist()
        plan = candidate_plan(variant, settings)
        rows = []
        for i, (user, item) in enumerate(zip(requests["user_id"], requests["target"], strict=True)):
            preference = None
            if variant.has_preference:
                e_m = soft[owners[i]] if variant.embeddings else None
                e_k = keywords[i] if variant.keywords else None
                preference = preference_condition(e_m, e_k, settings.max_condition_tokens)
            for seed in settings.seeds:
                for w_p, w_t, draw in plan:
                    kept = [(c, w) for c, w in ((preference, w_p), (target[i], w_t)) if w > 0]
                    tag = weight_tag(w_p, w_t) if draw == 0 else f"draw{draw}"
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

    def denoise(self, rows: list[dict[str, Any]], what: str = "candidates") -> list[Image.Image]:
        """Images of candidate rows, `candidates_per_batch` candidates per denoising call."""
        s = self.settings
        chunk, images, start = int(s.candidates_per_batch), [], time.perf_counter()
        for begin in range(0, len(rows), chunk):
            part = rows[begin : begin + chunk]
            out = self.generator.generate(
                [r["conditions"] for r in part],
                [r["weights"] for r in part],
                mode=s.mode,
                noise_seeds=[r["noise_seed"] for r in part],
                sampler=s.sampler,
                steps=int(s.steps),
                guidance_scale=float(s.guidance_scale),
            )
            images += to_pil(out)
            _log_progress(what, len(images), len(rows), start, len(part), s.steps, s.sampler)
        return images

    def generate(
        self,
        requests: pd.DataFrame,
        variant: Variant = FULL,
        soft: Mapping[str, torch.Tensor] | None = None,
    ) -> tuple[pd.DataFrame, dict[str, Image.Image]]:
        """Every candidate of every (request, seed), chunked into denoising calls: the candidates
        table (CANDIDATE_COLUMNS) and the images keyed "<user>/s<seed>/<weights or draw>"."""
        _check_requests(requests)
        rows = self.conditions(requests, variant, soft)
        images = self.denoise(rows, variant.name)
        s = self.settings
        candidates = pd.DataFrame(
            [{k: v for k, v in r.items() if k not in ("conditions", "weights")} for r in rows]
        ).assign(
            variant=variant.name,
            steps=int(s.steps),
            sampler=s.sampler,
            mode=s.mode,
            guidance_scale=float(s.guidance_scale),
        )
        return candidates, dict(zip(candidates["image_key"], images, strict=True))

    def score(
        self,
        candidates: pd.DataFrame,
        images: Mapping[str, Image.Image],
        requests: pd.DataFrame,
        variant: Variant = FULL,
    ) -> pd.DataFrame:
        """d_p (cosine with k^p), d_t (with k^t), z and the choice per (user, seed): argmax z, or
        argmax d_t for target-only variants; the SELECTION_COLUMNS table."""
        if self.scorer is None:
            raise ValueError("PMG.score needs a scorer (PMG(generator, scorer, ...))")
        texts = requests.set_index("user_id").loc[candidates["user_id"]]
        preference, target = texts["preference_text"].tolist(), texts["target_text"].tolist()
        keys, batch = candidates["image_key"].tolist(), int(self.settings.score_batch_size)
        cosines = []
        for i in range(0, len(keys), batch):  # at most `batch` decoded images in memory at a time
            pixels = torch.from_numpy(to_array([images[k] for k in keys[i : i + batch]]))
            cosines.append(
                self.scorer.paired_scores(
                    pixels, [preference[i : i + batch], target[i : i + batch]], batch
                )
            )
        d_p, d_t = torch.cat(cosines, dim=1).float().cpu().numpy()
        return self.select(candidates.assign(d_p=d_p, d_t=d_t), variant)

    def select(self, scored: pd.DataFrame, variant: Variant = FULL) -> pd.DataFrame:
        """z = alpha log d_p + (1 - alpha) log d_t (cosines floored first) and the chosen
        candidate of each (user, seed) by `variant.select_by`."""
        alpha, floor = float(self.settings.alpha), float(self.settings.cosine_floor)
        scored = scored.copy()
        scored["z"] = z_scores(scored["d_p"], scored["d_t"], alpha, floor)
        scored["floored"] = (scored["d_p"] < floor) | (scored["d_t"] < floor)
        scored["alpha"] = alpha
        scored["select_by"] = variant.select_by
        scored["chosen"] = choose(scored.assign(z=scored[variant.select_by]), ["user_id", "seed"])
        return scored[SELECTION_COLUMNS]

    def personalize(
        self,
        requests: pd.DataFrame,
        variant: Variant = FULL,
        soft: Mapping[str, torch.Tensor] | None = None,
    ) -> Personalization:
        """§3.4 for a batch of requests: generate every candidate, score it, choose per (user,
        seed). `soft`: E_m per user, needed when `variant.embeddings`."""
        start = time.perf_counter()
        candidates, images = self.generate(requests, variant, soft)
        generated = time.perf_counter()
        selections = self.score(candidates, images, requests, variant)
        seconds = {
            "generation": generated - start,
            "scoring_selection": time.perf_counter() - generated,
        }
        return Personalization(selections, images, chosen_images(selections, images), seconds)

    # -- the generator alone --------------------------------------------------------------------
    def preference_only(
        self, requests: pd.DataFrame, soft: Mapping[str, torch.Tensor] | None = None
    ) -> dict[str, Image.Image]:
        """One image per request from E^p alone (no target), first seed: paper §4.5's
        Generated-user image; E^p = concat(E_m, E_k) where `soft` is given, else E_k."""
        variant = Variant("user_only", keywords=True, embeddings=soft is not None, grid=True)
        only = PMG(
            self.generator,
            settings=self.settings.replace(
                seeds=self.settings.seeds[:1], weight_ratios=((1, 0),), weight_total=1
            ),
        )
        rows = only.conditions(requests, variant, soft)
        images = only.denoise(rows, "user-only")
        return {r["user_id"]: im for r, im in zip(rows, images, strict=True)}

    def render(
        self,
        texts: list[str],
        *,
        seed: int,
        steps: int,
        guidance_scale: float,
        sampler: str = "ddim",
        mode: str = "embedding_scale",
        batch_size: int | None = None,
        repeats: int = 1,
        same_noise: bool = True,
        what: str = "images",
    ) -> torch.Tensor:
        """(len(texts) * repeats, 3, H, W) in [0, 1]: `repeats` images per text, the text as the only condition (weight 1), `batch_size`
        texts per denoising call (None: all at once).

        `same_noise`: every image starts from the same seeded noise, so images differ by their
        text only and do not depend on the batching beyond float rounding (posters, Generated-user
        images of §4.5);
        else one seeded draw of distinct noises per call (the sample grids of one batch)."""
        batch = len(texts) if batch_size is None else int(batch_size)
        images: list[torch.Tensor] = []
        done, start = 0, time.perf_counter()
        for begin in range(0, len(texts), max(batch, 1)):
            encoded = self.generator.encode_text(texts[begin : begin + batch]).split()
            conditions = [[c] for c in encoded for _ in range(repeats)]
            out = self.generator.generate(
                conditions,
                [[1.0]] * len(conditions),
                mode=mode,
                seed=int(seed),
                steps=int(steps),
                guidance_scale=float(guidance_scale),
                sampler=sampler,
                same_noise=same_noise,
            )
            images.append(out)
            done += len(out)
            _log_progress(what, done, len(texts) * repeats, start, len(conditions), steps, sampler)
        return torch.cat(images) if images else torch.empty(0)


def chosen_images(
    selections: pd.DataFrame, images: Mapping[str, Image.Image]
) -> dict[str, Image.Image]:
    """{"<user>/s<seed>": image} of the chosen candidates."""
    return {
        f"{row.user_id}/s{row.seed}": images[row.image_key]
        for row in selections[selections["chosen"]].itertuples()
    }


def requests_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """A requests table from dicts with user_id, target, preference_text, target_text."""
    table = pd.DataFrame(list(rows))
    _check_requests(table)
    return table


def _check_requests(requests: pd.DataFrame) -> None:
    missing = [c for c in REQUEST_COLUMNS if c not in requests.columns]
    if missing:
        raise ValueError(f"requests lack columns {missing}; a request has {list(REQUEST_COLUMNS)}")
    if requests["user_id"].duplicated().any():
        dup = requests.loc[requests["user_id"].duplicated(), "user_id"].tolist()
        raise ValueError(f"one request per user: {dup[:5]} appear more than once")


def _log_progress(what, done, total, start, batch, steps, sampler) -> None:
    logger.info(
        "%s: %d/%d images (%.3f s/image, batch %d, %d %s steps)",
        what,
        done,
        total,
        (time.perf_counter() - start) / max(done, 1),
        batch,
        int(steps),
        sampler,
    )


def render_in_shards(
    generator,
    keys: list[str],
    texts: list[str],
    params: dict[str, Any],
    what: str,
    sharding: dict[str, Any] | None = None,
) -> list[Image.Image]:
    """One image per text, its text as the only condition (weight 1), `batch_size` texts per
    denoising call (`PMG.render`), in shards of keys (users or items) where `sharding` says so.
    Every image starts from the same seeded noise, so images differ by their condition only."""
    if not texts:
        return []
    parts = run_shards(
        ShardSettings.from_params(sharding),
        what.replace(" ", "_"),
        pd.DataFrame({"key": keys, "text": texts}),
        _render_shard,
        data={"params": params, "what": what},
        models={"generator": generator},
        user_column="key",
    )
    return [image for part in parts for image in part]


def _render_shard(rows, params, what, generator) -> list[Image.Image]:
    images = PMG(generator).render(
        rows["text"].tolist(),
        seed=int(params["seed"]),
        steps=int(params["steps"]),
        guidance_scale=float(params["guidance_scale"]),
        sampler=params["sampler"],
        mode=params["mode"],
        batch_size=int(params["batch_size"]),
        what=what,
    )
    return to_pil(images)
