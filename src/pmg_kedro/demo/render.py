"""A trace as the page shows it (HTML) and as the API returns it (JSON).

Images travel inline as PNG data URIs (the generator's images are 32 px), so the page and the API
serve no files and no path ever leaves or enters the server. Every number is shown with what
produced it: the environment, the models' catalog entries, seed, sampler, steps and weighting mode.
"""

from __future__ import annotations

import base64
import io
from html import escape
from typing import Any

from PIL import Image

from .trace import Trace

# The response's JSON keys (README: "The HTTP API"); a test checks a response against them.
RESPONSE_KEYS = (
    "trace_id",
    "scene",
    "environment",
    "source",
    "settings",
    "models",
    "history",
    "target",
    "behavior",
    "keywords",
    "soft_embeddings",
    "candidates",
    "chosen",
    "baseline",
    "seconds",
)
STAGES = (
    ("waited_for_models", "waiting for the models (another request)"),
    ("behavior_texts", "behavior texts (§3.2.1: captions, LLM summaries)"),
    ("keywords", "keywords k^p and k^t (§3.2.2, LLM_g)"),
    ("soft_embeddings", "soft preference embeddings E_m (§3.3)"),
    ("generation", "generation over the weight grid (§3.4)"),
    ("scoring_selection", "scoring d_p, d_t and selection by z"),
    ("baseline", "target-only baseline image (generation + scoring)"),
    ("reselection", "re-selection with the new alpha (no generation)"),
    ("total", "total"),
)

CSS = """
#trace .pmg-img, #user-view .pmg-img {image-rendering: pixelated; border: 1px solid #bbb; background: #fff}
#trace .pmg-chosen {outline: 4px solid #e8590c; outline-offset: 1px}
#trace tr.chosen {background: #ffe8cc; font-weight: 600}
#trace table, #user-view table {border-collapse: collapse; font-size: 0.9em; margin: 0.3em 0 0.8em}
#trace td, #trace th, #user-view td, #user-view th {border: 1px solid #ddd; padding: 2px 6px;
  vertical-align: middle; text-align: left}
#trace .pmg-pair {display: flex; gap: 2em; align-items: flex-start; flex-wrap: wrap}
#user-view .pmg-cards {display: flex; flex-wrap: wrap; gap: 6px}
#user-view .pmg-card {width: 150px; font-size: 0.85em; border: 1px solid #eee; padding: 3px}
#trace .pmg-prov, #user-view .pmg-prov {font-size: 0.85em; color: #555}
.pmg-simulated {background: #fff3bf; border: 1px solid #e67700; padding: 1px 6px; font-weight: 600}
#demo-message .pmg-error {background: #ffe3e3; border: 1px solid #c92a2a; padding: 6px 10px}
"""


def data_uri(image: Image.Image | None) -> str:
    if image is None:
        return ""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(image: Image.Image | None, size: int, extra: str = "", alt: str = "") -> str:
    if image is None:
        return "<span class='pmg-prov'>(no image)</span>"
    return (
        f"<img class='pmg-img {extra}' src='{data_uri(image)}' width='{size}' height='{size}' "
        f"alt='{escape(alt)}'>"
    )


def _float(value: Any, digits: int = 4) -> str:
    return f"{float(value):.{digits}f}"


def error_html(message: str) -> str:
    return f"<div class='pmg-error'>{escape(message)}</div>" if message else ""


def simulated_badge(simulated: bool) -> str:
    return (
        "<span class='pmg-simulated'>SIMULATED user: the costume scene's click histories are "
        "simulated from a hidden taste, not real people</span>"
        if simulated
        else ""
    )


def user_view_html(view: dict[str, Any]) -> str:
    """An evaluation user's history (oldest first) and target, before any request."""
    cards = "".join(
        f"<div class='pmg-card'>{_img(i['image'], 48, alt=i['item_id'])}<br>{n}. "
        f"{escape(str(i['caption']))} <span class='pmg-prov'>[{escape(i['item_id'])}]</span></div>"
        for n, i in enumerate(view["history"], 1)
    )
    target = view["target"]
    conversation = (
        f"<p><b>Conversation</b> (summarised into y): {escape(view['conversation'])}</p>"
        if view.get("conversation")
        else ""
    )
    return (
        f"<div>{simulated_badge(view['simulated'])}"
        f"<p><b>User {escape(view['user_id'])}</b>, scene {escape(view['scene'])}: "
        f"{len(view['history'])} history items, oldest first</p>"
        f"<div class='pmg-cards'>{cards}</div>"
        f"<p><b>Target</b> (held out; x^t = {escape(view['target_text'])}): "
        f"{_img(target['image'], 48, alt=target['item_id'])} {escape(str(target['caption']))} "
        f"<span class='pmg-prov'>[{escape(target['item_id'])}]</span></p>{conversation}</div>"
    )


