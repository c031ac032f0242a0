"""LLM throughput of the embedded default on this machine (issue 3; not a test).

1. Generated tokens/s one prompt at a time vs batched (left padding + KV cache), measured in one
   run on the same prompts; the bar is batched >= 4x.
2. Keyword extraction time per user: the `keyword_extraction` nodes (preference + target
   keywords) on the behavior texts of `--users` users per scene, built from the ingestion outputs
   by the `behavior_summarization` nodes, with the parameters of `--env`.

    .venv/bin/python benchmarks/llm_throughput.py [--env base] [--users 8] [--dtype float32 --threads 2]

The model and its load arguments (dtype, threads) come from the env's catalog entry `{scene}.llm`.

Needs `kedro run --pipeline ingestion` first (part 2). Prints figures with model, env, sizes, seed.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from local_env import prepare

ROOT = prepare()

from pmg_kedro.components.models.llm import GenerationSettings, load_llm  # noqa: E402

# Open-ended instructions: every answer runs to max_new_tokens, so both modes generate the same
# number of tokens per prompt.
PROMPTS = [
    "Write a long story about a cat who learns to fly.",
    "Explain in detail how a bicycle works.",
    "Describe your favourite city and why you like it.",
    "Write a letter to a friend about your holiday by the sea.",
    "List many ideas for a birthday party and explain each.",
    "Explain how to bake bread, step by step.",
    "Describe the plot of a science fiction movie you would like to see.",
    "Write a poem about autumn leaves and rain.",
    "Explain why the sky is blue to a child.",
    "Describe a day in the life of a lighthouse keeper.",
    "Write a short essay about the history of the internet.",
    "Give detailed advice to someone learning to play the guitar.",
    "Describe a costume for a carnival parade in detail.",
    "Write a dialogue between a robot and a painter.",
    "Explain how trains changed the world.",
    "Describe the perfect movie poster for a horror film.",
]


def tokens_per_second(
    llm, prompts, batch_size: int, max_new_tokens: int
) -> tuple[float, int, float]:
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens, repetition_penalty=1.0, batch_size=batch_size
    )
    llm.generate(prompts[:1], settings, desc="warm-up")
    llm.generate(prompts, settings, desc=f"batch {batch_size}")
    stats = llm.last_stats
    return stats.tokens_per_s, stats.new_tokens, stats.seconds


def _config_loader(env: str):
    from pmg_kedro.config_loader import project_config_loader

    return project_config_loader(env, ROOT / "conf")


def _catalog_config(env: str) -> dict:
    return _config_loader(env)["catalog"]


def keyword_timing(llm, env: str, n_users: int, scenes: list[str]) -> dict[str, dict[str, float]]:
    from kedro.io import DataCatalog

    from pmg_kedro.components.method.keywords import preference_keywords, target_keywords
    from pmg_kedro.pipelines.behavior_summarization import nodes as bs

    config = _config_loader(env)
    params = config["parameters"]
    catalog = DataCatalog.from_config(config["catalog"])
    results = {}
    for scene in scenes:
        bs_params = {**params[scene]["behavior_summarization"], "max_users": n_users}
        ke_params = params[scene]["keyword_extraction"]
        items = catalog.load(f"{scene}.items")
        users = bs.select_users(catalog.load(f"{scene}.histories"), bs_params)
        captions = bs.caption_items(items, catalog.load(f"{scene}.image_index"), users, bs_params)
        start = time.perf_counter()
        behavior, _ = bs.summarize_behavior(users, captions, llm, bs_params)
        summarise_s = time.perf_counter() - start
        start = time.perf_counter()
        preference_keywords(behavior, items, llm, ke_params)
        target_keywords(behavior, items, llm, ke_params)
        keywords_s = time.perf_counter() - start
        results[scene] = {
            "users": len(users),
            "summarise_s": summarise_s,
            "keywords_s": keywords_s,
            "keywords_s_per_user": keywords_s / max(len(users), 1),
            "default_max_users": params[scene]["behavior_summarization"]["max_users"],
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="base")
    parser.add_argument("--dtype", default=None, help="default: the catalog's `{scene}.llm`")
    parser.add_argument("--threads", type=int, default=None, help="default: the catalog's")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--users", type=int, default=8, help="users per scene for part 2; 0 skips")
    parser.add_argument("--scenes", default="movie,emoticon,costume")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    entry = _catalog_config(args.env)["{scene}.llm"]
    load_args = dict(entry.get("load_args") or {})
    if args.dtype:
        load_args["dtype"] = args.dtype
    if args.threads:
        load_args["num_threads"] = args.threads
    start = time.perf_counter()
    llm = load_llm(
        ROOT / entry["path"],
        gguf_package=(entry.get("gguf") or {}).get("package"),
        gguf_file=(entry.get("gguf") or {}).get("file"),
        **load_args,
    )
    load_s = time.perf_counter() - start
    n_params = sum(p.numel() for p in llm.model.parameters()) / 1e6
    print(
        f"model {llm.name} ({n_params:.0f}M parameters, {load_args}), loaded in {load_s:.1f} s; "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {platform.machine()}; env {args.env}; "
        f"seed {args.seed}; load average {os.getloadavg()[0]:.1f}"
    )

    prompts = PROMPTS[: args.batch_size]
    single, n1, s1 = tokens_per_second(llm, prompts, 1, args.max_new_tokens)
    batched, nb, sb = tokens_per_second(llm, prompts, args.batch_size, args.max_new_tokens)
    print(
        f"greedy, {args.max_new_tokens} new tokens, {len(prompts)} prompts: one at a time "
        f"{single:.1f} tokens/s ({n1} tokens, {s1:.1f} s); batch {args.batch_size} "
        f"{batched:.1f} tokens/s ({nb} tokens, {sb:.1f} s); ratio {batched / single:.1f}x "
        f"(bar: >= 4x) -> {'PASS' if batched >= 4 * single else 'FAIL'}"
    )

    if args.users:
        results = keyword_timing(llm, args.env, args.users, args.scenes.split(","))
        total = 0.0
        for scene, r in results.items():
            estimate = r["keywords_s_per_user"] * r["default_max_users"]
            total += estimate
            print(
                f"{scene}: {r['users']} users, behavior summaries {r['summarise_s']:.1f} s, "
                f"keyword extraction {r['keywords_s']:.1f} s = {r['keywords_s_per_user']:.2f} s/user "
                f"-> {estimate:.0f} s for the default {r['default_max_users']} users"
            )
        print(
            f"keyword extraction, all default users of {args.scenes}: ~{total:.0f} s (bar: < 300 s)"
        )
    print(
        f"load average at the end {os.getloadavg()[0]:.1f} (other work on this machine slows all figures)"
    )


if __name__ == "__main__":
    main()
