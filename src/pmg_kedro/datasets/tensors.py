"""A versioned Kedro dataset for named tensors (safetensors) with a small JSON-able header."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io import AbstractVersionedDataset, Version
from kedro.io.core import VersionNotFoundError, get_filepath_str, get_protocol_and_path

METADATA_KEY = "pmg_metadata"


class TensorsDataset(AbstractVersionedDataset[dict[str, Any], dict[str, Any]]):
    """Saves `{"tensors": {name: Tensor}, "metadata": {...}}` as one .safetensors file.

    The metadata (a JSON-serialisable dict: config, seed, model names) travels in the file's
    header, so a checkpoint says what produced it.
    """

    def __init__(self, filepath: str, version: Version | None = None):
        protocol, path = get_protocol_and_path(filepath, version)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol)
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    def load(self) -> dict[str, Any]:
        from safetensors import safe_open

        path = get_filepath_str(self._get_load_path(), self._protocol)
        with safe_open(path, framework="pt") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
            header = fh.metadata() or {}
        return {"tensors": tensors, "metadata": json.loads(header.get(METADATA_KEY, "{}"))}

    def save(self, data: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        path = get_filepath_str(self._get_save_path(), self._protocol)
        self._fs.makedirs(str(PurePosixPath(path).parent), exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in data["tensors"].items()}
        save_file(tensors, path, metadata={METADATA_KEY: json.dumps(data.get("metadata", {}))})

    def _exists(self) -> bool:
        try:
            path = self._get_load_path()
        except VersionNotFoundError:
            return False
        return self._fs.exists(get_filepath_str(path, self._protocol))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "version": self._version}