def trace_html(trace: Trace) -> str:
    """The whole trace: result, times, behavior texts, keywords, E_m, candidates."""
    return "".join(
        [
            f"<div class='pmg-trace' data-trace-id='{trace.trace_id}'>",
            _header(trace),
            _result(trace),
            _candidates(trace),
            _seconds(trace),
            _keywords(trace),
            _soft(trace),
            _behavior(trace),
            "</div>",
        ]
    )


def _header(trace: Trace) -> str:
    s, source, prov = trace.settings, trace.source, trace.provenance
    who = (
        f"evaluation user {escape(source['user_id'])}"
        if source["kind"] == "evaluation_user"
        else "a composed history"
    )
    versions = "".join(
        f"<li>{escape(k)}: {escape(v)}</li>" for k, v in prov.get("scene_data", {}).items()
    )
    return (
        f"<h3>Response {trace.trace_id}: scene {escape(trace.request.scene)}, {who}</h3>"
        f"{simulated_badge(source['simulated'])}"
        f"<p class='pmg-prov'>Environment <b>{escape(prov['environment'])}</b> (data "
        f"{escape(prov['data_root'])}). LLM_g: "
        f"{escape(prov['llm'])}; keyword adapter: {escape(prov['keyword_adapter'])}. Generator: "
        f"{escape(prov['generator'])}; scorer: {escape(prov['scorer'])}. Seed <b>{s.seeds[0]}</b>, "
        f"mode <b>{escape(s.mode)}</b>, {escape(s.sampler)} {s.steps} steps, guidance "
        f"{s.guidance_scale:g}, alpha <b>{s.alpha:g}</b>, cosine floor {s.cosine_floor:g}, "
        f"variant <b>{escape(trace.variant.name)}</b>.</p>"
        "<details class='pmg-prov'><summary>Scene data versions read (the last run's "
        f"outputs)</summary><ul>{versions}</ul></details>"
    )


def _result(trace: Trace) -> str:
    chosen = trace.chosen
    base = trace.baseline.iloc[0]
    return (
        "<div class='pmg-pair'>"
        f"<div><p><b>PMG's chosen image</b> ({escape(trace.variant.name)}, argmax z)</p>"
        f"{_img(trace.images[chosen['image_key']], 160, 'pmg-chosen', 'chosen image')}"
        f"<p class='pmg-prov' id='chosen-caption'>w_p {chosen['w_p']:g}, w_t {chosen['w_t']:g}, "
        f"d_p {_float(chosen['d_p'])}, d_t {_float(chosen['d_t'])}, z {_float(chosen['z'])} "
        f"(alpha {trace.settings.alpha:g})</p></div>"
        f"<div><p><b>Target-only baseline</b> ({escape(trace.baseline_variant.name)}: k^t only, "
        "one image, paper Table 1)</p>"
        f"{_img(trace.baseline_image, 160, 'pmg-baseline', 'baseline image')}"
        f"<p class='pmg-prov'>w_p 0, w_t 1, d_p {_float(base['d_p'])}, d_t {_float(base['d_t'])}, "
        f"same seed</p></div></div>"
    )


def _seconds(trace: Trace) -> str:
    rows = "".join(
        f"<tr><td>{label}</td><td>{trace.seconds[key]:.2f}</td></tr>"
        for key, label in STAGES
        if key in trace.seconds
    )
    return (
        "<details open><summary><b>Time per stage</b> (seconds, this machine)</summary>"
        f"<table id='stage-times'><tr><th>stage</th><th>s</th></tr>{rows}</table></details>"
    )


