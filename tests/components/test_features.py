"""MobileNetV2 features, the LPIPS-form feature distance, and LPIPS's offline-only guard."""

import pytest
import torch

from pmg_kedro.components.evaluation import features
from pmg_kedro.components.evaluation.features import Lpips, MobileNetFeatures


@pytest.fixture(scope="module")
def mobilenet():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield MobileNetFeatures(input_size=64)
    torch.set_num_threads(threads)


def test_imagenet_weights_recognise_a_photo():
    from skimage import data

    cat = torch.tensor(data.chelsea()).permute(2, 0, 1)[None].float() / 255
    top = MobileNetFeatures(input_size=224).logits(cat).topk(3).indices[0].tolist()
    assert set(top) & {281, 282, 285}  # tabby, tiger cat, Egyptian cat


def test_pooled_features_shape(mobilenet):
    x = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    f = mobilenet.pooled(x, batch_size=2)
    assert f.shape == (5, 1280)
    assert torch.allclose(f[:2], mobilenet.pooled(x[:2]), atol=1e-5)


def test_feature_distance_is_a_distance_on_pairs(mobilenet):
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    assert torch.allclose(mobilenet.distance(a, a), torch.zeros(3))
    d_ab, d_ba = mobilenet.distance(a, b), mobilenet.distance(b, a)
    assert (d_ab > 0).all() and torch.allclose(d_ab, d_ba, atol=1e-5)
    near = (a + 0.02 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    assert (mobilenet.distance(a, near) < d_ab).all()
    with pytest.raises(ValueError, match="shapes"):
        mobilenet.distance(a, b[:2])


def test_lpips_refuses_without_alexnet_weights(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert not Lpips.available()
    with pytest.raises(FileNotFoundError, match="AlexNet weights"):
        Lpips()


def test_missing_mobilenet_weights_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        MobileNetFeatures(weights=tmp_path / "missing.pth")
    assert features.mobilenet_weights_path().is_file()
