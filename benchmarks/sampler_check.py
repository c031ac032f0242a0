"""Is a faster sampler good enough? The generator's class check of `model_preparation` (images
from the 10 Fashion-MNIST class captions, classified by a logistic regression on MobileNetV2
features of real test images) under each sampler and step count, with its wall time.

    .venv/bin/python benchmarks/sampler_check.py --runs ddim:25 dpm_solver:12 dpm_solver:8
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import time

import torch

from pmg_kedro.components.models.generator import Generator
from pmg_kedro.config_loader import project_config_loader
from pmg_kedro.pipelines.model_preparation.nodes import check_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", default=["ddim:25", "dpm_solver:12"])
    parser.add_argument("--generator", default="models/embedded/generator")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = project_config_loader("base")["parameters"]
    params = params["model_preparation"]
    generator = Generator.from_pretrained(args.generator)
    original = generator.generate
    results = []
    for run in args.runs:
        sampler, steps = run.split(":")
        generator.generate = functools.partial(original, sampler=sampler)
        cfg = {**params, "checks": {**params["checks"], "steps": int(steps)}}
        start = time.perf_counter()
        report = check_generator(generator, cfg)
        results.append(
            {
                "sampler": sampler,
                "steps": int(steps),
                "top1_accuracy": report["top1_accuracy"],
                "chance": report["chance"],
                "generation_seconds_100_images": report["generation_seconds"],
                "check_seconds": round(time.perf_counter() - start, 1),
            }
        )
        print(json.dumps(results[-1]), flush=True)
    print(
        json.dumps(
            {
                "generator": args.generator,
                "machine": f"{platform.processor() or platform.machine()}, "
                f"{torch.get_num_threads()} torch thread(s)",
                "guidance_scale": params["checks"]["guidance_scale"],
                "seed": params["checks"]["seed"],
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
