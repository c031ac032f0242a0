"""A Kedro dataset for model folders written by `save_pretrained` (generator, scorer).

`kind: generator` loads `components.generator.Generator.from_pretrained` (a saved embedded
generator or a Stable Diffusion 1.5 folder as downloaded); `kind: scorer` loads
`components.scorer.load_scorer` (the tiny CLIP folder, an open_clip folder, or an open_clip
checkpoint file with `model_name`).

Saving `KEEP_EXISTING` leaves the folder untouched: `model_preparation` returns it where the
environment does not train (base keeps the committed weights; paper never writes its models).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, DatasetError, Version
from kedro.io.core import VersionNotFoundError

log = logging.getLogger(__name__)
KINDS = ("generator", "scorer")


class KeepExisting:
    """The value a node returns to leave a model folder as it is."""

    def __repr__(self) -> str:
        return "KEEP_EXISTING"


KEEP_EXISTING = KeepExisting()


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
    ):
        """`load_args`: `device` ("cpu", "cuda") and, for a generator, `dtype` ("float16", ...)."""
        self._load_args = dict(load_args or {})
        if kind not in KINDS:
            raise DatasetError(
                f"ModelFolderDataset({path}): kind must be one of {KINDS}, got {kind!r}"
            )
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
        path = Path(str(self._get_load_path()))
        if not path.exists():
            raise DatasetError(f"model folder {path} ({self._kind}) does not exist")
        import torch

        device = self._load_args.get("device", "cpu")
        if self._kind == "generator":
            from pmg_kedro.components.generator import Generator

            dtype = getattr(torch, self._load_args.get("dtype", "float32"))
            return Generator.from_pretrained(path, dtype=dtype).to(device)
        from pmg_kedro.components.scorer import load_scorer

        scorer = load_scorer(path, self._model_name)
        (scorer.model if hasattr(scorer, "model") else scorer).to(device)
        return scorer

    def save(self, data: Any) -> None:
        if isinstance(data, KeepExisting):
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

    def _exists(self) -> bool:
        try:
            return Path(str(self._get_load_path())).exists()
        except VersionNotFoundError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._filepath), "kind": self._kind, "version": self._version}
