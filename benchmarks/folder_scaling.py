"""How a folder scene's cost grows with its size (issue 30; not a test).

    .venv/bin/python benchmarks/folder_scaling.py [--sizes 10000 100000 1000000]
        [--work /tmp/folder_scaling] [--keyword-users 8] [--out /tmp/folder_scaling/results.json]
        [--plot docs/figures/folder_scaling.png]

Per size n (interactions): a synthetic scene folder in the documented format (docs/your-own-data.md)
with n/10 users and n/10 items, 10 interactions a user (ISO 8601 timestamps, ratings 1-5, a
review text on every fifth, quoted commas and non-Latin titles), 16 px PNGs under `images/`, five
attribute columns. Then each stage in a fresh process of its own (so its peak resident memory is
its own), the base environment's parameters for a scene add-scene would write:
  - ingestion: the ingestion pipeline's three nodes (read and check every file row and image,
    history split, protocol split), outputs written as the catalog writes them (Parquet);
  - behavior_summarization: its three nodes on the protocol's users (64 evaluation + up to 96
    train users), SmolLM2 (the catalog's `llm`) for the long texts; the model load timed apart;
  - keyword_extraction: k^p (one prompt per attribute, prefix-cached) and k^t for a sample of
    `--keyword-users` evaluation users, in this process; the seconds per user projected to the
    protocol's 160 rows and to every user.
Prints one JSON record per (size, stage) and writes them all to `--out`, the table as Markdown and
the plot (time and peak memory against size, per stage).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from local_env import prepare

ROOT = prepare(OMP_WAIT_POLICY="PASSIVE")
STAGES = ("ingestion", "behavior_summarization", "keyword_extraction")
COLOURS = ["red", "blue", "green", "black", "white", "ochre", "teal", "grey"]
KINDS = ["mug", "bowl", "vase", "plate", "jug", "cup"]
BRANDS = [f"brand {k}" for k in range(40)]
SCRIPTS = ["", "茶碗 ", "Ваза ", "Κύπελλο "]


def make_folder(folder: Path, n_interactions: int, seed: int = 0) -> dict:
    """The synthetic folder (module docstring); returns its sizes."""
    from PIL import Image

    n_users = n_items = max(10, n_interactions // 10)
    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    with open(folder / "items.csv", "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["item_id", "title", "description", "kind", "colour", "brand", "size", "sku"])
        for i in range(n_items):
            colour, kind = COLOURS[i % len(COLOURS)], KINDS[(i // 8) % len(KINDS)]
            title = f"{SCRIPTS[i % 4]}{colour} {kind}, no. {i}"
            out.writerow(
                [
                    f"i{i}",
                    title,
                    f"A {colour} {kind}" if i % 3 else "",
                    kind,
                    colour,
                    BRANDS[i % len(BRANDS)],
                    "small|medium" if i % 2 else "large",
                    f"SKU{i}",
                ]
            )
            rgb = (40 + 25 * (i % 8), 60 + 20 * (i % 6), 90)
            Image.new("RGB", (16, 16), rgb).save(folder / "images" / f"i{i}.png")
    start = datetime(2020, 1, 1, tzinfo=UTC)
    with open(folder / "interactions.csv", "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["user_id", "item_id", "timestamp", "rating", "text"])
        for k in range(n_interactions):
            user = k % n_users
            when = start + timedelta(minutes=k)
            text = "Lovely, would buy again" if k % 5 == 0 else ""
            out.writerow(
                [
                    f"u{user}",
                    f"i{rng.randrange(n_items)}",
                    when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    rng.choice([2, 4, 4, 5, 5]),
                    text,
                ]
            )
    return {"interactions": n_interactions, "users": n_users, "items": n_items}


def scene_parameters(folder: Path) -> dict:
    """The base environment's parameters of a scene add-scene writes for the synthetic folder."""
    from pmg_kedro.config_loader import merged
    from pmg_kedro.scene_blocks import capabilities, scene_parameters
    from pmg_kedro.scene_setup import SceneOptions, SceneProfile, environment_parameters

    options = SceneOptions(name="synthetic", folder=folder, env="base")
    attributes = {"kind": 6, "colour": 8, "brand": 40, "size": 3}  # sku: one per item, not asked
    profile = SceneProfile(
        counts={},
        images="images/ folder",
        ratings=True,
        texts=True,
        attributes=attributes,
        other_columns=["sku"],
        users_split=0,
        n_evaluation=64,
        recommendation=True,
    )
    return merged(
        environment_parameters(options, capabilities(profile)), scene_parameters(options, profile)
    )


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _llm():
    """The catalog's LLM and its load's (wall, CPU) seconds, timed apart from the stage."""
    from local_env import session_catalog

    started, cpu = time.perf_counter(), _cpu_s()
    llm = session_catalog("base")[0].load("llm")
    return llm, time.perf_counter() - started, _cpu_s() - cpu


