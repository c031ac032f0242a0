"""A versioned Kedro dataset for named tensors (safetensors) with a small JSON-able header."""

from __future__ import annotations

import math
from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io import AbstractVersionedDataset, Version
from kedro.io.core import VersionNotFoundError, get_filepath_str, get_protocol_and_path
from kedro_datasets._typing import TablePreview

from ..components.models.tensor_files import read_tensors, write_tensors


class TensorsDataset(AbstractVersionedDataset[dict[str, Any], dict[str, Any]]):
    """Saves `{"tensors": {name: Tensor}, "metadata": {...}}` as one .safetensors file.

    The metadata (a JSON-serialisable dict: config, seed, model names) travels in the file's
    header, so a checkpoint says what produced it. The constructor's `metadata` is the catalog
    entry's (Kedro-Viz: `{"kedro-viz": {"layer": ..., "preview_args": {...}}}`), not the file's.
    `optional: true`: an input a run may go without; loading gives None where there is no file.
    """

    def __init__(
        self,
        filepath: str,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
        optional: bool = False,
    ):
        self.metadata = metadata
        self._optional = optional
        protocol, path = get_protocol_and_path(filepath, version)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol)
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    def load(self) -> dict[str, Any] | None:
        if self._optional and not self._exists():
            return None
        return read_tensors(get_filepath_str(self._get_load_path(), self._protocol))

    def preview(self, nrows: int = 20) -> TablePreview:
        """Kedro-Viz preview: one row per tensor (name, shape, dtype, numel), from the header only.

        At most `nrows` tensors (name order); a last row counts the ones left out.
        """
        from safetensors import safe_open

        path = get_filepath_str(self._get_load_path(), self._protocol)
        with safe_open(path, framework="pt") as fh:
            names = sorted(fh.keys())
            rows = []
            for name in names[:nrows]:
                tensor = fh.get_slice(name)
                shape = tensor.get_shape()
                rows.append([name, "x".join(map(str, shape)), tensor.get_dtype(), math.prod(shape)])
        if len(names) > nrows:
            rows.append([f"... {len(names) - nrows} more tensors", "", "", None])
        columns = ["tensor", "shape", "dtype", "numel"]
        return TablePreview({"index": list(range(len(rows))), "columns": columns, "data": rows})

    def save(self, data: dict[str, Any]) -> None:
        path = get_filepath_str(self._get_save_path(), self._protocol)
        self._fs.makedirs(str(PurePosixPath(path).parent), exist_ok=True)
        write_tensors(path, data["tensors"], data.get("metadata", {}))

    def _exists(self) -> bool:
        try:
            path = self._get_load_path()
        except VersionNotFoundError:
            return False
        return self._fs.exists(get_filepath_str(path, self._protocol))

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "version": self._version, "optional": self._optional}
