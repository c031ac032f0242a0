"""A versioned Kedro dataset for a set of named images: one PNG per key in a folder.

Kedro's PartitionedDataset cannot be versioned; this keeps every run's images side by side
(`<filepath>/<version>/<name>/<key>.png`), and keys may contain '/' to form sub-folders
(e.g. `pmg/<user_id>/wp1_wt3`).
"""

from __future__ import annotations

import base64
import glob
import io
import math
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractVersionedDataset, DatasetError, Version
from kedro.io.core import VersionNotFoundError, get_filepath_str, get_protocol_and_path
from kedro_datasets._typing import ImagePreview
from PIL import Image


class ImageFolderDataset(AbstractVersionedDataset[dict[str, Image.Image], dict[str, Any]]):
    """Saves {key: PIL image} as PNGs; loads {key: PIL image} (lazily opened, fully read).

    `metadata` is kept for Kedro-Viz (`{"kedro-viz": {"layer": ..., "preview_args": {...}}}`).
    """

    def __init__(
        self,
        filepath: str,
        version: Version | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        self.metadata = metadata
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

    def preview(self, n_images: int = 16, size: int = 64) -> ImagePreview:
        """Kedro-Viz preview: the first `n_images` images (key order) as one PNG grid, base64.

        Only those files are read (a candidate folder holds thousands); each is resized to
        `size` px, the grid is as square as the count allows.
        """
        from torchvision.transforms.functional import pil_to_tensor, to_pil_image
        from torchvision.utils import make_grid

        root = Path(get_filepath_str(self._get_load_path(), self._protocol))
        paths = sorted(root.rglob("*.png"))[:n_images]
        if not paths:
            raise DatasetError(f"{root}: no PNG images to preview")
        tiles = []
        for path in paths:
            with Image.open(path) as im:
                tiles.append(pil_to_tensor(im.convert("RGB").resize((size, size))))
        grid = make_grid(tiles, nrow=math.ceil(math.sqrt(len(tiles))), padding=2, pad_value=255)
        buffer = io.BytesIO()
        to_pil_image(grid).save(buffer, format="PNG")
        return ImagePreview(base64.b64encode(buffer.getvalue()).decode("ascii"))

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