def stage_ingestion(folder: Path, work: Path, p: dict) -> dict:
    from pmg_kedro.datasets.scene_sources import FolderSource
    from pmg_kedro.pipelines.ingestion import nodes

    raw = FolderSource(str(folder)).load()
    items, interactions, index, users, report = nodes.build_scene_tables(raw, p["ingestion"])
    histories, report = nodes.split_user_histories(interactions, report, p["ingestion"])
    split = nodes.split_users_for_protocol(histories, p["protocol"])
    for name, table in (
        ("items", items),
        ("interactions", interactions),
        ("image_index", index),
        ("users", users),
        ("histories", histories),
        ("user_split", split),
    ):
        table.to_parquet(work / f"{name}.parquet")
    return {"histories": len(histories), "counts": report["counts"]}


def stage_behavior_summarization(folder: Path, work: Path, p: dict) -> dict:
    import pandas as pd

    from pmg_kedro.pipelines.behavior_summarization import nodes

    llm, load_s, load_cpu_s = _llm()
    tables = {
        n: pd.read_parquet(work / f"{n}.parquet")
        for n in ("histories", "user_split", "image_index", "items")
    }
    selected = nodes.select_users(
        tables["histories"],
        tables["user_split"],
        tables["image_index"],
        p["ingestion"],
        p["protocol"],
    )
    captions = nodes.caption_items(
        tables["items"], tables["image_index"], selected, p["behavior_summarization"]
    )
    texts, _ = nodes.summarize_behavior(selected, captions, llm, p["behavior_summarization"])
    texts.to_parquet(work / "behavior_texts.parquet")
    return {"rows": len(texts), "model_load_s": load_s, "model_load_cpu_s": load_cpu_s}


def stage_keyword_extraction(folder: Path, work: Path, p: dict, n_users: int) -> dict:
    import pandas as pd

    from pmg_kedro.components.method.keywords import preference_keywords, target_keywords

    llm, load_s, load_cpu_s = _llm()
    texts = pd.read_parquet(work / "behavior_texts.parquet")
    items = pd.read_parquet(work / "items.parquet")
    sample = texts[texts["purpose"] == "evaluation"].head(n_users)
    started, cpu = time.perf_counter(), _cpu_s()
    preference_keywords(sample, items, llm, p["keyword_extraction"], "none")
    target_keywords(sample, items, llm, p["keyword_extraction"])
    seconds, cpu = time.perf_counter() - started, _cpu_s() - cpu
    return {
        "sample_users": len(sample),
        "model_load_s": load_s,
        "model_load_cpu_s": load_cpu_s,
        "keyword_s": seconds,
        "keyword_cpu_s": cpu,
        "cpu_s_per_user": cpu / len(sample),
        "protocol_rows": len(texts),
    }


def run_stage(stage: str, folder: Path, work: Path, keyword_users: int) -> None:
    """One stage in this process; prints its JSON record."""
    import torch

    torch.set_num_threads(1)
    p = scene_parameters(folder)
    before = _rss_mib()
    started, cpu = time.perf_counter(), _cpu_s()
    if stage == "ingestion":
        out = stage_ingestion(folder, work, p)
    elif stage == "behavior_summarization":
        out = stage_behavior_summarization(folder, work, p)
    else:
        out = stage_keyword_extraction(folder, work, p, keyword_users)
    wall, cpu = time.perf_counter() - started, _cpu_s() - cpu
    record = {
        "stage": stage,
        "wall_s": round(wall - out.get("model_load_s", 0), 2),
        "cpu_s": round(cpu - out.get("model_load_cpu_s", 0), 2),
        "rss_before_mib": round(before),
        "peak_rss_mib": round(_peak_mib()),
        **out,
    }
    print("RESULT " + json.dumps(record, default=str), flush=True)


