import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.models.tiny_image import CHANNELS, make_tiny_image_encoder
from xasr.errors import XasrError
from xasr.models.image_encoder import (EfficientNetLite0, FrozenImageEncoder, ImageEncoderConfig,
                                       image_preprocessing)

INSTALLED = Path(__file__).resolve().parents[2] / "models" / "efficientnet-lite0"


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory):
    return make_tiny_image_encoder(tmp_path_factory.mktemp("img") / "tiny.pt")


def test_registered_encoder_gives_a_flat_grid_of_features(tiny_name):
    enc = FrozenImageEncoder(ImageEncoderConfig(name=tiny_name, image_size=32))
    assert enc.output_dim == CHANNELS and enc.grid == (8, 8)
    feats, lens, grids = enc(torch.randn(3, 3, 32, 32))
    assert feats.shape == (3, 64, CHANNELS) and lens.tolist() == [64] * 3 and grids == [(8, 8)] * 3
    # row-major: position i * w + j is cell (i, j) of the feature map
    x = torch.randn(1, 3, 32, 32)
    fmap = enc.backbone(x)
    assert torch.allclose(enc(x)[0][0, 2 * 8 + 5], fmap[0, :, 2, 5])
    assert enc.weights_file == Path(tiny_name.split(":", 1)[1])


def test_encoder_is_frozen_and_stays_in_eval_mode(tiny_name):
    enc = FrozenImageEncoder(ImageEncoderConfig(name=tiny_name, image_size=32))
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not enc.training and not any(m.training for m in enc.modules())
    stats = enc.backbone.features[1].running_mean.clone()
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    feats, _, _ = enc(x * 3 + 1)
    assert not feats.requires_grad  # no graph through the frozen encoder
    assert torch.equal(enc.backbone.features[1].running_mean, stats)  # batch norm statistics unchanged


def test_earlier_feature_layer(tiny_name):
    enc = FrozenImageEncoder(ImageEncoderConfig(name=tiny_name, image_size=32, feature_layer=2))
    assert enc.output_dim == 8 and enc.grid == (16, 16)


def test_preprocessing_comes_from_the_encoder_unless_configured(tiny_name):
    assert image_preprocessing(ImageEncoderConfig(name=tiny_name, image_size=32)) == (32, [0.5] * 3, [0.25] * 3)
    size, mean, std = image_preprocessing(ImageEncoderConfig())
    assert size == 224 and mean == pytest.approx([127 / 255] * 3) and std == pytest.approx([128 / 255] * 3)
    assert image_preprocessing(ImageEncoderConfig(mean=[0.1, 0.2, 0.3], std=[1, 1, 1]))[1:] == ([0.1, 0.2, 0.3],
                                                                                               [1, 1, 1])
    assert image_preprocessing(ImageEncoderConfig(name="torchvision:resnet18:w.pth"))[1] == [0.485, 0.456, 0.406]


def test_unknown_encoder_names_the_known_ones():
    with pytest.raises(KeyError, match="efficientnet-lite0.*torchvision"):
        FrozenImageEncoder(ImageEncoderConfig(name="nope"))


class _WithFeatures(nn.Module):  # like VGG / MobileNet: .features, then pooling and a classifier
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(4, 6, 3, stride=2, padding=1))
        self.classifier = nn.Linear(6, 10)


class _ResNetLike(nn.Module):  # like ResNet: named stages, then avgpool and fc
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 5, 3, stride=2, padding=1)
        self.layer1 = nn.Conv2d(5, 7, 3, stride=2, padding=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(7, 10)


@pytest.fixture
def fake_torchvision(monkeypatch):
    archs = {"with_features": _WithFeatures, "resnet_like": _ResNetLike}

    def get_model(name, weights=None):
        if name not in archs:
            raise ValueError(f"Unknown model {name}")
        return archs[name]()

    module = types.ModuleType("torchvision")
    module.models = types.SimpleNamespace(get_model=get_model)
    monkeypatch.setitem(sys.modules, "torchvision", module)
    return archs


@pytest.mark.parametrize("arch,channels", [("with_features", 6), ("resnet_like", 7)])
def test_torchvision_models_from_local_weights(fake_torchvision, tmp_path, arch, channels):
    torch.manual_seed(0)
    ref = fake_torchvision[arch]()
    torch.save(ref.state_dict(), tmp_path / "w.pth")
    enc = FrozenImageEncoder(ImageEncoderConfig(name=f"torchvision:{arch}:{tmp_path / 'w.pth'}", image_size=32))
    assert enc.output_dim == channels and enc.grid == (8, 8)
    first = enc.backbone.trunk[0]
    assert torch.equal(first.weight, (ref.features[0] if arch == "with_features" else ref.conv1).weight)
    trimmed = FrozenImageEncoder(ImageEncoderConfig(name=f"torchvision:{arch}:{tmp_path / 'w.pth'}", image_size=32,
                                                    feature_layer=0))
    assert trimmed.grid == (16, 16)


def test_torchvision_errors(fake_torchvision, tmp_path, monkeypatch):
    with pytest.raises(XasrError, match="torchvision:<arch>:<weights file>"):
        FrozenImageEncoder(ImageEncoderConfig(name="torchvision:resnet_like"))
    with pytest.raises(XasrError, match="do not exist"):
        FrozenImageEncoder(ImageEncoderConfig(name=f"torchvision:resnet_like:{tmp_path / 'missing.pth'}"))
    torch.save(_WithFeatures().state_dict(), tmp_path / "other.pth")
    with pytest.raises(XasrError, match="not a state dict of torchvision's resnet_like"):
        FrozenImageEncoder(ImageEncoderConfig(name=f"torchvision:resnet_like:{tmp_path / 'other.pth'}"))
    with pytest.raises(XasrError, match="has no model 'nope'"):
        FrozenImageEncoder(ImageEncoderConfig(name=f"torchvision:nope:{tmp_path / 'other.pth'}"))
    monkeypatch.setitem(sys.modules, "torchvision", None)  # not installed
    with pytest.raises(XasrError, match="needs torchvision"):
        FrozenImageEncoder(ImageEncoderConfig(name=f"torchvision:resnet_like:{tmp_path / 'other.pth'}"))


@pytest.mark.slow
@pytest.mark.skipif(not (INSTALLED / "INSTALLED.json").is_file(),
                    reason=f"EfficientNet-Lite0 is not installed in {INSTALLED} (xasr models install efficientnet-lite0)")
def test_installed_efficientnet_lite0():
    enc = FrozenImageEncoder(ImageEncoderConfig(), models_dir=str(INSTALLED.parent))
    assert isinstance(enc.backbone, EfficientNetLite0)
    assert enc.output_dim == 1280 and enc.grid == (7, 7)
    assert enc.weights_file.suffix == ".pth" and enc.weights_file.parent == INSTALLED
    feats, lens, grids = enc(torch.zeros(2, 3, 224, 224))
    assert feats.shape == (2, 49, 1280) and lens.tolist() == [49, 49] and grids == [(7, 7), (7, 7)]
    assert torch.isfinite(feats).all() and (feats >= 0).all() and (feats <= 6).all()  # after ReLU6
    block = FrozenImageEncoder(ImageEncoderConfig(feature_layer=10), models_dir=str(INSTALLED.parent))
    assert block.output_dim == 112 and block.grid == (14, 14)
    with pytest.raises(XasrError, match="feature_layer 16 is out of range"):
        FrozenImageEncoder(ImageEncoderConfig(feature_layer=16), models_dir=str(INSTALLED.parent))
