"""Benchmark: one training step of the soft preference embeddings (paper §3.3) with the paper's
architectures at random weights: the frozen Llama-2-7B-chat layout with S = 4 P-Tuning v2
prefixes and L = 4 multimodal tokens, the mapper, and SD 1.5's denoising loss on `batch_size` x
`noise_repeats` images at the generator's resolution (the environment's `embedding_training`).

    .venv/bin/python benchmarks/paper_soft_embedding_step.py --size tiny
    python3 benchmarks/paper_soft_embedding_step.py --size full          # on a GPU

Prints seconds per step (after one warm-up step), peak memory, and the environment's full budget
(`training.steps`) extrapolated, beside the paper's 12 h on one V100.
"""

from __future__ import annotations

import torch
from paper_common import (
    Measure,
    env_config,
    llm_tokenizer,
    model_dtype,
    record,
    setup,
    synthetic_history,
)
from paper_common import parser as base_parser

PAPER_TRAINING_HOURS_V100 = 12.0


def main() -> None:
    from pmg_kedro.components.method.soft_embeddings import (
        SoftPreferenceEmbedder,
        TrainingSettings,
        train_soft_embeddings,
    )
    from pmg_kedro.components.models.paper_models import random_generator, random_llm

    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    args = p.parse_args()
    setup(args)
    config = env_config(args.env)
    params = config["parameters"][args.scene]["embedding_training"]
    entry = params["sweeps"][params["sweep"]][0]
    settings = TrainingSettings.from_params({**params["training"], "steps": args.steps + 1})
    llm_dtype = model_dtype(config, "llm", args.device)
    gen_dtype = model_dtype(config, "generator", args.device)
    llm = random_llm(
        args.size, args.seed, args.device, llm_dtype, llm_tokenizer(args.llm_tokenizer)
    )
    generator = random_generator(args.size, args.seed, args.device, gen_dtype)
    model = SoftPreferenceEmbedder(
        llm, entry["n_tokens"], entry["n_prefixes"], generator.text_encoder.dim, args.seed
    )
    n = settings.batch_size
    prompts = [
        params["prompt_template"].format(items="; ".join(synthetic_history(args.scene, 9, u)))
        for u in range(n)
    ]
    keywords = [", ".join(synthetic_history(args.scene, 10, u)[0].split()[:10]) for u in range(n)]
    size = generator.resolution
    images = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(args.seed))
    with Measure(args.device) as measured:
        history = train_soft_embeddings(
            model, generator, prompts, keywords, images, settings, progress=False
        )
    timed = history[-1]["seconds"] - history[0]["seconds"]
    per_step = timed / args.steps
    budget = int(params["training"]["steps"])
    numbers = {
        "n_tokens_L": entry["n_tokens"],
        "n_prefixes_S": entry["n_prefixes"],
        "batch_size": n,
        "noise_repeats": settings.noise_repeats,
        "unet_passes_per_step": n * settings.noise_repeats,
        "resolution_px": size,
        "seconds_per_step": round(per_step, 4),
        "first_step_seconds": round(history[0]["seconds"], 3),
        "images_per_s": round(n * settings.noise_repeats / per_step, 2),
        "env_training_steps": budget,
        "env_budget_hours": round(budget * per_step / 3600, 3),
        "paper_hours_one_v100": PAPER_TRAINING_HOURS_V100,
        **measured.numbers(),
    }
    produced_by = {
        "llm": llm.name,
        "llm_dtype": llm_dtype,
        "generator": generator.info["random_init"],
        "generator_dtype": gen_dtype,
        "trainable_parameters": sum(p.numel() for p in model.trainable_parameters().values()),
    }
    record("soft_embedding_step", args, produced_by, numbers)


if __name__ == "__main__":
    main()
