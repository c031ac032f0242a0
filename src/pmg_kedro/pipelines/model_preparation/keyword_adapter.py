"""`model_preparation`'s keyword adapter: train users' behavior -> a LoRA adapter for LLM_g.

Beyond the paper (issue 12): `components.method.keyword_adapter` says what the examples are and how the
adapter trains. Per scene, windows of the train users' behavior become keyword-prompt examples;
one adapter, shared by the scenes, trains on them; its header lists the users it was trained on.
`keyword_adapter_training.train` is false in `base` (the committed adapter in
models/embedded/keyword_adapter/ is kept and nothing trains); `reference` trains it with the long
budget, `test` a tiny one. Every node is tagged `keyword_adapter`:

    kedro run --pipeline model_preparation --env reference --tags keyword_adapter
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from kedro.pipeline import Node, Pipeline

from ...components.method.keyword_adapter import ADAPTER_KIND, adapter_metadata
from ...components.method.keyword_adapter_examples import (
    WindowSettings,
    behavior_windows,
    build_examples,
    train_sequences,
)
from ...components.method.keyword_adapter_training import (
    AdapterTraining,
    sample_examples,
    split_validation_users,
    train_keyword_lora,
)
from ...components.models.llm import LLM
from ...components.reporting.tables import markdown_table
from ...scenes import per_scene, scene_names
from .nodes import ensure_enabled

logger = logging.getLogger(__name__)
TAG = "keyword_adapter"
NOT_TRAINED = (
    "keyword_adapter_training.train is false in this environment: nothing trained; "
    "keyword_extraction uses the committed adapter in models/embedded/keyword_adapter/"
)


def build_keyword_adapter_examples(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    histories: pd.DataFrame,
    user_split: pd.DataFrame,
    ingestion: dict[str, Any],
    behavior_summarization: dict[str, Any],
    keyword_extraction: dict[str, Any],
    params: dict[str, Any],
    preparation: dict[str, Any],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Keyword-prompt examples from the train users' behavior windows; (examples, counts).

    Reads no users table: a simulated user's hidden taste never reaches training. Like
    `build_corpus`, a first node of model_preparation: where `model_preparation.enabled` is
    false (paper, paper_random*) it stops the run before anything is written.
    """
    ensure_enabled(preparation)
    split = ingestion["split"]
    sequences = train_sequences(
        interactions,
        histories,
        user_split,
        split.get("filter_column"),
        split.get("order_columns", ["timestamp"]),
    )
    windows = behavior_windows(
        sequences, WindowSettings.from_params(params["windows"]), params.get("message_column")
    )
    scene = keyword_extraction.get("scene") or params["scene"]
    examples, counts = build_examples(
        scene,
        windows,
        items,
        params["supervision"],
        keyword_extraction,
        behavior_summarization,
        int(params.get("max_message_words", 30)),
    )
    seeds = user_split["seed"].unique().tolist() if "seed" in user_split else []
    counts = {**counts, "scene": scene, "split_seed": seeds[0] if len(seeds) == 1 else seeds}
    return examples, counts


