"""Benchmark: LLM keyword extraction (paper §3.2.2) with the Llama-2-7B-chat architecture at random
weights: every attribute prompt and the target prompt of `--users` users, batched greedy decoding
(left padding, KV cache) with the environment's `keyword_extraction` settings.

    .venv/bin/python benchmarks/paper_llm_keywords.py --size tiny
    python3 benchmarks/paper_llm_keywords.py --size full --users 64      # on a GPU

Prints prompts, mean prompt tokens, new tokens, seconds, tokens/s, seconds per user, peak memory.
"""

from __future__ import annotations

from paper_common import (
    Measure,
    env_config,
    keyword_prompts,
    llm_tokenizer,
    model_dtype,
    record,
    setup,
)
from paper_common import parser as base_parser


def build_llm(args, config):
    from pmg_kedro.components.models.paper_models import random_llm

    dtype = model_dtype(config, "llm", args.device)
    tokenizer = llm_tokenizer(args.llm_tokenizer)
    with Measure(args.device) as built:
        llm = random_llm(args.size, args.seed, args.device, dtype, tokenizer=tokenizer)
    produced_by = {"llm": llm.name, "llm_dtype": dtype, "llm_parameters": _count(llm.model)}
    return llm, produced_by, built


def _count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def extract(llm, params: dict, scene: str, users: int) -> dict:
    """Answer every keyword prompt of `users` users as the pipeline does; the numbers."""
    from pmg_kedro.components.models.llm import GenerationSettings

    kw = params[scene]["keyword_extraction"]
    preference, target = keyword_prompts(params, scene, users)
    counts = llm.count_tokens(preference + target)
    numbers = {"users": users, "prompts": len(counts)}
    numbers["mean_prompt_tokens"] = round(sum(counts) / len(counts), 1)
    new_tokens, seconds = 0, 0.0
    for prompts, settings, prefix in (
        (preference, kw["generation"], kw["answer_prefix"]),
        (target, kw["target_generation"], kw["target_answer_prefix"]),
    ):
        llm.generate(prompts, GenerationSettings.from_params(settings), answer_prefix=prefix)
        new_tokens += llm.last_stats.new_tokens
        seconds += llm.last_stats.seconds
    numbers.update(
        new_tokens=new_tokens,
        max_new_tokens=int(kw["generation"]["max_new_tokens"]),
        batch_size=int(kw["generation"]["batch_size"]),
        tokens_per_s=round(new_tokens / seconds, 1),
        seconds_per_user=round(seconds / users, 4),
    )
    return numbers


def main() -> None:
    p = base_parser(__doc__.splitlines()[0], users=(64, 4))
    args = p.parse_args()
    setup(args)
    users = args.users
    config = env_config(args.env)
    llm, produced_by, built = build_llm(args, config)
    extract(llm, config["parameters"], args.scene, 1)  # warm-up: kernels, allocator
    with Measure(args.device) as measured:
        numbers = extract(llm, config["parameters"], args.scene, users)
    numbers.update(measured.numbers(), build_seconds=round(built.seconds, 2))
    record("llm_keywords", args, produced_by, numbers)


if __name__ == "__main__":
    main()
