"""A versioned Kedro dataset for a set of named images: one PNG per key in a folder.

Kedro's PartitionedDataset cannot be versioned; this keeps every run's images side by side
(`<filepath>/<version>/<name>/<key>.png`), and keys may contain '/' to form sub-folders
(e.g. `pmg/<user_id>/wp1_wt3`).
"""

from __future__ import annotations

import glob
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, DatasetError, Version
from kedro.io.core import VersionNotFoundError, get_filepath_str, get_protocol_and_path
from PIL import Image


class ImageFolderDataset(AbstractVersionedDataset[dict[str, Image.Image], dict[str, Any]]):
    """Saves {key: PIL image} as PNGs; loads {key: PIL image} (lazily opened, fully read)."""

    def __init__(self, filepath: str, version: Version | None = None):
        protocol, path = get_protocol_and_path(filepath, version)
        if protocol != "file":
            raise DatasetError(f"ImageFolderDataset supports local folders only, got {filepath}")
        self._protocol = protocol
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=lambda p: Path(p).is_dir(),
            glob_function=glob.glob,
        )

    def load(self) -> dict[str, Image.Image]:
        root = Path(get_filepath_str(self._get_load_path(), self._protocol))
        images = {}
        for path in sorted(root.rglob("*.png")):
            with Image.open(path) as im:
                images[path.relative_to(root).with_suffix("").as_posix()] = im.convert("RGB")
        return images

    def save(self, data: dict[str, Any]) -> None:
        root = Path(get_filepath_str(self._get_save_path(), self._protocol))
        root.mkdir(parents=True, exist_ok=True)  # an empty set of images is a valid result
        for key, image in data.items():
            if key.startswith("/") or ".." in PurePosixPath(key).parts:
                raise DatasetError(f"image key {key!r} must be a relative path without '..'")
            target = root / f"{key}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(target)

    def _exists(self) -> bool:
        try:
            return Path(get_filepath_str(self._get_load_path(), self._protocol)).is_dir()
        except VersionNotFoundError:
            return False

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "version": self._version}
