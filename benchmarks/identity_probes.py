"""Can the identity probes of Table 1 be trusted, and can the generator pass them at all? Trains
each scene's identity probe as `metric_evaluation`'s `fit_identity_probe` does (the environment's
parameters, the items and image index of its ingestion run), prints its held-out accuracy and
time, then classifies images the generator makes from each class's or emoji's own caption (the
10 Fashion-MNIST class names; each emoji's CLDR name), so a Table 1 identity share can be read
against what the generator reaches when asked for the thing by name.

    .venv/bin/kedro run --pipeline ingestion      # once: the items and image index it reads
    .venv/bin/python benchmarks/identity_probes.py --env base --per-caption 10
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from pmg_kedro.components.data.sources.fashion_mnist import CLASS_NAMES
from pmg_kedro.components.method.pmg import PMG
from pmg_kedro.pipelines.metric_evaluation.nodes import fit_identity_probe

CAPTIONS = {  # scene -> (caption of each class, the class it names) from the items
    "costume": lambda items: [(name, name) for name in CLASS_NAMES],
    "emoticon": lambda items: list(zip(items["title"], items["item_id"].astype(str), strict=True)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default="base")
    parser.add_argument("--scenes", nargs="+", default=list(CAPTIONS))
    parser.add_argument("--per-caption", type=int, default=10, help="generated images per caption")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bootstrap_project(".")
    with KedroSession.create(env=args.env) as session:
        catalog = session.load_context().catalog
    parameters = catalog.load("parameters")
    archives = catalog.load("fashion_mnist_train"), catalog.load("fashion_mnist_test")
    pmg = PMG(catalog.load("generator"))
    for scene in args.scenes:
        params = parameters[scene]["metric_evaluation"]
        items = catalog.load(f"{scene}.items")
        started = time.perf_counter()
        probe = fit_identity_probe(items, catalog.load(f"{scene}.image_index"), *archives, params)
        seconds = round(time.perf_counter() - started, 1)
        report = probe["report"]
        record = {
            "scene": scene,
            "env": args.env,
            "status": report["status"],
            "held_out_accuracy": report.get("held_out_accuracy"),
            "n_held_out_images": report.get("n_held_out_images"),
            "chance": report.get("chance"),
            "fit": report.get("fit"),
            "held_out": report.get("held_out"),
            "probe_seconds": seconds,
        }
        if probe["probe"] is not None:
            generation = parameters[scene]["weighted_generation"]
            record["generated"] = _generated_check(
                pmg, probe["probe"], items, scene, args, generation
            )
        record["machine"] = f"{platform.processor() or platform.machine()}, "
        record["machine"] += f"{torch.get_num_threads()} torch thread(s)"
        print(json.dumps(record), flush=True)


def _generated_check(pmg, probe, items, scene, args, generation) -> dict:
    """The probe's share of generated images of each caption it names as that caption's class,
    sampled as the weighted_generation pipeline samples (its env's sampler, steps, guidance)."""
    captions, truth = zip(*CAPTIONS[scene](items), strict=True)
    started = time.perf_counter()
    images = pmg.render(
        list(captions),
        seed=0,
        steps=int(generation["steps"]),
        guidance_scale=float(generation["guidance_scale"]),
        sampler=generation["sampler"],
        mode=generation["mode"],
        repeats=args.per_caption,
        same_noise=False,
        what=f"{scene} captions",
    )
    predicted = probe.predict(images.float().numpy())
    expected = np.repeat(np.asarray(truth, dtype=object), args.per_caption)
    hits = predicted == expected
    per_caption = {
        c: float(hits[k * args.per_caption : (k + 1) * args.per_caption].mean())
        for k, c in enumerate(captions)
    }
    return {
        "share_named_as_its_caption": round(float(hits.mean()), 4),
        "chance": round(1 / len(probe.classes), 4),
        "images": len(expected),
        "per_caption": per_caption,
        "sampling": {k: generation[k] for k in ("sampler", "steps", "guidance_scale")},
        "seconds": round(time.perf_counter() - started, 1),
    }


if __name__ == "__main__":
    main()
