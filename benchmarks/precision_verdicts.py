"""Do the base run's conclusions survive the LLM's precision? (issue 28; not a test)

Two `kedro run`s of the same commit, one with the LLM in bfloat16 and one in float32 (the path of
CPUs without native bfloat16; `PMG_AUTO_DTYPE=float32` forces it on a CPU that has it), each with
its own data folder. This compares, per scene:
  - the share of evaluation users whose preference keywords k^p differ between the runs;
  - every verdict the reports give (Table 1's `table1_comparisons.csv`, Table 3's
    `recommendation.json`, `keyword_quality.json`, `soft_embedding_report.json`): the same
    in both, or flipped — a flipped verdict marks a comparison too fragile to report as settled;
  - Table 3's between-run spread: per setting, the mean test recall@20 over seeds in each run and
    their difference (the same seeds: only the precision differs).

    .venv/bin/python benchmarks/precision_verdicts.py RUN_A/data RUN_B/data \
        --labels bfloat16 float32 --json precision_verdicts.json

Reads the latest version of each versioned dataset under each data folder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd

REPORTS = ("recommendation.json", "keyword_quality.json", "soft_embedding_report.json")


def latest(folder: Path, name: str) -> Path | None:
    """The newest version of a versioned dataset `folder/name/<version>/name`, or None."""
    versions = sorted((folder / name).glob(f"*/{name}"))
    return versions[-1] if versions else None


def json_verdicts(value: Any, path: str = "") -> dict[str, str]:
    """Every `verdict` in a JSON report, keyed by where it sits (dict keys, list entries named by
    their `a`/`b`/`name` fields where they have them)."""
    found: dict[str, str] = {}
    if isinstance(value, dict):
        if isinstance(value.get("verdict"), str):
            found[path or "."] = value["verdict"]
        for key, item in value.items():
            found |= json_verdicts(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            name = i
            if isinstance(item, dict):
                name = (
                    item.get("name")
                    or "-".join(str(item[k]) for k in ("a", "b", "metric") if k in item)
                    or i
                )
            found |= json_verdicts(item, f"{path}[{name}]")
    return found


def table1_verdicts(path: Path) -> dict[str, str]:
    table = pd.read_csv(path)
    table = table[table["status"] == "ok"]
    return {
        f"table1/{r.comparison}/{r.reference}/{r.metric}": str(r.verdict)
        for r in table.itertuples()
    }


def scene_verdicts(reporting: Path) -> dict[str, str]:
    verdicts: dict[str, str] = {}
    path = latest(reporting, "table1_comparisons.csv")
    if path:
        verdicts |= table1_verdicts(path)
    for report in REPORTS:
        path = latest(reporting, report)
        if path:
            prefix = report.removesuffix(".json")
            verdicts |= {
                f"{prefix}{k}": v for k, v in json_verdicts(json.loads(path.read_text())).items()
            }
    return verdicts


def keyword_difference(
    a: Path, b: Path, scene: str, dataset: str = "preference_keywords.parquet"
) -> dict[str, Any]:
    """Share of users whose keywords differ between the two runs: the evaluation users' k^p
    (`preference_keywords.parquet`), or Table 3's users (`recommendation/user_keywords.parquet`)."""
    folder, _, name = f"{scene}/{dataset}".rpartition("/")
    found = [latest(d / "04_feature" / folder, name) for d in (a, b)]
    if not all(found):
        return {"n_users": 0}
    ka, kb = (pd.read_parquet(p) for p in found)
    if "purpose" in ka.columns:
        ka, kb = (k[k["purpose"] == "evaluation"] for k in (ka, kb))
    ka, kb = (k.set_index("user_id")["keywords"] for k in (ka, kb))
    users = sorted(set(ka.index) & set(kb.index))
    differ = [u for u in users if list(ka[u]) != list(kb[u])]
    return {
        "n_users": len(users),
        "n_differ": len(differ),
        "share": len(differ) / max(len(users), 1),
    }


