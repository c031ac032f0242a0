"""Image access through the image index: a file on disk, or one image inside an IDX archive.

The image index stores paths (and an offset into IDX archives such as Fashion-MNIST) rather than
copies of images, so every later stage reads pixels through `load_image`.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

STANDALONE = -1  # image_offset of a plain image file
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _read_idx(path: str, magic: int, what: str) -> tuple[bytes, list[int]]:
    """The raw bytes and dimension sizes of an IDX file (optionally gzipped) with this magic."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    found = int.from_bytes(data[0:4], "big")
    if found != magic:
        raise ValueError(f"{path}: not an IDX {what} file (magic {found}, expected {magic})")
    n_dims = magic & 0xFF
    return data, [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims)]


@lru_cache(maxsize=4)
def read_idx_images(path: str) -> np.ndarray:
    """Decode an IDX3 image archive (optionally gzipped) to uint8 (n, rows, cols)."""
    data, (n, rows, cols) = _read_idx(path, 2051, "image")
    pixels = np.frombuffer(data, dtype=np.uint8, offset=16)
    if pixels.size != n * rows * cols:
        raise ValueError(f"{path}: expected {n}x{rows}x{cols} pixels, found {pixels.size}")
    return pixels.reshape(n, rows, cols)


@lru_cache(maxsize=4)
def read_idx_labels(path: str) -> np.ndarray:
    """Decode an IDX1 label archive (optionally gzipped) to uint8 (n,)."""
    data, (n,) = _read_idx(path, 2049, "label")
    labels = np.frombuffer(data, dtype=np.uint8, offset=8)
    if labels.size != n:
        raise ValueError(f"{path}: expected {n} labels, found {labels.size}")
    return labels


def load_image(path: str, offset: int = STANDALONE, size: int | None = None) -> Image.Image:
    """Return an RGB image; transparent pixels (emoji PNGs) are composited on white."""
    if offset == STANDALONE:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P"):
                rgba = im.convert("RGBA")
                image = Image.new("RGB", rgba.size, (255, 255, 255))
                image.paste(rgba, mask=rgba.getchannel("A"))
            else:
                image = im.convert("RGB")
    else:
        image = Image.fromarray(read_idx_images(path)[offset]).convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image


def load_images(index_rows, size: int) -> np.ndarray:
    """Stack images of image-index rows (dicts or namedtuples with image_path, image_offset).

    Returns float32 (n, 3, size, size) in [0, 1].
    """
    images = []
    for row in index_rows:
        path = row["image_path"] if isinstance(row, dict) else row.image_path
        offset = row["image_offset"] if isinstance(row, dict) else row.image_offset
        images.append(load_image(path, int(offset), size))
    return to_array(images, size)


def item_arrays(item_ids, image_index: pd.DataFrame, size: int) -> dict[str, np.ndarray]:
    """{item_id: (3, size, size) float32 array} of items through the image index, each item once.

    Raises KeyError for an item without a row, FileNotFoundError for an image not on disk."""
    index = image_index.assign(item_id=image_index["item_id"].astype(str))
    index = index.drop_duplicates("item_id").set_index("item_id")
    ids = list(dict.fromkeys(str(i) for i in item_ids))
    unknown = [i for i in ids if i not in index.index]
    if unknown:
        raise KeyError(f"image_index: no row for items {unknown[:5]}")
    rows = index.loc[ids].reset_index()
    absent = missing_files(rows["image_path"])
    if absent:
        raise FileNotFoundError(f"image_index: image_path not on disk: {absent[:5]}")
    arrays = load_images(list(rows.itertuples(index=False)), size)
    return dict(zip(ids, arrays, strict=True))


def indexed_or_given_images(
    item_ids, image_index: pd.DataFrame, given: dict[str, Image.Image], given_name: str
) -> tuple[list[Image.Image], list[str]]:
    """Each item's image: its own through the image index ("item image"), else the one `given`
    for it ("generated", from the dataset `given_name`); the images and where each came from.
    An item with neither is an error."""
    index = image_index.assign(item_id=image_index["item_id"].astype(str)).set_index("item_id")
    images, sources = [], []
    for item in item_ids:
        if item in index.index:
            entry = index.loc[item]
            images.append(load_image(entry["image_path"], int(entry["image_offset"])))
            sources.append("item image")
        elif item in given:
            images.append(given[item])
            sources.append("generated")
        else:
            raise ValueError(
                f"item {item!r}: no image in the image index and no generated image in "
                f"{given_name}; rerun the node that generates them"
            )
    return images, sources


def missing_files(paths) -> list[str]:
    """The paths (de-duplicated, in order) that do not exist on disk."""
    seen: dict[str, None] = {}
    for p in paths:
        if p not in seen and not Path(p).is_file():
            seen[p] = None
    return list(seen)


def to_pil(images) -> list[Image.Image]:
    """A batch (n, 3, H, W) in [0, 1] (torch or numpy) -> RGB PIL images (rounded to uint8)."""
    arrays = np.asarray(images.detach().float().cpu()) if hasattr(images, "detach") else images
    arrays = (np.clip(np.asarray(arrays, dtype=np.float32), 0, 1) * 255).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arrays.transpose(0, 2, 3, 1)]


def uint8_to_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 (n, H, W, 3) pixels -> float32 (n, 3, H, W) in [0, 1], the layout models take."""
    return np.ascontiguousarray(np.asarray(pixels).transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def to_array(images, size: int | None = None) -> np.ndarray:
    """PIL images -> float32 (n, 3, H, W) in [0, 1], resized to `size` when given."""
    arrays = []
    for image in images:
        image = image.convert("RGB")
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(image))
    if not arrays:
        return np.zeros((0, 3, size or 0, size or 0), dtype=np.float32)
    return uint8_to_float(np.stack(arrays))


def resize_normalise(
    images, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, mode: str = "bilinear"
):
    """Model input from (n, 3, H, W) in [0, 1]: resized to `size` (when it differs) and normalised
    per channel (ImageNet statistics by default). Bicubic output is clamped back to [0, 1]."""
    import torch
    import torch.nn.functional as F

    x = images.float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode=mode, align_corners=False)
        if mode == "bicubic":
            x = x.clamp(0, 1)
    mean = torch.tensor(mean, device=x.device)[:, None, None]
    std = torch.tensor(std, device=x.device)[:, None, None]
    return (x - mean) / std
