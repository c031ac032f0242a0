"""The raw scene sources: which files the costume source reads, and that they are read-only."""

from pathlib import Path

import pytest
from kedro.io import DatasetError

from pmg_kedro.datasets.scene_sources import CostumeSource

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
FIXTURE_POG = Path(__file__).resolve().parents[1] / "fixtures" / "pog"

needs_fashion_mnist = pytest.mark.skipif(
    not Path(FASHION_MNIST, "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian dataset-fashion-mnist is not installed",
)


@needs_fashion_mnist
def test_test_split_reads_the_t10k_archive_and_says_so(tmp_path):
    raw = CostumeSource(str(tmp_path / "no_pog"), FASHION_MNIST, split="test").load()
    assert raw["kind"] == "fashion_mnist"
    assert raw["images"].shape == (10_000, 28, 28) and raw["labels"].shape == (10_000,)
    assert raw["images_path"] == f"{FASHION_MNIST}/t10k-images-idx3-ubyte.gz"
    assert raw["source"].startswith("Fashion-MNIST test split (t10k-images-idx3-ubyte.gz;")


def test_unknown_split_is_rejected():
    with pytest.raises(DatasetError, match=r"expected one of \['test', 'train'\], got 'val'"):
        CostumeSource("pog", FASHION_MNIST, split="val")


def test_pog_files_take_precedence_over_fashion_mnist():
    raw = CostumeSource(str(FIXTURE_POG), "/nonexistent", split="test").load()
    assert raw["kind"] == "pog" and raw["folder"] == str(FIXTURE_POG)
    assert raw["files"]["defects"] == []


def test_missing_archive_names_the_file_and_the_package(tmp_path):
    with pytest.raises(
        DatasetError, match=r"t10k-images-idx3-ubyte.gz is missing .*dataset-fashion-mnist"
    ):
        CostumeSource(str(tmp_path), str(tmp_path), split="test").load()


def test_sources_are_read_only(tmp_path):
    with pytest.raises(DatasetError, match="read-only raw source"):
        CostumeSource(str(tmp_path), str(tmp_path)).save({})
