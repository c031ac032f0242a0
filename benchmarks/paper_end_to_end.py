"""Benchmark: one personalized response end to end (paper §3, Figure 2) with the paper's
architectures at random weights, amortised over a batch of users: the keyword prompts of every
attribute and the target (Llama-2-7B-chat layout, batched greedy decoding), E_m from the
bias-correction LLM (L = 4 tokens, S = 4 prefixes, one forward pass), the (w_p, w_t) grid of SD
1.5 candidates, d_p / d_t by CLIP ViT-L/14 and the argmax of z (the method object `PMG`, which
the pipeline's nodes call).

    .venv/bin/python benchmarks/paper_end_to_end.py --size tiny
    python3 benchmarks/paper_end_to_end.py --size full --users 32 --steps 25 --pairs 4   # GPU

The bar (issue 14): on one H100/H200, keywords for one user + a 4-pair weight grid at 25 steps +
selection, amortised over a batch of users, under 1.0 s per response. The paper: ~5 s per image
on one V100 (2 s LLM + 3 s SD 1.5). Prints seconds per stage and per response, peak memory.
"""

from __future__ import annotations

from paper_common import (
    BAR_SECONDS_PER_RESPONSE,
    Measure,
    env_config,
    keyword_prompts,
    llm_tokenizer,
    model_dtype,
    record,
    setup,
    synthetic_history,
)
from paper_common import parser as base_parser
from paper_generation_grid import generation_params, requests_and_soft_embeddings

PAPER_SECONDS_PER_IMAGE_V100 = 5.0


def main() -> None:
    from pmg_kedro.components.method.pmg import FULL, PMG, PMGSettings
    from pmg_kedro.components.method.soft_embeddings import SoftPreferenceEmbedder
    from pmg_kedro.components.models.llm import GenerationSettings
    from pmg_kedro.components.models.paper_models import random_generator, random_llm, random_scorer

    p = base_parser(__doc__.splitlines()[0], users=(32, 2))
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--pairs", type=int, default=4, help="first N of the weight grid")
    args = p.parse_args()
    setup(args)
    users = args.users
    config = env_config(args.env)
    params = config["parameters"][args.scene]
    kw = params["keyword_extraction"]
    wg = generation_params(params["weighted_generation"], args.steps, args.pairs)
    entry = params["embedding_training"]["sweeps"]["main"][0]
    llm_dtype = model_dtype(config, "llm", args.device)
    gen_dtype = model_dtype(config, "generator", args.device)
    with Measure(args.device) as built:
        llm = random_llm(
            args.size, args.seed, args.device, llm_dtype, llm_tokenizer(args.llm_tokenizer)
        )
        generator = random_generator(args.size, args.seed, args.device, gen_dtype)
        scorer = random_scorer(args.size, args.seed, args.device)
        embedder = SoftPreferenceEmbedder(
            llm, entry["n_tokens"], entry["n_prefixes"], generator.text_encoder.dim, args.seed
        ).eval()
    preference, target = keyword_prompts(config["parameters"], args.scene, users)
    behavior = [
        params["embedding_training"]["prompt_template"].format(
            items="; ".join(synthetic_history(args.scene, 9, u))
        )
        for u in range(users)
    ]
    requests, _ = requests_and_soft_embeddings(
        args.scene, users, entry["n_tokens"], generator.text_encoder.dim, args.seed
    )
    pmg = PMG(generator, scorer, PMGSettings.from_params(wg), llm=llm, embedder=embedder)

    def respond(n: int) -> dict:
        """The response of the first n users, stage by stage: {stage: Measure}."""
        stages, counts = {}, {"new_tokens": 0}
        with Measure(args.device) as stages["keywords"]:
            for prompts, settings, prefix in (
                (preference[: n * len(kw["attributes"])], kw["generation"], kw["answer_prefix"]),
                (target[:n], kw["target_generation"], kw["target_answer_prefix"]),
            ):
                llm.generate(prompts, GenerationSettings.from_params(settings), prefix)
                counts["new_tokens"] += llm.last_stats.new_tokens
        with Measure(args.device) as stages["soft_embeddings"]:
            users_n = requests["user_id"][:n].tolist()
            batch = int(kw["generation"]["batch_size"])
            soft = pmg.soft_embeddings(users_n, behavior[:n], batch)
        with Measure(args.device) as stages["generation"]:
            candidates, images = pmg.generate(requests.head(n), FULL, soft)
        with Measure(args.device) as stages["scoring_selection"]:
            selections = pmg.score(candidates, images, requests.head(n), FULL)
        assert int(selections["chosen"].sum()) == n
        counts["images"] = len(images)
        return stages, counts

    respond(1)  # warm-up: kernels, allocator
    stages, counts = respond(users)
    total = sum(m.seconds for m in stages.values())
    numbers = {
        "users": users,
        "weight_pairs": len(wg["weight_ratios"]),
        "steps": int(wg["steps"]),
        "sampler": wg["sampler"],
        "guidance_scale": float(wg["guidance_scale"]),
        "candidates_per_batch": int(wg["candidates_per_batch"]),
        "llm_batch_size": int(kw["generation"]["batch_size"]),
        "keyword_prompts_per_user": len(kw["attributes"]) + 1,
        "stage_seconds": {k: round(m.seconds, 3) for k, m in stages.items()},
        "keyword_new_tokens": counts["new_tokens"],
        "keyword_tokens_per_s": round(counts["new_tokens"] / stages["keywords"].seconds, 1),
        "images": counts["images"],
        "generation_images_per_s": round(counts["images"] / stages["generation"].seconds, 3),
        "stage_peak_cuda_allocated_gb": {k: m.peak_cuda_gb for k, m in stages.items()},
        "stage_peak_rss_gb": {k: m.peak_rss_gb for k, m in stages.items()},
        "seconds": round(total, 3),
        "seconds_per_response": round(total / users, 4),
        "bar_seconds_per_response": BAR_SECONDS_PER_RESPONSE,
        "under_bar": total / users < BAR_SECONDS_PER_RESPONSE,
        "paper_seconds_per_image_v100": PAPER_SECONDS_PER_IMAGE_V100,
        "build_seconds": round(built.seconds, 2),
    }
    produced_by = {
        "llm": llm.name,
        "llm_dtype": llm_dtype,
        "generator": generator.info["random_init"],
        "generator_dtype": gen_dtype,
        "scorer": f"CLIP ViT-L/14 layout ({args.size}), float32",
    }
    record("end_to_end", args, produced_by, numbers)


if __name__ == "__main__":
    main()
