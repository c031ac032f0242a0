"""What the LLM's shared prompt beginnings cost on this CPU, and what the two savings of issue 28
buy (not a test).

1. The shared-prefix pass of `LLM.generate(groups=...)` (keyword extraction: one user's attribute
   prompts share principle and history): the prefix through the whole model (an LM head over
   every prefix position, as before) against the decoder alone (what the pass runs now; only the
   cache is used). Random token ids, `--prefix-batch` rows of `--prefix-tokens`.
2. `batch_prefix` (Table 3's user keywords): the real prompts of the first `--users` movie users
   of a finished run (`movie.recommendation_user_keywords`), answered as the node does, with the
   instructions and the chat template's system turn run once per batch or once per prompt; the
   answers of both are compared.

    .venv/bin/python benchmarks/llm_prefix.py [--env base] [--dtype float32] [--threads 1] [--users 64]

Needs a finished `kedro run` of `--env` (part 2). Prints figures with model, dtype, threads, sizes.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from local_env import prepare, session_catalog

ROOT = prepare(OMP_WAIT_POLICY="PASSIVE")


def _timed(function, repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return seconds


def prefix_pass(llm, args) -> None:
    ids = torch.randint(100, 40_000, (args.prefix_batch, args.prefix_tokens))
    model = llm.model
    with torch.inference_mode():
        full = _timed(lambda: model(input_ids=ids, use_cache=True), args.repeats)
        decoder = _timed(lambda: model.get_decoder()(input_ids=ids, use_cache=True), args.repeats)
    a, b = statistics.median(full), statistics.median(decoder)
    print(
        f"1. prefix pass, {args.prefix_batch} x {args.prefix_tokens} tokens, median of "
        f"{args.repeats}: whole model (LM head over every position) {a:.2f} s, decoder alone "
        f"{b:.2f} s ({100 * (1 - b / a):.0f}% less)"
    )


def batch_prefix(llm, catalog, params, args) -> None:
    from pmg_kedro.components.models.llm import GenerationSettings

    p = params["movie"]["recommendation"]["user_images"]
    prompts = catalog.load("movie.recommendation_user_keywords")["prompt"].tolist()[: args.users]
    answers, seconds = {}, {}
    for shared in (False, True, False, True):
        settings = GenerationSettings.from_params({**p["generation"], "batch_prefix": shared})
        start = time.perf_counter()
        answers[shared] = llm.generate(prompts, settings, p["answer_prefix"], "user keywords")
        seconds.setdefault(shared, []).append(time.perf_counter() - start)
    same = sum(x == y for x, y in zip(answers[False], answers[True], strict=True))
    plain, grouped = min(seconds[False]), min(seconds[True])
    print(
        f"2. Table 3 user keywords, {len(prompts)} movie users, batch "
        f"{p['generation']['batch_size']}, best of 2: per prompt {plain:.1f} s, batch_prefix "
        f"{grouped:.1f} s ({100 * (1 - grouped / plain):.0f}% less); the same answer for "
        f"{same} of {len(prompts)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="base")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--users", type=int, default=64, help="part 2; 0 skips it")
    parser.add_argument("--prefix-batch", type=int, default=8)
    parser.add_argument("--prefix-tokens", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from pmg_kedro.components.models.llm import EMBEDDED_GGUF_PACKAGE, load_llm
    from pmg_kedro.components.reporting.environment import _cpu_name

    torch.set_num_threads(args.threads)
    catalog, params = session_catalog(args.env)
    # the embedded default (conf/base/catalog_llm.yml), built from its package where missing
    llm = load_llm(
        ROOT / "data/06_models/smollm2-135m-instruct",
        gguf_package=EMBEDDED_GGUF_PACKAGE,
        dtype=args.dtype,
        num_threads=args.threads,
    )
    print(
        f"{llm.name}, {args.dtype}, {args.threads} torch thread(s); {_cpu_name()}; "
        f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}"
    )
    prefix_pass(llm, args)
    if args.users:
        batch_prefix(llm, catalog, params, args)


if __name__ == "__main__":
    main()
