"""Versioned save/load round trips of the project's Kedro datasets (tmp folders, tiny data)."""

import numpy as np
import pytest
import torch
from kedro.io import DatasetError, Version
from PIL import Image

from pmg_kedro.components.models.training_loop import UNTRAINED
from pmg_kedro.datasets.image_folder import ImageFolderDataset
from pmg_kedro.datasets.model_folder import ModelFolderDataset
from pmg_kedro.datasets.tensors import TensorsDataset

V1, V2 = "2026-01-01T00.00.00.000Z", "2026-01-02T00.00.00.000Z"


def _image(seed: int, size: int = 6) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_image_folder_keeps_keys_pixels_and_versions(tmp_path):
    path = str(tmp_path / "chosen_images")
    first = {"u1/s0": _image(0), "u2/s0": _image(1)}
    ImageFolderDataset(path, version=Version(None, V1)).save(first)
    ImageFolderDataset(path, version=Version(None, V2)).save({"u1/s0": _image(2)})

    older = ImageFolderDataset(path, version=Version(V1, None)).load()
    assert set(older) == {"u1/s0", "u2/s0"}
    for key, image in first.items():
        np.testing.assert_array_equal(np.asarray(older[key]), np.asarray(image))  # PNG: lossless
    latest = ImageFolderDataset(path, version=Version(None, None)).load()
    np.testing.assert_array_equal(np.asarray(latest["u1/s0"]), np.asarray(_image(2)))
    assert set(latest) == {"u1/s0"}


def test_image_folder_saves_an_empty_set_and_rejects_escaping_keys(tmp_path):
    path = str(tmp_path / "images")
    ImageFolderDataset(path, version=Version(None, V1)).save({})
    assert ImageFolderDataset(path, version=Version(None, None)).load() == {}
    with pytest.raises(DatasetError, match=r"must be a relative path without '\.\.'"):
        ImageFolderDataset(path, version=Version(None, V2)).save({"../evil": _image(0)})


def test_tensors_round_trip_with_metadata_and_versions(tmp_path):
    path = str(tmp_path / "soft_embeddings.safetensors")
    tensors = {"u1": torch.randn(4, 3), "u2": torch.arange(6, dtype=torch.float16).view(2, 3)}
    metadata = {"seed": 7, "model": "tiny", "sizes": [4, 3]}
    TensorsDataset(path, version=Version(None, V1)).save({"tensors": tensors, "metadata": metadata})
    TensorsDataset(path, version=Version(None, V2)).save({"tensors": {"u1": torch.zeros(1)}})

    loaded = TensorsDataset(path, version=Version(V1, None)).load()
    assert loaded["metadata"] == metadata
    assert set(loaded["tensors"]) == {"u1", "u2"}
    for key, tensor in tensors.items():
        assert loaded["tensors"][key].dtype == tensor.dtype
        assert torch.equal(loaded["tensors"][key], tensor)
    latest = TensorsDataset(path, version=Version(None, None)).load()
    assert latest["metadata"] == {} and torch.equal(latest["tensors"]["u1"], torch.zeros(1))


def test_unsaved_versioned_datasets_do_not_exist(tmp_path):
    assert not TensorsDataset(str(tmp_path / "t.safetensors"), Version(None, None)).exists()
    assert not ImageFolderDataset(str(tmp_path / "i"), Version(None, None)).exists()


@pytest.mark.usefixtures("one_thread")
def test_generator_folder_round_trip_keeps_every_weight(tmp_path, tiny_generator):
    path = str(tmp_path / "generator")
    ModelFolderDataset(path, kind="generator", version=Version(None, V1)).save(tiny_generator)
    loaded = ModelFolderDataset(path, kind="generator", version=Version(None, None)).load()
    assert loaded.info["name"] == tiny_generator.info["name"]
    for name, tensor in tiny_generator.unet.state_dict().items():
        assert torch.equal(loaded.unet.state_dict()[name], tensor), name


def test_saving_untrained_leaves_the_folder_as_it_is(tmp_path):
    folder = tmp_path / "scorer"
    folder.mkdir()
    (folder / "weights").write_text("committed")
    ModelFolderDataset(str(folder), kind="scorer").save(UNTRAINED)
    assert [p.name for p in folder.iterdir()] == ["weights"]
    assert (folder / "weights").read_text() == "committed"


def test_an_optional_tensors_input_without_a_file_loads_as_none(tmp_path):
    path = str(tmp_path / "checkpoint.safetensors")
    assert TensorsDataset(path, optional=True).load() is None
    with pytest.raises(DatasetError):
        TensorsDataset(path).load()  # a required input: no file is an error
    TensorsDataset(path).save({"tensors": {"w": torch.ones(2)}, "metadata": {"steps": 3}})
    loaded = TensorsDataset(path, optional=True).load()
    assert torch.equal(loaded["tensors"]["w"], torch.ones(2)) and loaded["metadata"] == {"steps": 3}


def test_model_folder_rejects_an_unknown_kind_and_a_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"kind must be one of \('generator', 'scorer'\)"):
        ModelFolderDataset(str(tmp_path / "m"), kind="llm")
    with pytest.raises(DatasetError, match=r"does not exist"):
        ModelFolderDataset(str(tmp_path / "m"), kind="scorer").load()


@pytest.mark.usefixtures("one_thread")
def test_llm_folder_round_trip_gives_the_same_logits(tmp_path, tiny_llama):
    from pmg_kedro.datasets.llm_folder import LLMFolderDataset

    llm = LLMFolderDataset(path=str(tiny_llama)).load()
    copy_path = tmp_path / "llm_copy"
    LLMFolderDataset(path=str(copy_path)).save(llm)
    assert LLMFolderDataset(path=str(copy_path)).exists()
    copy = LLMFolderDataset(path=str(copy_path)).load()
    batch = llm.tokenizer(["a tiny prompt"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(llm.model(**batch).logits, copy.model(**batch).logits)
