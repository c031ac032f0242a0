"""A LoRA adapter for LLM_g's keyword prompts, supervised by behavior alone (ours, issue 12).

The paper (§3.2.2) prompts a frozen Llama-2-7B for keywords; the embedded 135M model, prompted
zero-shot, names a user's taste less often than counting their history's metadata does. So LLM_g
gets a LoRA adapter (`peft`) trained on examples that come from the behavior itself:

- a *window* is a train user's history up to some point (at most `n_history` items, oldest first);
- its *prompt* is the §3.2.2 keyword prompt for one attribute over that window, rendered exactly
  as `keyword_extraction` renders it (`preference_messages`);
- its *answer* is the attribute's values over the items the user chose next (the `n_next` items
  after the window, most frequent first), as a short keyword list.

Only train users of the protocol's split give windows; each user's held-out target (the last
qualifying interaction) and anything after it are cut off first; no users table is read, so no
hidden taste of a simulated user can reach training. Attributes whose values the data does not
hold (a movie's country, actors, director) are left out and listed in the adapter's header,
together with the users it was trained on. Training updates LoRA matrices only, on the answer
tokens only; for inference the adapter is merged into a copy of LLM_g (`LLM.with_lora`), so
decoding costs what it costs without it. No Kedro imports here.

This module holds the adapter as a catalog object and its use: its header, the check that no
evaluation user was trained on, and merging it into LLM_g. Its examples are built in
`keyword_adapter_examples`, its training runs in `keyword_adapter_training`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pmg_kedro.components.models.llm import LLM

ADAPTER_KIND = "pmg_keyword_lora"


class AdapterLeakError(ValueError):
    """An evaluation user is among the users the keyword adapter was trained on."""


def adapter_metadata(
    llm: LLM,
    history: Mapping[str, Any],
    trained_users: Mapping[str, Sequence[str]],
    example_counts: Mapping[str, Any],
    split_seeds: Mapping[str, Any],
) -> dict[str, Any]:
    """The adapter's header: what it adapts, how to rebuild it, and the users it was trained on."""
    return {
        "kind": ADAPTER_KIND,
        "base_model": {
            "name": llm.name,
            "hidden_size": llm.hidden_size,
            "num_layers": llm.num_layers,
        },
        "lora_config": dict(history["lora_config"]),
        "trained_users": {s: sorted(map(str, u)) for s, u in trained_users.items()},
        "split_seed": dict(split_seeds),
        "examples": dict(example_counts),
        "training": {k: v for k, v in history.items() if k not in ("lora_config", "loss_log")},
    }


def check_not_trained_on(
    metadata: Mapping[str, Any], scene: str, user_ids: Sequence[str], where: str
) -> None:
    """Refuse users the adapter was trained on (`AdapterLeakError` names them)."""
    trained = set(map(str, (metadata.get("trained_users") or {}).get(scene, [])))
    leaked = sorted(trained & {str(u) for u in user_ids})
    if leaked:
        raise AdapterLeakError(
            f"{where}: the keyword adapter was trained on {len(leaked)} of these users "
            f"(scene {scene!r}, e.g. {leaked[:5]}); its header lists the users it was trained on "
            f"(split seed {metadata.get('split_seed', {}).get(scene)}). Retrain it on this split "
            "(`kedro run --pipeline model_preparation --env reference --tags keyword_adapter`) or "
            "set keyword_extraction.llm_adapter: none"
        )


def adapted_llm(llm: LLM, adapter: Mapping[str, Any], where: str = "keyword_adapter") -> LLM:
    """LLM_g with the keyword adapter merged into a copy of its weights (same decoding cost)."""
    metadata = adapter.get("metadata") or {}
    if metadata.get("kind") != ADAPTER_KIND or not adapter.get("tensors"):
        raise ValueError(
            f"{where}: not a trained keyword adapter (header kind {metadata.get('kind')!r}, "
            f"{len(adapter.get('tensors') or {})} tensors; {metadata.get('note', '')}); train it "
            "with `kedro run --pipeline model_preparation --env reference --tags keyword_adapter`"
        )
    base = metadata["base_model"]
    mine = {"name": llm.name, "hidden_size": llm.hidden_size, "num_layers": llm.num_layers}
    if {k: base.get(k) for k in mine} != mine:
        raise ValueError(
            f"{where}: the adapter was trained on {base}, but LLM_g is {mine}; a LoRA adapter only "
            "fits the model it was trained on (set keyword_extraction.llm_adapter: none)"
        )
    return llm.with_lora(adapter["tensors"], metadata["lora_config"])