def table3_spread(a: Path, b: Path, scene: str, metric: str = "recall@20") -> dict[str, Any]:
    """Per Table 3 setting: the mean `metric` over seeds in each run and b - a (same seeds)."""
    found = [latest(d / "08_reporting" / scene, "recommendation.json") for d in (a, b)]
    if not all(found):
        return {}
    ra, rb = (json.loads(p.read_text())["settings"] for p in found)
    spread = {
        name: {
            "a": ra[name][metric]["mean"],
            "b": rb[name][metric]["mean"],
            "b_minus_a": rb[name][metric]["mean"] - ra[name][metric]["mean"],
        }
        for name in ra
        if name in rb and metric in ra[name] and metric in rb[name]
    }
    return {"metric": metric, "settings": spread}


def verdict_kind(verdict: str) -> str:
    """The verdict without its parenthesised detail ("tests disagree (Holm p = 0.03, ...)" and
    "tests disagree (Holm p = 0.009, ...)" are the same verdict)."""
    return verdict.split(" (")[0].strip()


def compare(a: Path, b: Path) -> dict[str, Any]:
    scenes = sorted(
        p.name for p in (a / "08_reporting").iterdir() if (b / "08_reporting" / p.name).is_dir()
    )
    out = {}
    for scene in scenes:
        va, vb = (scene_verdicts(d / "08_reporting" / scene) for d in (a, b))
        both = sorted(set(va) & set(vb))
        flips = {
            k: (verdict_kind(va[k]), verdict_kind(vb[k]))
            for k in both
            if verdict_kind(va[k]) != verdict_kind(vb[k])
        }
        out[scene] = {
            "keywords": keyword_difference(a, b, scene),
            "table3_keywords": keyword_difference(
                a, b, scene, "recommendation/user_keywords.parquet"
            ),
            "n_verdicts": len(both),
            "n_same": len(both) - len(flips),
            "flipped": flips,
            "only_in_one": sorted(set(va) ^ set(vb)),
            "table3_spread": table3_spread(a, b, scene),
        }
    return out


def markdown(result: dict[str, Any], labels: tuple[str, str]) -> str:
    a, b = labels
    lines = [
        f"| scene | evaluation users whose k^p differs | Table 3 users whose keywords differ "
        f"| verdicts | same | flipped ({a} → {b}): FRAGILE |",
        "|---|---|---|---|---|---|",
    ]

    def share(k: dict[str, Any]) -> str:
        return f"{k['n_differ']}/{k['n_users']} ({k['share']:.0%})" if k["n_users"] else "—"

    for scene, r in result.items():
        lines.append(
            f"| {scene} | {share(r['keywords'])} | {share(r['table3_keywords'])} "
            f"| {r['n_verdicts']} | {r['n_same']} | {len(r['flipped'])} |"
        )
    for scene, r in result.items():
        if r["flipped"]:
            lines += ["", f"FRAGILE in {scene} (the verdict moved with the precision):", ""]
            lines += [f"- `{p}`: {x} → {y}" for p, (x, y) in r["flipped"].items()]
    for scene, r in result.items():
        spread = r.get("table3_spread") or {}
        if spread.get("settings"):
            lines += [
                "",
                f"Table 3, {scene}: mean test {spread['metric']} over the same seeds",
                "",
                f"| setting | {a} | {b} | {b} − {a} |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {name} | {v['a']:.4f} | {v['b']:.4f} | {v['b_minus_a']:+.4f} |"
                for name, v in spread["settings"].items()
            ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path, help="data folder of the first run")
    parser.add_argument("b", type=Path, help="data folder of the second run")
    parser.add_argument("--labels", nargs=2, default=("bfloat16", "float32"))
    parser.add_argument("--json", type=Path, help="write the whole comparison here")
    args = parser.parse_args()
    result = compare(args.a, args.b)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    print(markdown(result, tuple(args.labels)))


if __name__ == "__main__":
    main()