def _behavior(trace: Trace) -> str:
    b = trace.behavior
    rows = "".join(
        f"<tr><td>x_{n}</td><td>{_img(h['image'], 32, alt=h['item_id'])}</td>"
        f"<td>{escape(h['text'])}</td><td class='pmg-prov'>{escape(h['item_id'])}</td></tr>"
        for n, h in enumerate(trace.history, 1)
    )
    target = trace.target
    target_item = (
        f"{_img(target['image'], 32, alt=target['item_id'])} "
        f"<span class='pmg-prov'>[{escape(target['item_id'])}]</span>"
        if target.get("item_id")
        else f"<span class='pmg-prov'>target item {escape(target['note'])}</span>"
    )
    conversation = (
        f"<p>Conversation: {escape(b['conversation'])}<br>y (LLM_g summary): "
        f"<b>{escape(b['conversation_summary'])}</b></p>"
        if b.get("conversation")
        else ""
    )
    return (
        "<details open><summary><b>Behavior texts</b> (§3.2.1)</summary>"
        f"<table id='behavior-texts'><tr><th></th><th>image</th><th>text</th><th>id</th></tr>"
        f"{rows}</table><p>x^t: <b>{escape(b['target_text'])}</b> {target_item}</p>"
        f"{conversation}</details>"
    )


def _keywords(trace: Trace) -> str:
    p, t = trace.preference_keywords, trace.target_keywords
    rows = "".join(
        f"<tr><td>{escape(a)}</td><td><code>{escape(raw)}</code></td>"
        f"<td>{escape(', '.join(parsed))}</td></tr>"
        for a, raw, parsed in zip(p["attributes"], p["raw_answers"], p["parsed"], strict=True)
    )
    fallback = " (nothing parsed: fallback to history metadata)" if p["fallback"] else ""
    t_fallback = " (nothing parsed: fallback)" if t["fallback"] else ""
    stored = trace.stored_keywords
    compare = ""
    if stored is not None:
        same_p = stored["preference"] == list(p["keywords"])
        same_t = stored["target"] == list(t["keywords"])
        compare = (
            f"<p class='pmg-prov'>The last run's stored keywords for this user (version "
            f"{escape(stored['version'])}, {escape(stored['llm'])}, adapter "
            f"{escape(stored['llm_adapter'])}): k^p {escape(', '.join(stored['preference']))} "
            f"({'same' if same_p else 'different'}); k^t {escape(', '.join(stored['target']))} "
            f"({'same' if same_t else 'different'}). bfloat16 greedy answers can change with the "
            "batch the prompt ran in (README, keyword caveat 3).</p>"
        )
    return (
        "<details open><summary><b>Keywords</b> (§3.2.2)</summary>"
        f"<p class='pmg-prov'>LLM_g: {escape(str(p['llm']))}, adapter "
        f"{escape(str(p['llm_adapter']))}; one prompt per attribute.</p>"
        "<table id='preference-keywords'><tr><th>attribute a_i</th><th>raw LLM answer</th>"
        f"<th>parsed keywords</th></tr>{rows}</table>"
        f"<p>k^p{fallback}: <b id='k-p'>{escape(', '.join(p['keywords']))}</b></p>"
        f"<p>k^t raw answer: <code>{escape(t['raw_answer'])}</code><br>k^t{t_fallback}: "
        f"<b id='k-t'>{escape(', '.join(t['keywords']))}</b></p>{compare}</details>"
    )


def _soft(trace: Trace) -> str:
    soft = trace.soft
    if soft["used"]:
        body = (
            f"E_m used: {escape(soft['source'])}; shape {soft['shape']} (L tokens x text-encoder "
            "width); E^p = concat(E_m, E_k)."
        )
    else:
        body = (
            f"E_m <b>not used</b>: {escape(str(soft['why']))}. E^p = E_k alone (variant "
            f"{escape(trace.variant.name)})."
        )
    return (
        "<details open><summary><b>Soft preference embeddings</b> (§3.3)</summary>"
        f"<p id='soft-embeddings'>{body}</p></details>"
    )


