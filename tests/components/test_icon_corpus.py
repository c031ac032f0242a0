"""The captioned icon corpus (Twemoji + Fashion-MNIST) at tiny sizes."""

import gzip

import numpy as np
import pandas as pd
import pytest

from pmg_kedro.components.data.sources.fashion_mnist import CLASS_NAMES
from pmg_kedro.components.models import icon_corpus as ic


@pytest.fixture()
def fashion_archive(tmp_path):
    """Twenty 28x28 images, two per class, as gzipped IDX files (image k: uniform 100 + 5k)."""
    labels = np.repeat(np.arange(10, dtype=np.uint8), 2)
    images = np.zeros((20, 28, 28), dtype=np.uint8)
    for k in range(20):
        images[k] = 100 + 5 * k
    header = (2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in (20, 28, 28))
    images_path, labels_path = tmp_path / "images.gz", tmp_path / "labels.gz"
    images_path.write_bytes(gzip.compress(header + images.tobytes()))
    label_header = (2049).to_bytes(4, "big") + (20).to_bytes(4, "big")
    labels_path.write_bytes(gzip.compress(label_header + labels.tobytes()))
    return str(images_path), str(labels_path), images


@pytest.mark.parametrize(
    ("name", "concept"),
    [
        ("thumbs up: medium skin tone", "thumbs up"),
        ("people holding hands: medium-dark skin tone, light skin tone", "people holding hands"),
        ("red heart", "red heart"),
    ],
)
def test_skin_tones_are_not_part_of_the_concept(name, concept):
    assert ic.base_concept(name) == concept


def test_heldout_split_holds_out_whole_concepts_never_kept_ones():
    concepts = pd.Series(["cat", "cat", "dog", "sun", "sun", "moon", "ship"])
    split = ic.heldout_split(concepts, 0.5, seed=1, keep=("ship",))
    held = set(concepts[split == "heldout"])
    assert len(held) == 2 and "ship" not in held  # half of the 4 concepts that may go
    for concept in held:  # every image of a held-out concept is held out
        assert (split[concepts == concept] == "heldout").all()
    assert split.equals(ic.heldout_split(concepts, 0.5, seed=1, keep=("ship",)))
    assert (ic.heldout_split(concepts, 0.0, seed=1) == "train").all()


def test_always_train_concepts_join_training_and_leave_the_other_draws_alone():
    concepts = pd.Series([f"c{i}" for i in range(40)])
    before = ic.heldout_split(concepts, 0.25, seed=3)
    held = sorted(set(concepts[before == "heldout"]))
    moved = held[:2]  # two concepts the seed holds out: a scene needs them drawn
    after = ic.heldout_split(concepts, 0.25, seed=3, always_train=moved)
    assert (after[concepts.isin(moved)] == "train").all()
    others = ~concepts.isin(moved)
    assert after[others].equals(before[others])  # every other concept keeps its split


def test_fashion_rows_are_class_balanced_resized_and_captioned(fashion_archive):
    images_path, labels_path, raw = fashion_archive
    images, table = ic.fashion_rows(images_path, labels_path, size=8, per_class=1, seed=0)
    assert images.shape == (10, 8, 8, 3) and images.dtype == np.uint8
    assert table["concept"].tolist() == list(CLASS_NAMES)  # sorted offsets: class order
    assert all(c.endswith(f" {k}") for c, k in zip(table["caption"], table["concept"], strict=True))
    offsets = table["item_ref"].str[2:].astype(int).to_numpy()
    # each image is one uniform level, which resizing keeps: the offsets point at the right images
    assert images[:, 4, 4, 0].tolist() == raw[offsets, 14, 14].tolist()


def test_build_icon_corpus_counts_what_it_holds(fashion_archive):
    images_path, labels_path, _ = fashion_archive
    corpus, counts = ic.build_icon_corpus(
        size=8,
        fashion_images_path=images_path,
        fashion_labels_path=labels_path,
        fashion_per_class=1,
        heldout_fraction=0.5,
        seed=0,
        emoji_limit=6,
    )
    table = corpus.table
    assert corpus.images.shape == (16, 8, 8, 3)
    assert (table["source"] == "twemoji").sum() == 6
    heldout = table["split"] == "heldout"
    assert not heldout[table["source"] == "fashion_mnist"].any()
    assert counts["images"] == 16 and counts["fashion_mnist_images"] == 10
    assert counts["heldout_images"] == int(heldout.sum())
    assert counts["heldout_concepts"] == table.loc[heldout, "concept"].nunique()
    emoji_concepts = table.loc[table["source"] == "twemoji", "concept"].nunique()
    assert counts["heldout_concepts"] == round(0.5 * emoji_concepts)


def test_corpus_layout_and_consistency():
    images = np.arange(2 * 2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 2, 3)
    table = pd.DataFrame({"concept": ["a", "b"]})
    corpus = ic.IconCorpus(images, table)
    as_float = corpus.as_float()
    assert as_float.shape == (2, 3, 2, 2)
    assert as_float[1, 2, 0, 1] == pytest.approx(images[1, 0, 1, 2] / 255.0)
    assert corpus.subset([False, True]).table["concept"].tolist() == ["b"]
    with pytest.raises(ValueError, match="2 images but 1 table rows"):
        ic.IconCorpus(images, table.head(1))