def _load() -> float:
    return os.getloadavg()[0]


def drive(args) -> list[dict]:
    records = []
    for size in args.sizes:
        folder, work = args.work / f"n{size}" / "folder", args.work / f"n{size}" / "work"
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        if not (folder / "interactions.csv").is_file():
            sizes = make_folder(folder, size)
        else:
            sizes = {
                "interactions": size,
                "users": max(10, size // 10),
                "items": max(10, size // 10),
            }
        print(
            f"n={size}: folder ready in {time.perf_counter() - started:.1f} s {sizes}", flush=True
        )
        for stage in args.stages:
            load = _load()
            command = [
                sys.executable,
                __file__,
                "--stage",
                stage,
                "--folder",
                str(folder),
                "--work-dir",
                str(work),
                "--keyword-users",
                str(args.keyword_users),
            ]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
            if done.returncode or not lines:
                raise SystemExit(
                    f"{stage} at n={size} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
                )
            record = {
                **sizes,
                "size": size,
                "load_before": round(load, 2),
                "load_after": round(_load(), 2),
                **json.loads(lines[-1][len("RESULT ") :]),
            }
            print(json.dumps(record), flush=True)
            records.append(record)
    return records


def table(records: list[dict]) -> str:
    rows = [
        "| interactions | users / items | stage | wall s | CPU s | peak RSS MiB | load | notes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r["stage"] == "ingestion":
            note = f"{r['histories']:,} users with a history"
        elif r["stage"] == "behavior_summarization":
            note = f"{r['rows']} rows (the protocol's); LLM load apart ({r['model_load_s']:.0f} s)"
        else:
            note = (
                f"{r['sample_users']} users sampled: {r['cpu_s_per_user']:.2f} CPU s/user "
                f"({r['keyword_s']:.0f} s wall); LLM load apart"
            )
        rows.append(
            f"| {r['size']:,} | {r['users']:,} / {r['items']:,} | {r['stage']} | "
            f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['peak_rss_mib']:,} | "
            f"{r['load_before']} | {note} |"
        )
    return "\n".join(rows)


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for k, stage in enumerate(STAGES):
        rs = [r for r in records if r["stage"] == stage]
        if not rs:
            continue
        sizes, colour = [r["size"] for r in rs], f"C{k}"
        stage = f"{stage} ({rs[0]['sample_users']} users)" if "sample_users" in rs[0] else stage
        left.plot(sizes, [r["cpu_s"] for r in rs], "o-", color=colour, label=f"{stage} (CPU)")
        left.plot(sizes, [r["wall_s"] for r in rs], "x:", color=colour, label=f"{stage} (wall)")
        right.plot(sizes, [r["peak_rss_mib"] for r in rs], "o-", color=colour, label=stage)
    right.axhline(4096, color="red", linestyle="--", linewidth=1, label="4 GiB (ingestion's bar)")
    for ax, label in (
        (left, "seconds (LLM load excluded)"),
        (right, "peak RSS of the stage's process (MiB)"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("interactions (users = items = interactions / 10)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    loads = [r["load_before"] for r in records]
    fig.suptitle(
        "A folder scene's cost by size: 2-core AMD EPYC, one torch thread, "
        f"shared (load {min(loads):.0f}-{max(loads):.0f})"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/folder_scaling"))
    parser.add_argument("--keyword-users", type=int, default=8)
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--out", type=Path, default=Path("/tmp/folder_scaling/results.json"))
    parser.add_argument(
        "--plot", type=Path, default=ROOT / "docs" / "figures" / "folder_scaling.png"
    )
    parser.add_argument("--stage", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        run_stage(args.stage, args.folder, args.work_dir, args.keyword_users)
        return
    records = drive(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(records, indent=1))
    plot(records, args.plot)
    print(table(records))


if __name__ == "__main__":
    main()
