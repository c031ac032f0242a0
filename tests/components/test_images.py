"""The IDX reader (Fashion-MNIST archives) and image access through the image index."""

import gzip

import numpy as np
import pytest
from PIL import Image

from pmg_kedro.components.data.images import (
    STANDALONE,
    load_image,
    read_idx_images,
    read_idx_labels,
)


def _idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload


@pytest.fixture()
def archive(tmp_path):
    """Three 2x3 images (pixel values 0..17) and their labels, gzipped like Debian's files."""
    pixels = np.arange(18, dtype=np.uint8).reshape(3, 2, 3)
    images = tmp_path / "tiny-images-idx3-ubyte.gz"
    labels = tmp_path / "tiny-labels-idx1-ubyte"  # not gzipped: both forms are read
    images.write_bytes(gzip.compress(_idx(2051, (3, 2, 3), pixels.tobytes())))
    labels.write_bytes(_idx(2049, (3,), bytes([7, 0, 9])))
    return str(images), str(labels), pixels


def test_idx_round_trip(archive):
    images, labels, pixels = archive
    np.testing.assert_array_equal(read_idx_images(images), pixels)
    assert read_idx_labels(labels).tolist() == [7, 0, 9]


def test_image_inside_the_archive_is_read_by_offset(archive):
    images, _, pixels = archive
    image = load_image(images, 2)
    assert image.mode == "RGB" and image.size == (3, 2)  # PIL: (width, height)
    np.testing.assert_array_equal(np.asarray(image)[..., 0], pixels[2])
    np.testing.assert_array_equal(np.asarray(image)[..., 1], pixels[2])


def test_wrong_magic_names_the_file_and_both_magics(tmp_path):
    path = tmp_path / "labels-as-images"
    path.write_bytes(_idx(2049, (3,), bytes(3)))
    with pytest.raises(
        ValueError, match=rf"{path}: not an IDX image file \(magic 2049, expected 2051\)"
    ):
        read_idx_images(str(path))


def test_short_payload_is_rejected(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(_idx(2051, (2, 2, 2), bytes(7)))
    with pytest.raises(ValueError, match=r"expected 2x2x2 pixels, found 7"):
        read_idx_images(str(path))
    labels = tmp_path / "short-labels"
    labels.write_bytes(_idx(2049, (4,), bytes(3)))
    with pytest.raises(ValueError, match=r"expected 4 labels, found 3"):
        read_idx_labels(str(labels))


def test_transparent_png_is_composited_on_white_and_resized(tmp_path):
    path = tmp_path / "dot.png"
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # one opaque red pixel, the rest transparent
    Image.fromarray(rgba, "RGBA").save(path)
    image = np.asarray(load_image(str(path), STANDALONE))
    assert image[0, 0].tolist() == [255, 0, 0] and image[3, 3].tolist() == [255, 255, 255]
    assert load_image(str(path), STANDALONE, size=8).size == (8, 8)
