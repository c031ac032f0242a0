"""A Kedro dataset for model folders written by `save_pretrained` (generator, scorer).

`kind: generator` loads `components.models.generator.Generator.from_pretrained` (a saved embedded
generator or a Stable Diffusion 1.5 folder as downloaded); `kind: scorer` loads
`components.models.scorer.load_scorer` (the tiny CLIP folder, an open_clip folder, or an open_clip
checkpoint file with `model_name`).

Saving `UNTRAINED` (components.models.training_loop: no new weights, what `model_preparation`'s training
nodes return where the environment does not train) leaves the folder as it is: base keeps the
committed weights and only measures them.

`random_init: {size: full | tiny, seed: 0}` (the `paper_random` environments): when the folder is
missing, the paper's architecture at random initialisation is written there first (SD 1.5 as
`StableDiffusionPipeline.save_pretrained` lays it out, CLIP ViT-L/14 as an open_clip folder;
`components.models.random_model_folders`), then it loads like downloaded weights. Nothing is
downloaded.

`load_args`: `device` ("cpu", "cuda"), for a generator `dtype` ("float16", "bfloat16", ...), and
`swap_group` (a name): the model takes turns on the device with the other members of that group,
e.g. the LLM, when the GPU cannot hold them all (`components.models.gpu_residency.SwapGroup`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, DatasetError, Version
from kedro.io.core import VersionNotFoundError

from ..components.models.gpu_residency import join_swap_group, swap_group
from ..components.models.random_model_folders import materialise_random_model, random_init_args
from ..components.models.sharding import ModelDefinition, attach_definition
from ..components.models.training_loop import Untrained
from ..preflight import device_problem, folder_hint

log = logging.getLogger(__name__)
KINDS = ("generator", "scorer")
# What a folder of each kind holds (the preflight's hint; the paper's models as downloaded).
KIND_FOLDERS = {
    "generator": "a generator folder (e.g. Stable Diffusion 1.5 as downloaded: model_index.json, "
    "unet/, vae/, text_encoder/, tokenizer/, scheduler/)",
    "scorer": "a scorer folder or checkpoint (e.g. CLIP ViT-L/14 for open_clip: "
    "open_clip_config.json + open_clip_model.safetensors)",
}


class ModelFolderDataset(AbstractVersionedDataset[Any, Any]):
    """A generator or scorer saved as a folder (safetensors + configs), optionally versioned."""

    def __init__(
        self,
        path: str,
        kind: str,
        fp16: bool = False,
        model_name: str | None = None,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
        load_args: dict[str, Any] | None = None,
        random_init: dict[str, Any] | None = None,
        path_env_var: str | None = None,
    ):
        """See the module docstring for `load_args` and `random_init`; `path_env_var` names an
        environment variable that, when set, replaces `path` (PMG_SD15_PATH, PMG_CLIP_PATH)."""
        self._path_env_var = path_env_var
        self._from_env_var = bool(path_env_var and os.environ.get(path_env_var))
        if self._from_env_var:
            path = os.environ[path_env_var]
        self._load_args = dict(load_args or {})
        self._swap_group = self._load_args.pop("swap_group", None)
        if kind not in KINDS:
            raise DatasetError(
                f"ModelFolderDataset({path}): kind must be one of {KINDS}, got {kind!r}"
            )
        self._random_init = random_init_args(random_init, f"ModelFolderDataset({path})")
        if self._random_init and version is not None:
            raise DatasetError(f"ModelFolderDataset({path}): a random_init folder is not versioned")
        self._kind, self._fp16, self._model_name = kind, bool(fp16), model_name
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=lambda p: Path(p).exists(),
            glob_function=lambda pattern: (
                [str(p) for p in Path("/").glob(pattern.lstrip("/"))]
                if pattern.startswith("/")
                else [str(p) for p in Path().glob(pattern)]
            ),
        )

    def load(self) -> Any:
        device = self._load_args.get("device", "cpu")
        dtype = self._load_args.get("dtype", "float32")
        if self._random_init:
            materialise_random_model(
                self._kind, str(self._filepath), device=device, dtype=dtype, **self._random_init
            )
        path = Path(str(self._get_load_path()))
        if not path.exists():
            raise DatasetError(f"model folder {path} ({self._kind}) does not exist")
        import torch

        if self._kind == "generator":
            from pmg_kedro.components.models.generator import Generator

            model = Generator.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
        else:
            from pmg_kedro.components.models.scorer import load_scorer

            model = load_scorer(path, self._model_name)
            _scorer_module(model).to(device)
        if self._swap_group:
            group = swap_group(self._swap_group, device)
            join_swap_group(model, group, f"{self._kind}:{path}", _move)
        return attach_definition(
            model, ModelDefinition(load_model_definition, self._definition(path))
        )

    def _definition(self, path: Path) -> dict[str, Any]:
        """This entry's configuration at the folder just loaded (a version resolved): what a
        Dask worker loads the same model from."""
        load_args = dict(self._load_args)
        if self._swap_group:
            load_args["swap_group"] = self._swap_group
        return {
            "path": str(path),
            "kind": self._kind,
            "fp16": self._fp16,
            "model_name": self._model_name,
            "load_args": load_args,
            "random_init": self._random_init or None,
        }

    def save(self, data: Any) -> None:
        if isinstance(data, Untrained):
            log.info("%s: left as it is (this environment does not train it)", self._filepath)
            return
        path = Path(str(self._get_save_path()))
        path.parent.mkdir(parents=True, exist_ok=True)
        # write beside, then swap, so a failed save never leaves half a model behind
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
        staging.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
        try:
            data.save_pretrained(staging, fp16=self._fp16)
            if path.exists():
                shutil.rmtree(path)
            staging.rename(path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def preflight(self) -> list[str]:
        """What loading needs and does not have (`pmg_kedro.preflight`): a CUDA device, and the
        folder unless `random_init` writes it."""
        problems = [device_problem(self._load_args.get("device", "cpu"))]
        if not (self._random_init or self._exists()):
            source = f" (from {self._path_env_var})" if self._from_env_var else ""
            state = "has no saved version" if self._version is not None else "does not exist"
            problems.append(
                f"the {self._kind} folder {self._filepath}{source} {state}: "
                f"{folder_hint(self._path_env_var, KIND_FOLDERS[self._kind])}"
            )
        return [p for p in problems if p]

    def _exists(self) -> bool:
        try:
            return Path(str(self._get_load_path())).exists()
        except VersionNotFoundError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {
            "path": str(self._filepath),
            "kind": self._kind,
            "version": self._version,
            "random_init": self._random_init,
            "load_args": self._load_args,
            "swap_group": self._swap_group,
        }


def load_model_definition(config: dict[str, Any]) -> Any:
    """The model of a `ModelFolderDataset` configuration (a worker's own copy)."""
    return ModelFolderDataset(**config).load()


def _scorer_module(scorer: Any) -> Any:
    """The torch module of a scorer: open_clip's model, or the TinyClip module itself."""
    return scorer.model if hasattr(scorer, "model") else scorer


def _move(model: Any, device: Any) -> None:
    """Move a generator or scorer (a SwapGroup member) to `device`."""
    if hasattr(model, "unet"):
        model.to(device)
    else:
        _scorer_module(model).to(device)
