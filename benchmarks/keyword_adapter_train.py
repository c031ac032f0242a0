"""Run the keyword adapter's nodes (`keyword_adapter_pipeline`) through a KedroSession.

Until model_preparation's `create_pipeline` includes them, this is
`kedro run --pipeline model_preparation --env ENV --tags keyword_adapter`: the same nodes, catalog
and parameters (built here with the project's config loader settings). `--commit` writes the adapter and its card to models/embedded/keyword_adapter/
(the committed files) instead of the versioned entries under the data root; `--out DIR` writes
them to DIR. Usage (a background job on a busy machine):
    python benchmarks/keyword_adapter_train.py --env reference --commit
    python benchmarks/keyword_adapter_train.py --env test --out /tmp/adapter
"""

import argparse
import logging
import time
from pathlib import Path

from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner

from pmg_kedro.datasets.tensors import TensorsDataset
from pmg_kedro.pipelines.model_preparation.keyword_adapter import keyword_adapter_pipeline
from pmg_kedro.settings import CONFIG_LOADER_ARGS

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "models" / "embedded" / "keyword_adapter"


def project_catalog(env: str) -> DataCatalog:
    """The environment's catalog with its parameters as `params:` entries, as a KedroSession
    builds it (without loading every registered pipeline)."""
    args = {k: v for k, v in CONFIG_LOADER_ARGS.items() if k != "default_run_env"}
    loader = OmegaConfigLoader(str(ROOT / "conf"), env=env, default_run_env=env, **args)
    catalog = DataCatalog.from_config(loader["catalog"])

    def add(prefix: str, value) -> None:
        catalog[prefix] = value
        if isinstance(value, dict):
            for key, inner in value.items():
                add(f"{prefix}.{key}", inner)

    catalog["parameters"] = loader["parameters"]
    for key, value in loader["parameters"].items():
        add(f"params:{key}", value)
    return catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="reference")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--commit", action="store_true", help=f"write to {COMMITTED}")
    where.add_argument("--out", type=Path, help="write the adapter and its card to this folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    start = time.perf_counter()
    catalog = project_catalog(args.env)
    folder = COMMITTED if args.commit else args.out
    if folder is not None:
        from kedro_datasets.text import TextDataset

        catalog["embedded_keyword_adapter"] = TensorsDataset(
            filepath=str(folder / "keyword_adapter.safetensors")
        )
        catalog["keyword_adapter_card"] = TextDataset(filepath=str(folder / "MODEL_CARD.md"))
    SequentialRunner().run(keyword_adapter_pipeline(), catalog)
    logging.info("keyword adapter run (%s): %.1f s", args.env, time.perf_counter() - start)


if __name__ == "__main__":
    main()
