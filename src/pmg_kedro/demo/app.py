"""The Gradio layout of the demo: components and wiring only; the logic is `service.DemoService`.

Two ways in (an evaluation user; a composed history), one trace panel, seed / weighting mode /
alpha controls, and an HTTP API (`/personalize`, `/reselect`, `/scenes`, Gradio's own endpoints,
README "The HTTP API"). Requests that run the models share one queue with a bounded concurrency;
the page's own requests are limited to one at a time per page.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine

from typing import Any  # noqa: E402

import gradio as gr  # noqa: E402

from .render import CSS, error_html, trace_html, trace_json, user_view_html  # noqa: E402
from .requests import MAX_UPLOAD_BYTES, MODES, DemoError, DemoRequest  # noqa: E402
from .service import DemoService  # noqa: E402

PERSONALIZE = "personalize"  # the concurrency group of everything that runs the models


def build_app(service: DemoService, concurrency: int = 2) -> gr.Blocks:
    """The page and the API over `service`; at most `concurrency` model requests at once (their
    model work still runs one at a time: `DemoService`)."""
    limit = {"concurrency_limit": concurrency, "concurrency_id": PERSONALIZE}
    with gr.Blocks(title="PMG: personalized multimodal generation") as demo:
        page = _Page(service)
        page.wire(demo, limit)
        _api(service, limit)
    return demo


class _Page:
    """The page's components (built in the order they appear) and their handlers."""

    def __init__(self, service: DemoService):
        self.service = service
        scenes = list(service.scenes)
        ready = [s for s in scenes if service.scenes[s].ready]
        first = ready[0] if ready else scenes[0]
        gr.Markdown(_header(service))
        self.message = gr.HTML(
            error_html("" if ready else service.not_ready(first)), elem_id="demo-message"
        )
        self._controls(scenes, first, service.settings(first))
        with gr.Tabs():
            with gr.Tab("An evaluation user", id="user-tab"):
                self._user_tab(first)
            with gr.Tab("Compose a history", id="compose-tab"):
                self._compose_tab()
        self.trace_id = gr.Textbox(visible=False, elem_id="trace-id")
        self.trace = gr.HTML(elem_id="trace")

    # -- layout --------------------------------------------------------------------------------
    def _controls(self, scenes, first, settings) -> None:
        with gr.Row():
            self.scene = gr.Dropdown(scenes, value=first, label="Scene", elem_id="scene", scale=1)
            self.scene_note = gr.Markdown(_scene_note(self.service, first), elem_id="scene-note")
        with gr.Row():
            self.seed = gr.Number(
                settings.seeds[0], label="Noise seed", precision=0, elem_id="seed"
            )
            self.mode = gr.Radio(
                list(MODES), value=settings.mode, label="Weighting mode", elem_id="mode"
            )
            self.alpha = gr.Slider(
                0.0,
                1.0,
                value=settings.alpha,
                step=0.05,
                elem_id="alpha",
                label="alpha in z = alpha log d_p + (1 - alpha) log d_t (re-selects among the "
                "same candidates, no new generation)",
            )

    def _user_tab(self, first: str) -> None:
        users = self.service.scenes[first].evaluation_users()
        self.user = gr.Dropdown(
            users, value=users[0] if users else None, label="Evaluation user", elem_id="user"
        )
        self.user_view = gr.HTML(elem_id="user-view")
        self.run_user = gr.Button(
            "Personalize for this user", variant="primary", elem_id="run-user"
        )

    def _compose_tab(self) -> None:
        with gr.Row():
            self.query = gr.Textbox(label="Search the scene's items", elem_id="search")
            self.results = gr.Dropdown([], label="Matching items", elem_id="results")
        with gr.Row():
            self.add = gr.Button("Add to history", elem_id="add")
            self.set_target = gr.Button("Set as target", elem_id="set-target")
        self.history = gr.Textbox(
            label="History, oldest first: one item id per line (`item id | message` where "
            "the scene has messages)",
            lines=6,
            elem_id="history",
        )
        self.target = gr.Textbox(label="Target item id", elem_id="target")
        self.current = gr.Textbox(label="Current message (x^t)", elem_id="message")
        self.conversation = gr.Textbox(
            label="Conversation (summarised into y)", lines=3, elem_id="conversation"
        )
        with gr.Row():
            self.upload = gr.File(
                label=f"Your own item image (optional, at most {MAX_UPLOAD_BYTES // 2**20} MB)",
                type="binary",
                elem_id="upload",
            )
            self.upload_text = gr.Textbox(label="What your image shows", elem_id="upload-text")
        self.run_composed = gr.Button(
            "Personalize this history", variant="primary", elem_id="run-composed"
        )

    # -- handlers ------------------------------------------------------------------------------
    def on_scene(self, name: str):
        data = self.service.scenes[name]
        users = data.evaluation_users()
        columns = self.service.text_columns(name) if data.ready else {}
        return (
            _scene_note(self.service, name),
            gr.update(choices=users, value=users[0] if users else None),
            gr.update(visible=data.ready and self.service.needs_target_item(name)),
            gr.update(visible=bool(columns.get("target_message"))),
            gr.update(visible=bool(columns.get("conversation"))),
            gr.update(visible=data.has_images),
            gr.update(visible=data.has_images),
            error_html("" if data.ready else self.service.not_ready(name)),
        )

    def on_user(self, name: str, user_id: str | None):
        if not user_id:
            return "", ""
        try:
            return user_view_html(self.service.user_view(name, user_id)), ""
        except DemoError as err:
            return "", error_html(str(err))

    def on_search(self, name: str, text: str):
        try:
            ids = self.service.search_items(name, text or "")
        except DemoError as err:
            return gr.update(choices=[], value=None), error_html(str(err))
        choices = [(self.service.item_label(name, i), i) for i in ids]
        found = f"{len(ids)} items shown" if ids else "no item matches"
        return gr.update(choices=choices, value=ids[0] if ids else None), _note(found)

    @staticmethod
    def on_add(text: str, item: str | None):
        if not item:
            return gr.update(), error_html("Pick an item from the matching items first.")
        return ((text or "").rstrip("\n") + "\n" + item).lstrip("\n"), ""

    def run(self, request: DemoRequest, session: str | None):
        try:
            result = self.service.respond(request, session)
        except DemoError as err:
            return gr.update(), gr.update(), error_html(str(err))
        return trace_html(result), result.trace_id, ""

    def on_run_user(self, name, user_id, seed_value, mode_value, alpha_value, req: gr.Request):
        if not user_id:
            return gr.update(), gr.update(), error_html("Pick an evaluation user first.")
        request = DemoRequest(
            name, user_id=user_id, seed=_seed(seed_value), mode=mode_value, alpha=alpha_value
        )
        return self.run(request, req.session_hash)

    def on_run_composed(
        self,
        name,
        history_text,
        target_id,
        current_text,
        conversation_text,
        upload_bytes,
        upload_description,
        seed_value,
        mode_value,
        alpha_value,
        req: gr.Request,
    ):
        try:
            ids, messages = self.service.parse_history(name, history_text or "")
        except DemoError as err:
            return gr.update(), gr.update(), error_html(str(err))
        request = DemoRequest(
            name,
            history=ids,
            history_messages=messages,
            target=target_id or "",
            message=current_text or "",
            conversation=conversation_text or "",
            upload=upload_bytes,
            upload_text=upload_description or "",
            seed=_seed(seed_value),
            mode=mode_value,
            alpha=alpha_value,
        )
        return self.run(request, req.session_hash)

    def on_alpha(self, current_id: str, value: float):
        if not current_id:
            return gr.update(), ""
        try:
            return trace_html(self.service.reselect(current_id, value)), ""
        except DemoError as err:
            return gr.update(), error_html(str(err))

    # -- wiring --------------------------------------------------------------------------------
    def wire(self, demo: gr.Blocks, limit: dict[str, Any]) -> None:
        private = {"api_visibility": "private"}
        compose_fields = [self.target, self.current, self.conversation, self.upload]
        compose_fields.append(self.upload_text)
        self.scene.change(
            self.on_scene,
            self.scene,
            [self.scene_note, self.user, *compose_fields, self.message],
            **private,
        )
        user_inputs, user_outputs = [self.scene, self.user], [self.user_view, self.message]
        self.user.change(self.on_user, user_inputs, user_outputs, **private)
        demo.load(self.on_user, user_inputs, user_outputs, **private)
        for event in (self.query.submit, self.scene.change):
            event(self.on_search, [self.scene, self.query], [self.results, self.message], **private)
        self.add.click(
            self.on_add, [self.history, self.results], [self.history, self.message], **private
        )
        self.set_target.click(lambda item: item or "", self.results, self.target, **private)
        outputs = [self.trace, self.trace_id, self.message]
        settings = [self.seed, self.mode, self.alpha]
        # "multiple": a second click while the first request runs reaches the server, which
        # answers it with a message (one running request per page) instead of ignoring it.
        run = {**private, "trigger_mode": "multiple", **limit}
        self.run_user.click(self.on_run_user, [self.scene, self.user, *settings], outputs, **run)
        composed = [self.scene, self.history, *compose_fields[:2], self.conversation]
        composed += [self.upload, self.upload_text, *settings]
        self.run_composed.click(self.on_run_composed, composed, outputs, **run)
        self.alpha.release(
            self.on_alpha, [self.trace_id, self.alpha], [self.trace, self.message], **private
        )


