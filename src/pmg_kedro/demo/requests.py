"""A request to the demo: what it holds, how the API's JSON and the page's history box become one,
its limits, and the checks that refuse it with a message the person is shown (`DemoError`).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..components.data.answer_masking import strip_emoticons
from .scene_data import SceneData

# Limits of a request (the page and the API say them in their messages).
MAX_TEXT_CHARS = 2_000  # the current message, the conversation, an upload's description
MAX_HISTORY_ITEMS = 50
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
MAX_UPLOAD_SIDE = 4096

# The weighting modes a request may name (`PMGSettings.mode`).
MODES = ("embedding_scale", "composed_guidance")


class DemoError(ValueError):
    """A request the demo cannot answer; its message is shown to the person as it is."""


@dataclass(frozen=True)
class DemoRequest:
    """One personalization request: an evaluation user (`user_id`) or a composed history."""

    scene: str
    user_id: str = ""
    history: tuple[str, ...] = ()  # item ids, oldest first
    history_messages: tuple[str, ...] = ()  # one per history item, where the scene has messages
    target: str = ""  # the item to personalize, where the scene's x^t describes an item
    message: str = ""  # the current message, where the scene's x^t is a message
    conversation: str = ""  # y, where the scene has a conversation
    upload: bytes | None = field(default=None, repr=False)  # one image of the person's own
    upload_text: str = ""  # what the upload shows (its text in the behavior)
    seed: int | None = None  # noise seed (default: the environment's first seed)
    mode: str | None = None  # weighting mode (default: the environment's)
    alpha: float | None = None  # z = alpha log d_p + (1 - alpha) log d_t (default: the env's)

    @property
    def composed(self) -> bool:
        return not self.user_id

    @classmethod
    def from_json(cls, payload: Any) -> DemoRequest:
        """From the API's JSON object (README "The HTTP API"); uploads are the page's only."""
        if not isinstance(payload, Mapping):
            raise DemoError(f"A request is a JSON object, got {type(payload).__name__}.")
        allowed = {f for f in cls.__dataclass_fields__ if f not in ("upload", "upload_text")}
        unknown = sorted(set(payload) - allowed)
        if unknown:
            raise DemoError(f"Unknown request keys {unknown}; a request has {sorted(allowed)}.")
        if "scene" not in payload:
            raise DemoError("A request needs a scene.")
        values = {}
        for key, value in payload.items():
            if value is None:
                continue
            if key in ("history", "history_messages"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise DemoError(f"{key} must be a list of strings.")
                value = tuple(value)
            elif key in ("seed", "alpha"):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise DemoError(f"{key} must be a number, got {value!r}.")
            elif not isinstance(value, str):
                raise DemoError(f"{key} must be a string, got {value!r}.")
            values[key] = value
        return cls(**values)


class RequestValidation:
    """`DemoService`'s checks of a request and its reading of the page's history box; a base class
    of `DemoService`, whose scene data and parameters they read (`scene`, `settings`,
    `text_columns`, `needs_target_item`, `params`, `_items_by_id`, `_behavior_row`)."""

    def parse_history(self, scene: str, text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The page's history box: one `item id` per line, or `item id | message` where the scene
        has messages with its history items. Returns (item ids, messages)."""
        if len(text) > MAX_HISTORY_ITEMS * (MAX_TEXT_CHARS + 40):
            raise DemoError(f"The history box has {len(text):,} characters: too long.")
        with_messages = bool(self.text_columns(scene).get("history_message"))
        ids, messages = [], []
        for line in (raw.strip() for raw in text.splitlines()):
            if not line:
                continue
            item, _, note = line.partition("|") if with_messages else (line, "", "")
            ids.append(item.strip())
            messages.append(note.strip())
        return tuple(ids), tuple(messages) if with_messages else ()

    def validate(self, request: DemoRequest) -> DemoRequest:
        """The request with its defaults filled in, or a DemoError naming what is wrong."""
        data = self.scene(request.scene)
        settings = self.settings(request.scene)
        seed = settings.seeds[0] if request.seed is None else request.seed
        try:
            seed = int(seed)
        except (TypeError, ValueError):
            raise DemoError(f"The seed must be a whole number, got {request.seed!r}.") from None
        if not 0 <= seed < 2**31:
            raise DemoError(f"The seed must lie in [0, 2^31), got {seed}.")
        mode = request.mode or settings.mode
        if mode not in MODES:
            raise DemoError(f"Unknown weighting mode {mode!r}: choose one of {list(MODES)}.")
        alpha = _alpha(settings.alpha if request.alpha is None else request.alpha)
        for name in ("message", "conversation", "upload_text"):
            value = getattr(request, name)
            if len(value) > MAX_TEXT_CHARS:
                raise DemoError(
                    f"The {name.replace('_', ' ')} has {len(value):,} characters; at most "
                    f"{MAX_TEXT_CHARS:,} are accepted."
                )
        request = replace(request, seed=seed, mode=mode, alpha=alpha)
        if not request.composed:
            composed = (request.history, request.upload, request.target, request.message)
            if any(composed) or request.conversation:
                raise DemoError(
                    "Give either an evaluation user or a composed history, not both: an "
                    "evaluation user's history, target and message come from the data."
                )
            self._behavior_row(data, request.user_id)
            return request
        return self._validate_composed(data, request)

    def _validate_composed(self, data: SceneData, request: DemoRequest) -> DemoRequest:
        scene = data.name
        columns = self.text_columns(scene)
        history = tuple(str(i).strip() for i in request.history if str(i).strip())
        if not history and request.upload is None:
            raise DemoError(
                "The history is empty: add at least one item (search the scene's items and press "
                "Add), or pick an evaluation user."
            )
        if len(history) + (request.upload is not None) > MAX_HISTORY_ITEMS:
            raise DemoError(
                f"The history has {len(history)} items; at most {MAX_HISTORY_ITEMS} are accepted."
            )
        items = self._items_by_id(scene)
        unknown = [i for i in history if i not in items.index]
        if unknown:
            raise DemoError(
                f"Unknown item id(s) in scene {scene!r}: {unknown[:10]}. Search the scene's "
                "items and add them from the list."
            )
        messages = tuple(request.history_messages)
        if messages and not columns.get("history_message"):
            raise DemoError(f"Scene {scene!r} has no messages with its history items.")
        if len(messages) > len(history):
            raise DemoError(f"{len(messages)} history messages for {len(history)} history items.")
        for n, text in enumerate(messages, 1):
            if len(text) > MAX_TEXT_CHARS:
                raise DemoError(
                    f"History message {n} has {len(text):,} characters; at most "
                    f"{MAX_TEXT_CHARS:,} are accepted."
                )
        target = request.target.strip()
        if self.needs_target_item(scene):
            if not target:
                raise DemoError(
                    f"Scene {scene!r} personalizes an item: choose the target item (search, then "
                    "'Set as target')."
                )
            if target not in items.index:
                raise DemoError(f"Unknown target item id {target!r} in scene {scene!r}.")
        elif target:
            raise DemoError(
                f"Scene {scene!r} takes no target item: its x^t is the current message (the "
                "emoticon the person sends is what PMG predicts)."
            )
        message = request.message.strip()
        if columns.get("target_message"):
            if not message:
                raise DemoError(f"Scene {scene!r} needs the current message: type it.")
            emoticons = list(self.params[scene]["ingestion"].get("emoticon_map") or {})
            if not strip_emoticons(message, emoticons):
                raise DemoError(
                    "The message is only emoticons or emoji: they are removed before the LLM sees "
                    "the message (they are the answer this scene predicts), and nothing is left. "
                    "Type some words."
                )
        elif message:
            raise DemoError(f"Scene {scene!r} has no current message (its x^t is the target item).")
        if request.conversation.strip() and not columns.get("conversation"):
            raise DemoError(f"Scene {scene!r} has no conversation.")
        if request.upload is not None:
            if not data.has_images:
                raise DemoError(
                    f"Scene {scene!r} has no item images: an image cannot join its history."
                )
            _decode_upload(request.upload)
            if not request.upload_text.strip():
                raise DemoError(
                    "Say in a few words what the uploaded image shows: that text is the image's "
                    "item text in the behavior (the environment captions items from metadata)."
                )
        return replace(
            request, history=history, history_messages=messages, target=target, message=message
        )


def _alpha(alpha: Any) -> float:
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise DemoError(f"alpha must be a number in [0, 1], got {alpha!r}.") from None
    if not 0.0 <= value <= 1.0:
        raise DemoError(f"alpha must lie in [0, 1], got {value}.")
    return value


def _decode_upload(data: bytes) -> Image.Image:
    """The uploaded image as RGB, or a DemoError saying why it is refused."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise DemoError(
            f"The upload is {len(data) / 2**20:.1f} MB; at most {MAX_UPLOAD_BYTES / 2**20:.0f} MB "
            "are accepted."
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            if max(image.size) > MAX_UPLOAD_SIDE:
                raise DemoError(
                    f"The upload is {image.size[0]}x{image.size[1]} pixels; at most "
                    f"{MAX_UPLOAD_SIDE} on a side."
                )
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise DemoError(
            "The upload is not an image this demo can read (PNG, JPEG, GIF, WebP, ...)."
        ) from None
