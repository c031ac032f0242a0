"""The demo's logic, without any web layer: one request in, the whole trace out.

A request names a scene and either one of its evaluation users (their behavior texts as the last
`kedro run` wrote them) or a composed history (item ids, the current message and conversation
where the scene has them, optionally one image of the person's own). The trace follows the paper:

  §3.2.1  behavior texts x_i, x^t, y: the evaluation user's stored row, or for a composed history
          the behavior_summarization nodes on that history (captions, LLM summaries, the emoticon
          scene's answer masking);
  §3.2.2  k^p per attribute (raw LLM answer, parsed keywords) and k^t: the keyword_extraction
          nodes (keyword adapter or zero-shot as the environment's parameters say);
  §3.3    E_m: the evaluation user's stored soft embeddings, or the trained embedder on the
          composed history's behavior prompt; where neither exists, PMG without embeddings and why;
  §3.4    `PMG.personalize` over the weight grid (w_p, w_t, d_p, d_t, z, the chosen candidate) and
          the target-only one-image baseline (`without_both`); `reselect` re-runs `PMG.select` with
          another alpha among the same candidates, without generating again.

Models load once; model work runs one request at a time (one lock: the LLM keeps per-call state
and torch's thread settings are process-wide), so a response never depends on what ran beside it.
Nothing here reads a path a request names: items are looked up by id in the scene's catalog data,
images come from the catalog's image index, an upload arrives as bytes.

The request, its limits and checks: `requests`; the scene data: `scene_data`; the trace: `trace`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from PIL import Image

from ..components.data.images import load_image
from ..components.method.keyword_adapter import adapted_llm
from ..components.method.pmg import CANDIDATE_COLUMNS, PMG, PMGSettings, Variant
from ..components.reporting.environment import torch_threads
from ..pipelines.behavior_summarization.nodes import (
    caption_items,
    select_users,
    summarize_behavior,
)
from ..pipelines.embedding_training.nodes import _behavior_prompt
from ..pipelines.weighted_generation.nodes import build_generation_requests
from .requests import (
    MAX_TEXT_CHARS,
    DemoError,
    DemoRequest,
    RequestValidation,
    _alpha,
    _decode_upload,
)
from .scene_data import REQUIRED, SceneData, load_scene
from .trace import Trace

logger = logging.getLogger(__name__)

# What the page's item search returns at most, and the traces the service keeps.
SEARCH_RESULTS = 50
TRACES_KEPT = 64  # traces the alpha slider can re-select in (oldest dropped first)

COMPOSED_USER = "composed"  # the user id of a composed history in every table
UPLOAD_ITEM = "upload"  # the item id of the person's own image in a composed history
NO_TARGET_ITEM = "no-target"  # the target of a composed request whose x^t is the message alone


class DemoService(RequestValidation):
    """PMG for one request at a time, over models and scene data loaded once (see module doc)."""

    def __init__(
        self,
        env: str,
        params: Mapping[str, Any],
        llm,
        generator,
        scorer,
        scenes: Mapping[str, SceneData],
        keyword_adapter: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
        threads: int | None = 1,
    ):
        self.env = env
        self.params = params
        self.llm = llm
        self.generator = generator
        self.scorer = scorer
        self.scenes = dict(scenes)
        self.keyword_adapter = dict(keyword_adapter or {})
        # The keyword node merges the adapter once per run; a request must not pay for a merge
        # (a copy of the LLM's weights): merged once here, handed to PMG.keywords as `merge`.
        self.adapted_llm = (
            adapted_llm(llm, self.keyword_adapter, "demo (catalog entry keyword_adapter)")
            if self.keyword_adapter.get("tensors")
            else None
        )
        self.provenance = {"environment": env, **dict(provenance or {})}
        # One request's model work runs with this many torch threads (None: the process's).
        # One, measured on this 2-core CPU with the base models (median over 9 evaluation users,
        # keywords + grid + selection): 2.65-2.87 s at one thread against 3.46-3.50 s at two;
        # k^t then runs beside k^p on the second core (PMG.keywords(concurrent=True)): 2.0 s.
        self.threads = threads
        self._models = threading.Lock()
        self._state = threading.Lock()
        self._busy: dict[str, float] = {}  # page session -> when its running request started
        self._traces: OrderedDict[str, Trace] = OrderedDict()
        self._images: dict[tuple[str, str], Image.Image | None] = {}

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: str = "base", project_path: str | Path = ".") -> DemoService:
        """Models and scene data from the catalog of `env` (the last `kedro run` of it)."""
        from kedro.framework.session import KedroSession
        from kedro.framework.startup import bootstrap_project

        project_path = Path(project_path).resolve()
        bootstrap_project(project_path)
        with KedroSession.create(project_path=project_path, env=env) as session:
            context = session.load_context()
        catalog, params = context.catalog, context.params
        config = context.config_loader["catalog"]
        start = time.perf_counter()
        llm, generator, scorer = (catalog.load(n) for n in ("llm", "generator", "scorer"))
        scene_names = list(params["scenes"])
        uses_adapter = any(
            params[s]["keyword_extraction"].get("llm_adapter", "none") != "none"
            for s in scene_names
        )
        adapter = catalog.load("keyword_adapter") if uses_adapter else None
        scenes = {
            scene: load_scene(catalog, scene, params["scenes"][scene], llm, generator)
            for scene in scene_names
        }
        provenance = {
            "llm": f"{llm.name} (catalog `llm`: {_describe(config.get('llm'))})",
            "generator": f"catalog `generator`: {_describe(config.get('generator'))}",
            "scorer": f"catalog `scorer`: {_describe(config.get('scorer'))}",
            "keyword_adapter": (
                f"catalog `keyword_adapter`: {_describe(config.get('keyword_adapter'))}"
                if uses_adapter
                else "none (zero-shot LLM_g in every scene)"
            ),
            "data_root": _data_root(config),
        }
        logger.info("demo: models and scene data loaded in %.1f s", time.perf_counter() - start)
        return cls(env, params, llm, generator, scorer, scenes, adapter, provenance)

    # -- what the page offers -------------------------------------------------------------------
    def scene(self, name: str) -> SceneData:
        if name not in self.scenes:
            raise DemoError(f"Unknown scene {name!r}: choose one of {sorted(self.scenes)}.")
        data = self.scenes[name]
        if not data.ready:
            raise DemoError(self.not_ready(name))
        return data

    def not_ready(self, name: str) -> str:
        data = self.scenes[name]
        env = "" if self.env == "base" else f" --env {self.env}"
        missing = [m for m in data.missing if m in REQUIRED]
        return (
            f"Scene {name!r} has no data from a run of the {self.env!r} environment yet "
            f"(missing: {', '.join(missing)}). Run `kedro run{env} --pipelines "
            f"ingestion,behavior_summarization` (or the whole `kedro run{env}`; `make run` for "
            "base) first, then restart the demo. The last run's keywords (keyword_extraction) "
            "and soft embeddings (embedding_training) are used where they exist."
        )

    def settings(self, scene: str) -> PMGSettings:
        return PMGSettings.from_params(self.params[scene]["weighted_generation"])

    def needs_target_item(self, scene: str) -> bool:
        """Whether the scene's x^t describes an item (movie, costume) rather than only the
        current message (emoticon: the emoticon sent is what PMG predicts)."""
        return "{item}" in self.params[scene]["behavior_summarization"]["target_text"]

    def text_columns(self, scene: str) -> dict[str, str]:
        """The scene's per-user message and conversation columns (behavior_summarization)."""
        return dict(self.params[scene]["behavior_summarization"].get("columns") or {})

    def item_label(self, scene: str, item_id: str) -> str:
        items = self._items_by_id(scene)
        return f"{items.at[item_id, 'caption']} [{item_id}]" if item_id in items.index else item_id

    def search_items(self, scene: str, query: str, limit: int = SEARCH_RESULTS) -> list[str]:
        """Item ids whose id, title or caption contains `query` (case-insensitive), in catalog
        order; all items (first `limit`) for an empty query."""
        if len(query) > MAX_TEXT_CHARS:
            raise DemoError(
                f"The search has {len(query):,} characters; at most {MAX_TEXT_CHARS:,}."
            )
        items = self.scene(scene).items
        text = items["item_id"].astype(str)
        for column in ("title", "caption"):
            if column in items:
                text = text + " " + items[column].astype(str)
        hits = items.loc[text.str.contains(query.strip(), case=False, regex=False), "item_id"]
        return [str(i) for i in hits[:limit]]

    def user_view(self, scene: str, user_id: str) -> dict[str, Any]:
        """An evaluation user's history (item texts and images) and target, before any request."""
        data = self.scene(scene)
        row = self._behavior_row(data, user_id).iloc[0]
        return {
            "scene": scene,
            "user_id": user_id,
            "simulated": data.simulated,
            "history": [self._item(scene, i) for i in row["history"]],
            "target": self._item(scene, str(row["target"])),
            "target_text": row["target_text"],
            "conversation": row["conversation"],
        }

    # -- one request ----------------------------------------------------------------------------
    def respond(self, request: DemoRequest, session: str | None = None) -> Trace:
        """The trace of one request (module docstring). `session`: the page the request comes
        from; a second request from a page whose first one still runs is refused."""
        request = self.validate(request)
        with self._page(session):
            start = time.perf_counter()
            with self._models, torch_threads(self.threads):
                waited = time.perf_counter() - start
                trace = self._personalize(request)
            trace.seconds = {"waited_for_models": waited, **trace.seconds}
            trace.seconds["total"] = time.perf_counter() - start
        with self._state:
            self._traces[trace.trace_id] = trace
            while len(self._traces) > TRACES_KEPT:
                self._traces.popitem(last=False)
        return trace

    def reselect(self, trace_id: str, alpha: float) -> Trace:
        """The same candidates chosen again with another alpha (`PMG.select`); no generation."""
        alpha = _alpha(alpha)
        with self._state:
            trace = self._traces.get(str(trace_id))
        if trace is None:
            raise DemoError(
                f"No response {trace_id!r} to re-select in: the demo keeps the last {TRACES_KEPT} "
                "responses (and none from before a restart). Ask for a new response."
            )
        settings = trace.settings.replace(alpha=alpha)
        start = time.perf_counter()
        scored = trace.selections[[*CANDIDATE_COLUMNS, "d_p", "d_t"]]
        selections = PMG(self.generator, self.scorer, settings).select(scored, trace.variant)
        seconds = {**trace.seconds, "reselection": time.perf_counter() - start}
        request = replace(trace.request, alpha=alpha)
        updated = replace(
            trace, request=request, settings=settings, selections=selections, seconds=seconds
        )
        with self._state:
            self._traces[trace.trace_id] = updated
        return updated

    # -- the method -----------------------------------------------------------------------------
    def _personalize(self, request: DemoRequest) -> Trace:
        """The whole trace of one request: behavior texts (§3.2.1), k^p and k^t (§3.2.2), E_m
        (§3.3), the weighted candidates and the choice (§3.4), the one-image baseline."""
        scene = request.scene
        data = self.scene(scene)
        seconds: dict[str, float] = {}
        tick = time.perf_counter()
        if request.composed:
            items, behavior = self._compose(data, request)
            seconds["behavior_texts"] = time.perf_counter() - tick
            user_id = COMPOSED_USER
        else:
            items, behavior = data.items, self._behavior_row(data, request.user_id)
            user_id = request.user_id
        tick = time.perf_counter()
        k_p, k_t = self._keywords(scene, behavior, items)
        seconds["keywords"] = time.perf_counter() - tick
        tick = time.perf_counter()
        soft, soft_info = self._soft_embedding(data, request, behavior, items)
        seconds["soft_embeddings"] = time.perf_counter() - tick
        generated = self._generate(request, user_id, behavior, k_p, k_t, soft, seconds)
        row = behavior.iloc[0]
        return Trace(
            trace_id=uuid.uuid4().hex[:12],
            request=request,
            source={
                "kind": "composed_history" if request.composed else "evaluation_user",
                "user_id": user_id,
                "simulated": bool(data.simulated and not request.composed),
            },
            history=self._history_view(scene, row, items, request),
            target={**self._target_view(scene, row, items), "text": row["target_text"]},
            behavior={
                "history_texts": list(row["history_texts"]),
                "target_text": row["target_text"],
                "conversation": row["conversation"],
                "conversation_summary": row["conversation_summary"],
            },
            preference_keywords=_record(k_p.iloc[0]),
            target_keywords=_record(k_t.iloc[0]),
            stored_keywords=None if request.composed else self._stored_keywords(data, user_id),
            soft=soft_info,
            seconds=seconds,
            provenance={
                **self.provenance,
                "scene_data": {k: v for k, v in data.versions.items() if v},
            },
            **generated,
        )

    def _keywords(self, scene: str, behavior: pd.DataFrame, items: pd.DataFrame):
        """k^p (LLM_g as the scene's `llm_adapter` says) and k^t (zero-shot) of one behavior row:
        `PMG.keywords`, the functions the keyword_extraction nodes run."""
        keyword_params = self.params[scene]["keyword_extraction"]
        adapter = keyword_params.get("llm_adapter", "none")
        merged = self.adapted_llm
        return PMG(self.generator, llm=self.llm).keywords(
            behavior,
            items,
            keyword_params,
            adapter=adapter,
            keyword_adapter=self.keyword_adapter,
            merge=(lambda: merged) if merged is not None else None,
            concurrent=True,  # k^t on the base weights beside k^p on the merged copy
        )

    def _generate(self, request, user_id, behavior, k_p, k_t, soft, seconds) -> dict[str, Any]:
        """PMG over the weight grid (full PMG where E_m exists, else without embeddings) and the
        one-image target-only baseline, with their seconds; the Trace fields they fill."""
        requests = build_generation_requests(
            pd.DataFrame({"user_id": [user_id], "target": [str(behavior.iloc[0]["target"])]}),
            pd.DataFrame({"user_id": [user_id], "split": ["evaluation"]}),
            k_p,
            k_t,
        )
        settings = self.settings(request.scene).replace(
            seeds=(request.seed,), mode=request.mode, alpha=request.alpha
        )
        ablations = self.params["ablations"]
        variant = Variant.from_params(
            ablations["pmg" if soft is not None else "without_embeddings"]
        )
        baseline_variant = Variant.from_params(ablations["without_both"])
        pmg = PMG(self.generator, self.scorer, settings, llm=self.llm)
        result = pmg.personalize(requests, variant, {user_id: soft} if soft is not None else None)
        seconds.update(result.seconds)
        tick = time.perf_counter()
        baseline = pmg.personalize(requests, baseline_variant)
        seconds["baseline"] = time.perf_counter() - tick
        return {
            "settings": settings,
            "variant": variant,
            "baseline_variant": baseline_variant,
            "selections": result.selections,
            "images": result.images,
            "baseline": baseline.selections,
            "baseline_image": next(iter(baseline.chosen.values())),
        }

    def _history_view(self, scene, row, items, request) -> list[dict[str, Any]]:
        return [
            {**self._item(scene, i, items, request.upload), "text": t}
            for i, t in zip(row["history"], list(row["history_texts"]), strict=True)
        ]

    def _target_view(self, scene, row, items) -> dict[str, Any]:
        target = str(row["target"])
        if target != NO_TARGET_ITEM:
            return {**self._item(scene, target, items), "note": ""}
        return {
            "item_id": None,
            "caption": None,
            "image": None,
            "note": "not given: this scene's x^t is the current message; the emoticon the "
            "person sends is what PMG generates",
        }

    def _compose(self, data: SceneData, request: DemoRequest) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(items, behavior texts) of a composed history through the behavior_summarization
        nodes: the conversation and message masked, item texts captioned, long texts and the
        conversation summarised by LLM_g."""
        scene, params = data.name, self.params[data.name]
        columns = self.text_columns(scene)
        items = data.items
        extra = []
        history = list(request.history)
        if request.upload is not None:
            text = request.upload_text.strip()
            extra.append({"item_id": UPLOAD_ITEM, "title": text, "caption": text})
            history.append(UPLOAD_ITEM)
        target = request.target or NO_TARGET_ITEM
        if not request.target:
            extra.append({"item_id": NO_TARGET_ITEM, "title": "", "caption": ""})
        if extra:
            items = pd.concat([items, pd.DataFrame(extra)], ignore_index=True)
        row: dict[str, Any] = {"user_id": COMPOSED_USER, "history": history, "target": target}
        if columns.get("history_message"):
            messages = list(request.history_messages)
            row[columns["history_message"]] = messages + [""] * (len(history) - len(messages))
        if columns.get("target_message"):
            row[columns["target_message"]] = request.message
        if columns.get("conversation"):
            row[columns["conversation"]] = request.conversation.strip() or None
        users = select_users(
            pd.DataFrame([row]),
            pd.DataFrame({"user_id": [COMPOSED_USER], "split": ["evaluation"]}),
            data.image_index,
            params["ingestion"],
            params["protocol"],
        )
        item_texts = caption_items(items, data.image_index, users, params["behavior_summarization"])
        behavior, _ = summarize_behavior(
            users, item_texts, self.llm, params["behavior_summarization"]
        )
        return items, behavior

    def _soft_embedding(
        self, data: SceneData, request: DemoRequest, behavior: pd.DataFrame, items: pd.DataFrame
    ) -> tuple[torch.Tensor | None, dict[str, Any]]:
        """E_m for this request and what the trace says about it."""
        stored = data.soft_embeddings or {}
        why_none = (stored.get("metadata") or {}).get("not_applicable")
        if why_none:
            return None, {"used": False, "source": None, "why": why_none, "shape": None}
        if not request.composed:
            soft = (stored.get("tensors") or {}).get(request.user_id)
            if soft is None:
                why = (
                    f"no stored E_m for user {request.user_id} (`{data.name}.soft_embeddings` "
                    + ("is missing: run embedding_training)" if stored == {} else "lacks them)")
                )
                return None, {"used": False, "source": None, "why": why, "shape": None}
            source = f"stored `{data.name}.soft_embeddings` (version {data.versions.get('soft_embeddings', '?')})"
            return soft, {"used": True, "source": source, "why": None, "shape": list(soft.shape)}
        if data.embedder is None:
            return None, {"used": False, "source": None, "why": data.no_embedder, "shape": None}
        captions = items.set_index("item_id")["caption"]
        prompt = _behavior_prompt(
            [captions[i] for i in behavior.iloc[0]["history"]],
            self.params[data.name]["embedding_training"],
        )
        pmg = PMG(self.generator, embedder=data.embedder)
        soft = pmg.soft_embeddings([COMPOSED_USER], [prompt])[COMPOSED_USER]
        source = (
            f"computed now by the trained embedder `{data.name}.soft_embedding_model` (version "
            f"{data.versions.get('soft_embedding_model', '?')}) on the behavior prompt"
        )
        info = {"used": True, "source": source, "why": None, "shape": list(soft.shape)}
        return soft, {**info, "prompt": prompt}

    # -- helpers --------------------------------------------------------------------------------
    def _behavior_row(self, data: SceneData, user_id: str) -> pd.DataFrame:
        user_id = str(user_id).strip()
        if user_id not in data.evaluation_users():
            split = data.user_split.set_index(data.user_split["user_id"].astype(str))["split"]
            if user_id in split.index:
                raise DemoError(
                    f"User {user_id!r} of scene {data.name!r} is a {split[user_id]} user: the "
                    "demo personalizes the protocol's evaluation users only (train users' "
                    "behavior trained the soft embeddings and the keyword adapter)."
                )
            raise DemoError(
                f"Unknown user id {user_id!r} in scene {data.name!r}: pick one of its "
                f"{len(data.evaluation_users())} evaluation users."
            )
        rows = data.behavior_texts
        mask = (rows["user_id"].astype(str) == user_id) & (rows["purpose"] == "evaluation")
        return rows[mask].reset_index(drop=True)

    def _stored_keywords(self, data: SceneData, user_id: str) -> dict[str, Any] | None:
        k_p, k_t = data.preference_keywords, data.target_keywords
        if k_p is None or k_t is None:
            return None
        p = k_p[(k_p["user_id"].astype(str) == user_id) & (k_p["purpose"] == "evaluation")]
        t = k_t[k_t["user_id"].astype(str) == user_id]
        if p.empty or t.empty:
            return None
        return {
            "preference": list(p.iloc[0]["keywords"]),
            "target": list(t.iloc[0]["keywords"]),
            "llm": p.iloc[0]["llm"],
            "llm_adapter": p.iloc[0]["llm_adapter"],
            "version": data.versions.get("preference_keywords", ""),
        }

    def _items_by_id(self, scene: str) -> pd.DataFrame:
        items = self.scene(scene).items
        return items.set_index(items["item_id"].astype(str))

    def _item(
        self,
        scene: str,
        item_id: str,
        items: pd.DataFrame | None = None,
        upload: bytes | None = None,
    ) -> dict[str, Any]:
        """An item's id, caption and image (None where the scene has none)."""
        if item_id == UPLOAD_ITEM and upload is not None:
            caption = items.set_index("item_id").at[UPLOAD_ITEM, "caption"]
            return {"item_id": item_id, "caption": caption, "image": _decode_upload(upload)}
        caption = self._items_by_id(scene).at[item_id, "caption"]
        return {"item_id": item_id, "caption": caption, "image": self._image(scene, item_id)}

    def _image(self, scene: str, item_id: str) -> Image.Image | None:
        key = (scene, item_id)
        if key not in self._images:
            index = self.scenes[scene].image_index
            rows = index[index["item_id"].astype(str) == item_id] if index is not None else []
            self._images[key] = (
                load_image(rows.iloc[0]["image_path"], int(rows.iloc[0]["image_offset"]))
                if len(rows)
                else None
            )
        return self._images[key]

    @contextmanager
    def _page(self, session: str | None) -> Iterator[None]:
        """One running request per page (`session`); None: no such limit (the HTTP API)."""
        if session is None:
            yield
            return
        with self._state:
            started = self._busy.get(session)
            if started is not None:
                raise DemoError(
                    "This page already has a request running (started "
                    f"{time.perf_counter() - started:.0f} s ago): wait for its answer."
                )
            self._busy[session] = time.perf_counter()
        try:
            yield
        finally:
            with self._state:
                self._busy.pop(session, None)


def _record(row: pd.Series) -> dict[str, Any]:
    """A keywords table row as plain Python (lists for array cells)."""
    out = {}
    for key, value in row.items():
        if hasattr(value, "tolist"):
            value = value.tolist()
        if isinstance(value, list):
            value = [v.tolist() if hasattr(v, "tolist") else v for v in value]
        out[key] = value
    return out


def _describe(entry: Mapping[str, Any] | None) -> str:
    """A catalog entry in a few words: its dataset type and path."""
    if not entry:
        return "not in the catalog"
    inner = entry.get("dataset", entry)
    if isinstance(inner, str):
        inner = {"type": inner}
    where = inner.get("path") or inner.get("filepath") or ""
    kind = str(inner.get("type", "")).rsplit(".", 1)[-1]
    return f"{kind} {where}".strip()


def _data_root(config: Mapping[str, Any]) -> str:
    filepath = (config.get("{scene}.items") or {}).get("filepath", "")
    return filepath.split("/02_intermediate")[0] if filepath else "?"