def _api(service: DemoService, limit: dict[str, Any]) -> None:
    """The HTTP API (README "The HTTP API"); a bad request is answered with its message."""

    def personalize(request: dict) -> dict:
        """The trace of one request: {"scene": ..., "user_id": ...} for an evaluation user, or a
        composed history {"scene", "history", "target" | "message", "conversation", ...}."""
        try:
            return trace_json(service.respond(DemoRequest.from_json(request)))
        except DemoError as err:
            raise gr.Error(str(err)) from None

    def reselect(trace_id: str, alpha: float) -> dict:
        """The response `trace_id` with the same candidates chosen again under `alpha`."""
        try:
            return trace_json(service.reselect(trace_id, alpha))
        except DemoError as err:
            raise gr.Error(str(err)) from None

    def scenes() -> dict:
        """Each scene: ready or what to run first, evaluation users, simulated users or not."""
        return {
            name: {
                "ready": data.ready,
                "not_ready": "" if data.ready else service.not_ready(name),
                "simulated_users": data.simulated,
                "evaluation_users": data.evaluation_users(),
                "needs_target_item": data.ready and service.needs_target_item(name),
                "text_columns": service.text_columns(name),
                "item_images": data.has_images,
            }
            for name, data in service.scenes.items()
        }

    gr.api(personalize, api_name="personalize", **limit)
    gr.api(reselect, api_name="reselect")
    gr.api(scenes, api_name="scenes")