def _candidates(trace: Trace) -> str:
    rows = []
    for row in trace.selections.itertuples():
        css = " class='chosen'" if row.chosen else ""
        image = _img(trace.images[row.image_key], 48, "pmg-chosen" if row.chosen else "")
        rows.append(
            f"<tr{css} data-key='{escape(row.image_key)}' data-d-p='{row.d_p!r}' "
            f"data-d-t='{row.d_t!r}' data-chosen='{str(bool(row.chosen)).lower()}'>"
            f"<td>{image}</td><td>{row.w_p:g}</td><td>{row.w_t:g}</td><td>{_float(row.d_p)}</td>"
            f"<td>{_float(row.d_t)}</td><td>{_float(row.z)}</td>"
            f"<td>{'floored' if row.floored else ''}</td><td>{'chosen' if row.chosen else ''}</td>"
            "</tr>"
        )
    s = trace.settings
    return (
        "<details open><summary><b>Candidates over the weight grid</b> (§3.4, Figure 7)</summary>"
        f"<p class='pmg-prov'>{len(rows)} candidates from noise seed {s.seeds[0]} in one "
        f"denoising batch; d_p, d_t: the scorer's cosines with k^p and k^t; z = alpha log d_p + "
        f"(1 - alpha) log d_t with alpha {s.alpha:g} (cosines floored at {s.cosine_floor:g}).</p>"
        "<table id='candidates'><tr><th>image</th><th>w_p</th><th>w_t</th><th>d_p</th>"
        f"<th>d_t</th><th>z</th><th>a cosine floored</th><th>argmax z</th></tr>{''.join(rows)}"
        "</table></details>"
    )


def _keywords_json(p: dict, t: dict, stored) -> dict[str, Any]:
    """k^p per attribute (raw answer, parsed) and merged, k^t, and the run's stored keywords."""
    return {
        "preference": {
            "attributes": [
                {"attribute": a, "raw_answer": r, "parsed": list(k)}
                for a, r, k in zip(p["attributes"], p["raw_answers"], p["parsed"], strict=True)
            ],
            "keywords": list(p["keywords"]),
            "fallback": bool(p["fallback"]),
            "llm": p["llm"],
            "llm_adapter": p["llm_adapter"],
        },
        "target": {
            "raw_answer": t["raw_answer"],
            "keywords": list(t["keywords"]),
            "fallback": bool(t["fallback"]),
        },
        "stored": stored,
    }


def _candidate_json(row, images) -> dict[str, Any]:
    return {
        "image_key": row.image_key,
        "w_p": float(row.w_p),
        "w_t": float(row.w_t),
        "noise_seed": int(row.noise_seed),
        "d_p": float(row.d_p),
        "d_t": float(row.d_t),
        "z": float(row.z),
        "floored": bool(row.floored),
        "chosen": bool(row.chosen),
        "image": data_uri(images[row.image_key]),
    }


def trace_json(trace: Trace) -> dict[str, Any]:
    """The API's response (README "The HTTP API": schema)."""
    s, p, t = trace.settings, trace.preference_keywords, trace.target_keywords
    prov = trace.provenance
    chosen = trace.chosen
    base = trace.baseline.iloc[0]
    return {
        "trace_id": trace.trace_id,
        "scene": trace.request.scene,
        "environment": prov["environment"],
        "source": dict(trace.source),
        "settings": {
            "seed": int(s.seeds[0]),
            "mode": s.mode,
            "alpha": float(s.alpha),
            "sampler": s.sampler,
            "steps": int(s.steps),
            "guidance_scale": float(s.guidance_scale),
            "cosine_floor": float(s.cosine_floor),
            "weight_grid": [[float(w_p), float(w_t)] for w_p, w_t in s.grid],
            "variant": trace.variant.name,
            "baseline_variant": trace.baseline_variant.name,
        },
        "models": {
            k: prov[k] for k in ("llm", "keyword_adapter", "generator", "scorer", "data_root")
        }
        | {"scene_data_versions": dict(prov.get("scene_data", {}))},
        "history": [
            {"item_id": h["item_id"], "text": h["text"], "image": data_uri(h["image"]) or None}
            for h in trace.history
        ],
        "target": {
            "item_id": trace.target.get("item_id"),
            "text": trace.target["text"],
            "note": trace.target.get("note", ""),
        },
        "behavior": dict(trace.behavior),
        "keywords": _keywords_json(p, t, trace.stored_keywords),
        "soft_embeddings": {k: v for k, v in trace.soft.items()},
        "candidates": [_candidate_json(row, trace.images) for row in trace.selections.itertuples()],
        "chosen": {
            "image_key": chosen["image_key"],
            "w_p": float(chosen["w_p"]),
            "w_t": float(chosen["w_t"]),
            "z": float(chosen["z"]),
            "image": data_uri(trace.images[chosen["image_key"]]),
        },
        "baseline": {
            "image_key": base["image_key"],
            "d_p": float(base["d_p"]),
            "d_t": float(base["d_t"]),
            "image": data_uri(trace.baseline_image),
        },
        "seconds": {k: round(float(v), 4) for k, v in trace.seconds.items()},
    }