def train_keyword_adapter(llm: LLM, params: dict[str, Any], *per_scene) -> tuple[dict, dict]:
    """One LoRA adapter for every scene's examples; returns (adapter, training history).

    `per_scene` holds (examples, counts) of each scene. The adapter is {"tensors", "metadata"}
    (a TensorsDataset): the header carries the LoRA config, the base model and the users it was
    trained on per scene. Where `train` is false nothing trains and the header says so.
    """
    params = dict(params)
    if not params.pop("train", False):
        logger.info(NOT_TRAINED)
        note = {"kind": f"{ADAPTER_KIND}_not_trained", "note": NOT_TRAINED}
        return {"tensors": {}, "metadata": note}, {"skipped": NOT_TRAINED}
    settings = AdapterTraining.from_params(params)
    frames = [e for e in per_scene[0::2] if len(e)]
    counts = {c["scene"]: c for c in per_scene[1::2]}
    examples = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if examples.empty:
        raise ValueError("keyword adapter: no examples in any scene (check split and supervision)")
    train, held = split_validation_users(
        examples, settings.validation_users_per_scene, settings.seed
    )
    validation = pd.concat(
        [
            group.sample(n=min(len(group), settings.validation_examples_per_scene), random_state=0)
            for _, group in held.groupby("scene", sort=True)
        ]
        or [held],
        ignore_index=True,
    )
    sampled = sample_examples(
        train, settings.steps * settings.batch_size, settings.scene_weights, settings.seed
    )
    logger.info(
        "keyword adapter: %d examples sampled for training (%s) of %d available; validation: %d "
        "examples of %d held-out train users",
        len(sampled),
        sampled["scene"].value_counts().to_dict(),
        len(train),
        len(validation),
        held.groupby("scene")["user_id"].nunique().sum() if len(held) else 0,
    )
    tensors, history = train_keyword_lora(llm, sampled, validation, settings)
    trained_users = {s: sorted(g["user_id"].unique()) for s, g in sampled.groupby("scene")}
    example_counts = {
        scene: {
            **{k: v for k, v in c.items() if k not in ("scene", "split_seed")},
            "examples_sampled": int((sampled["scene"] == scene).sum()),
            "users_trained_on": len(trained_users.get(scene, [])),
            "validation_users": int(held.loc[held["scene"] == scene, "user_id"].nunique()),
        }
        for scene, c in counts.items()
    }
    split_seeds = {scene: c["split_seed"] for scene, c in counts.items()}
    metadata = adapter_metadata(llm, history, trained_users, example_counts, split_seeds)
    history = {**history, "examples": example_counts, "split_seed": split_seeds}
    return {"tensors": tensors, "metadata": metadata}, history


def write_keyword_adapter_card(history: dict[str, Any]) -> str:
    """The adapter's model card (Markdown) from its training history."""
    if "skipped" in history:
        return f"# Keyword adapter\n\n{history['skipped']}\n"
    before, after = history["validation_loss_before"], history["validation_loss_after"]
    validation = [[s, history["validation_examples"][s], before[s], after[s]] for s in before]
    losses = [[e["step"], e["loss"], f"{e['lr']:.2e}", e["elapsed_s"]] for e in history["loss_log"]]
    lines = [
        "# Keyword adapter (LoRA on SmolLM2-135M-Instruct's keyword prompts)",
        "",
        "Beyond the paper (issue 12): LLM_g's keyword prompts (paper §3.2.2) answered by a LoRA "
        "adapter (`peft`) trained on behavior alone. Prompt: the keyword prompt of one attribute "
        "over a train user's history up to a point (a window); answer: that attribute's values of "
        "the items the user chose next, most frequent first. Only `train` users of the protocol's "
        "split; each user's held-out target and everything after it are cut off; no hidden taste "
        "(the costume users are SIMULATED; their taste columns are never read). The header of "
        "`keyword_adapter.safetensors` lists the users it was trained on; `keyword_extraction` "
        "refuses to evaluate any of them.",
        "",
        "Use: `keyword_extraction.llm_adapter: lora` merges it into a copy of LLM_g (same decoding "
        "cost) and decodes with `lora_generation` (no repetition penalty: the answers name values "
        "of the history, which transformers' penalty works against).",
        "",
        "## Data",
        "",
        _data_table(history),
        "",
        "## Training",
        "",
        *_training_lines(history),
        "",
        "Answer loss per token (cross-entropy) on held-out train users' windows:",
        "",
        markdown_table(validation, ["scene", "examples", "before", "after"]),
        "",
        "Training loss (answer tokens, mean over each logging interval):",
        "",
        markdown_table(losses, ["step", "loss", "lr", "elapsed (s)"]),
    ]
    return "\n".join(lines) + "\n"


