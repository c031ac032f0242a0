"""Train the embedded generator or scorer with the `reference` parameters, outside a Kedro run.

The same functions and parameters as `kedro run --pipeline model_preparation --env reference`
(`build_corpus`, `train_generator` / `train_scorer`), for a background job on a busy machine;
the generator checkpoints its EMA weights every `checkpoint_every` steps. Usage:
    python benchmarks/train_reference_models.py {generator,scorer} OUT_DIR [--env reference_gpu]
writes OUT_DIR/<model>/ (float32 folder) and OUT_DIR/<model>_history.json. `--env
reference_gpu` is the GPU budget of issue 22 (the generator on CUDA, `generator.device`).
"""

import argparse
import json
import logging
import platform
from pathlib import Path

import torch

from pmg_kedro.components.models.training import train_generator, train_scorer
from pmg_kedro.components.reporting.environment import torch_threads
from pmg_kedro.config_loader import project_config_loader
from pmg_kedro.pipelines.model_preparation.nodes import build_corpus

ROOT = Path(__file__).resolve().parents[1]


def reference_parameters(env: str = "reference") -> dict:
    return project_config_loader(env, ROOT / "conf")["parameters"]["model_preparation"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=["generator", "scorer"])
    parser.add_argument("out", type=Path)
    parser.add_argument("--env", default="reference", help="reference (CPU) or reference_gpu")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    params = reference_parameters(args.env)
    corpus, counts = build_corpus(params)  # the pipeline's own node: corpus, counts
    with torch_threads(params.get("torch_threads")):  # the nodes' thread count, as they train
        if args.model == "generator":
            model, history = train_generator(
                corpus, params["generator"], str(args.out / "generator")
            )
        else:
            model, history = train_scorer(corpus, params["scorer"])
        threads = torch.get_num_threads()
    model.save_pretrained(args.out / args.model)
    history.update(
        corpus=counts,
        machine=platform.machine(),
        cpu_threads=threads,
        env=args.env,
        device=str(params[args.model].get("device") or "cpu"),
        gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    )
    (args.out / f"{args.model}_history.json").write_text(json.dumps(history, indent=2))


if __name__ == "__main__":
    main()
