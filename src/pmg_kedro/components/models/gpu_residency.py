"""GPU residency: models that take turns on one accelerator when it cannot hold them all
(`SwapGroup`; a catalog entry's `load_args.swap_group` makes its model join one).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch

logger = logging.getLogger(__name__)

PARKING = torch.device("cpu")  # where a swap-group member waits while another one has the device


class SwapGroup:
    """Models that take turns on one accelerator: at most one *exclusive* user at a time.

    Each member registers with a function `move(model, device)`. An inference entry point
    (`LLM.generate`, `Generator.generate`, the scorer's encoders) activates its model
    exclusively: every other member goes to the CPU first. A shared entry point (`LLM.encode`,
    `Generator.denoising_loss`, ...) only brings its own model back, so the soft-embedding
    training, which needs the LLM and the UNet in one autograd graph, keeps both resident.
    Members are held by weak references: a model Kedro releases is not kept alive here.
    """

    def __init__(self, name: str, device: str):
        self.name = name
        self.device = torch.device(device)
        self._members: dict[str, tuple[weakref.ref, Callable[[Any, torch.device], None]]] = {}
        self.resident: set[str] = set()
        self.moves: list[tuple[str, str]] = []  # (member, "park" | "load") in order

    def register(self, key: str, model: Any, move: Callable[[Any, torch.device], None]) -> None:
        """`move` gets the model back from the weak reference: a bound method would keep it alive."""
        self._members[key] = (weakref.ref(model), move)
        self.resident.add(key)  # a member arrives on the device it was loaded to

    def activate(self, key: str, exclusive: bool) -> None:
        """Put `key` on the device; with `exclusive`, every other live member on the CPU."""
        if exclusive:
            for other in sorted(self.resident - {key}):
                self._move(other, park=True)
        if key not in self.resident:
            self._move(key, park=False)

    def _move(self, key: str, park: bool) -> None:
        ref, move = self._members[key]
        model = ref()
        if model is None:  # released by Kedro: nothing left to move
            self._members.pop(key)
            self.resident.discard(key)
            return
        start = time.perf_counter()
        move(model, PARKING if park else self.device)
        if park:
            self.resident.discard(key)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the freed blocks go back to the driver
        else:
            self.resident.add(key)
        self.moves.append((key, "park" if park else "load"))
        logger.info(
            "swap group %s: %s %s (%.1f s)",
            self.name,
            "parked on the CPU:" if park else f"back on {self.device}:",
            key,
            time.perf_counter() - start,
        )


_GROUPS: dict[str, SwapGroup] = {}


def swap_group(name: str, device: str) -> SwapGroup:
    """The process-wide group `name` (created on first use) on `device`."""
    group = _GROUPS.get(name)
    if group is None:
        group = _GROUPS[name] = SwapGroup(name, device)
    elif group.device != torch.device(device):
        raise ValueError(f"swap group {name!r} is on {group.device}, not {device}")
    return group


# Entry points per component: (exclusive inference calls, shared calls).
SWAP_METHODS = {
    "LLM": (("generate", "hidden_states"), ("encode", "final_hidden_states")),
    "Generator": (
        ("generate",),
        ("encode_text", "encode_images", "decode", "denoising_loss", "initial_noise"),
    ),
    "OpenClipScorer": (("encode_images", "encode_texts"), ()),
}


def join_swap_group(
    model: Any, group: SwapGroup, key: str, move: Callable[[Any, Any], None]
) -> Any:
    """Register `model` in `group` and wrap its entry points (see `SwapGroup`). Its `device`
    then reports the group's device: where it computes, even while parked on the CPU."""
    kind = type(model).__name__
    if kind not in SWAP_METHODS:
        raise TypeError(f"{kind} cannot join a swap group; expected one of {sorted(SWAP_METHODS)}")
    exclusive, shared = SWAP_METHODS[kind]
    group.register(key, model, move)
    for names, is_exclusive in ((exclusive, True), (shared, False)):
        for name in names:
            setattr(model, name, _activating(getattr(model, name), group, key, is_exclusive))
    if isinstance(getattr(type(model), "device", None), property):
        model.__class__ = type(kind, (type(model),), {"device": property(lambda _: group.device)})
    return model


def _activating(method: Callable, group: SwapGroup, key: str, exclusive: bool) -> Callable:
    def call(*args, **kwargs):
        group.activate(key, exclusive)
        return method(*args, **kwargs)

    call.__name__ = getattr(method, "__name__", "call")
    call.__doc__ = method.__doc__
    return call