def _data_table(history: dict[str, Any]) -> str:
    """Per scene: the split seed, windows, users, examples and what was supervised."""
    rows = []
    for scene, c in history["examples"].items():
        supervised = ", ".join(
            f"{a} <- {s['column']}" + (f" ({s['transform']})" if s.get("transform") else "")
            for a, s in c["supervised"].items()
        )
        rows.append(
            [scene, history["split_seed"][scene], c["windows"], c["users"], c["examples"]]
            + [c["examples_sampled"], c["users_trained_on"], c["validation_users"]]
            + [supervised or "-", ", ".join(c["left_out"]) or "-"]
        )
    columns = ["scene", "split seed", "windows", "users", "examples", "sampled"]
    columns += ["users trained on", "validation users", "supervised attributes"]
    return markdown_table(rows, [*columns, "left out (no supervision in the data)"])


def _training_lines(history: dict[str, Any]) -> list[str]:
    """LoRA shape, steps, examples, throughput, wall time and the machine, as bullets."""
    settings, machine, lora = history["settings"], history["machine"], history["lora_config"]
    layers = lora.get("layers_to_transform")
    return [
        f"- LoRA r={lora['r']}, alpha={lora['lora_alpha']}, dropout={lora['lora_dropout']} on "
        f"{', '.join(lora['target_modules'])}"
        + (f" of layers {layers[0]}-{layers[-1]}" if layers else " of every layer")
        + f"; {history['trainable_parameters']:,} trainable parameters, saved as "
        f"{settings['save_dtype']}",
        f"- steps: {history['steps_done']} of {history['planned_steps']} planned"
        + (" (stopped by the time limit)" if history["stopped_by_time_limit"] else "")
        + f", about {settings['batch_size']} examples a step (whole windows: a window's "
        "attributes share its history, run once), AdamW lr "
        f"{settings['lr']} (linear warmup {settings['warmup_steps']} steps and decay), seed "
        f"{settings['seed']}; loss on the answer tokens only",
        f"- examples seen: {history['examples_seen']:,} ({history['tokens_seen']:,} tokens run); "
        f"{history['examples_per_second']} examples/s, {history['tokens_per_second']} tokens/s",
        f"- wall time: {history['wall_seconds'] / 60:.1f} min (training {history['train_seconds'] / 60:.1f} "
        f"min, time limit {settings['time_limit_minutes']} min)",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch "
        f"thread(s), torch {machine['torch']}, 1-min load average at the end "
        f"{machine['load_average_1min']} (shared with other work)",
    ]


def keyword_adapter_pipeline() -> Pipeline:
    """The keyword adapter's nodes (tag `keyword_adapter`), for model_preparation's pipeline."""
    examples = per_scene(
        Pipeline(
            [
                Node(
                    build_keyword_adapter_examples,
                    inputs=[
                        "interactions",
                        "items",
                        "histories",
                        "user_split",
                        "params:ingestion",
                        "params:behavior_summarization",
                        "params:keyword_extraction",
                        "params:keyword_adapter",
                        "params:model_preparation",
                    ],
                    outputs=["keyword_adapter_examples", "keyword_adapter_example_counts"],
                    name="keyword_adapter_examples",
                )
            ]
        ),
        shared=frozenset({"params:model_preparation"}),
    )
    per_scene_inputs = [
        f"{scene}.{name}"
        for scene in scene_names()
        for name in ("keyword_adapter_examples", "keyword_adapter_example_counts")
    ]
    training = Pipeline(
        [
            Node(
                train_keyword_adapter,
                inputs=["llm", "params:keyword_adapter_training", *per_scene_inputs],
                outputs=["embedded_keyword_adapter", "keyword_adapter_training_history"],
                name="keyword_adapter_training",
            ),
            Node(
                write_keyword_adapter_card,
                inputs="keyword_adapter_training_history",
                outputs="keyword_adapter_card",
                name="keyword_adapter_card",
            ),
        ]
    )
    return (examples + training).tag(TAG)