def _header(service: DemoService) -> str:
    p = service.provenance
    return (
        "## PMG: personalized multimodal generation (WWW 2024), one request at a time\n"
        f"Environment **{p['environment']}** (scene data from the last `kedro run` under "
        f"`{p['data_root']}`). LLM_g: {p['llm']}; keyword adapter: {p['keyword_adapter']}. "
        f"Generator: {p['generator']}. Scorer: {p['scorer']}."
    )


def _scene_note(service: DemoService, name: str) -> str:
    data = service.scenes[name]
    if not data.ready:
        return f"**{name}**: not ready. {service.not_ready(name)}"
    notes = [f"**{name}**: {len(data.evaluation_users())} evaluation users"]
    if data.simulated:
        notes.append("**SIMULATED users** (click histories drawn from a hidden taste)")
    notes.append("item images" if data.has_images else "no item images (no E_m, no uploads)")
    notes.append(
        "x^t describes the target item"
        if service.needs_target_item(name)
        else "x^t is the current message (the emoticon sent is what PMG generates)"
    )
    return "; ".join(notes) + "."


def _note(text: str) -> str:
    return f"<div class='pmg-prov'>{text}</div>"


def _seed(value: Any) -> int | None:
    return None if value is None or value == "" else int(value)


def launch(
    service: DemoService,
    host: str = "127.0.0.1",
    port: int | None = None,
    concurrency: int = 2,
    queue_size: int = 16,
) -> tuple[gr.Blocks, str]:
    """Serve the page and the API on `host` (never a public share link) in a background thread;
    returns (app, URL). `app.block_thread()` waits; `app.close()` stops it."""
    demo = build_app(service, concurrency)
    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency)
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        show_error=True,
        prevent_thread_lock=True,
        max_file_size=4 * MAX_UPLOAD_BYTES,  # larger uploads never reach the handler
        ssr_mode=False,
        footer_links=["api"],
        css=CSS,
        quiet=True,
    )
    return demo, url
