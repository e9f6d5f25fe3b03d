"""The frozen pretrained image encoder: pictures -> a grid of feature vectors.

In: ``images`` (B, 3, H, W), preprocessed as the encoder expects (:func:`image_preprocessing`
gives the size, mean and std that :mod:`xasr.data.images` uses).
Out: ``feats`` (B, h*w, C) (the last feature map before pooling, row-major), ``lens`` (B,)
(h*w each) and ``grids`` [(h, w)] per picture, for the Q-Former (:mod:`xasr.models.qformer`).

Encoders are picked by name from :data:`IMAGE_ENCODERS` (``kind`` or ``kind:argument``):

- ``efficientnet-lite0`` (default): EfficientNet-Lite0 from its installed directory
  (``xasr models install efficientnet-lite0``; ``efficientnet-lite0:<dir>`` for another
  directory holding the same ``.pth`` state dict), run with the ``efficientnet-lite-pytorch``
  model code. ``feature_layer: -1`` takes the head's output (1280 x 7 x 7 at 224 pixels);
  ``k >= 0`` the output of MBConv block k (0..15; e.g. 10: 112 x 14 x 14, 15: 320 x 7 x 7).
  Its weights come from the TensorFlow Lite models, trained on (x - 127) / 128 of 0..255 pixels,
  hence mean 0.498 and std 0.502 on 0..1 pixels.
- ``torchvision:<arch>:<weights file>``: any torchvision classification model (e.g.
  ``torchvision:resnet18:/models/resnet18-f37072fd.pth``) from a local state dict; the feature
  trunk is ``model.features`` when the model has one (VGG, MobileNet, EfficientNet, ConvNeXt),
  else the children before ``avgpool`` (ResNet, RegNet); ``feature_layer: k >= 0`` keeps the
  trunk's first k + 1 children. ImageNet mean and std.

An encoder is a module ``(B, 3, H, W) -> (B, C, h, w)`` with class attributes ``mean`` and
``std`` and an attribute ``weights_file`` (what the model directory's fingerprint covers);
register new ones with ``@IMAGE_ENCODERS.register("name")``. The encoder is frozen: no
parameter trains, it stays in eval mode, and it runs without building a graph.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Tuple

import torch
from torch import Tensor, nn

from xasr.errors import XasrError
from xasr.utils.registry import Registry

if TYPE_CHECKING:
    from xasr.data.images import ImageLoading

logger = logging.getLogger(__name__)

IMAGE_ENCODERS = Registry("image encoder")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageEncoderConfig:
    name: str = "efficientnet-lite0"  # "kind" or "kind:argument", kind a name in IMAGE_ENCODERS
    feature_layer: int = -1  # -1: the last feature map before pooling; k >= 0: an earlier block's output
    image_size: int = 224  # pictures are resized to image_size x image_size
    mean: Optional[List[float]] = None  # None: what the encoder was trained with
    std: Optional[List[float]] = None


def _split_name(name: str) -> Tuple[str, str]:
    kind, _, arg = name.partition(":")
    return kind, arg


def image_preprocessing(cfg: ImageEncoderConfig) -> Tuple[int, List[float], List[float]]:
    """(size, mean, std) of the pictures the configured encoder expects."""
    cls = IMAGE_ENCODERS.get(_split_name(cfg.name)[0])
    mean = list(cfg.mean) if cfg.mean is not None else list(cls.mean)
    std = list(cfg.std) if cfg.std is not None else list(cls.std)
    return int(cfg.image_size), mean, std


def image_loading(data_cfg, encoder_cfg, image_dir: Optional[str] = None) -> Optional["ImageLoading"]:
    """How to load pictures for a model: from ``data.images`` / ``data.image_dir`` and the
    preprocessing the model's image encoder expects (``model.image.encoder``); None when the
    data config loads no pictures (an :class:`xasr.data.images.ImageLoading` otherwise)."""
    from xasr.data.images import ImageLoading

    if not data_cfg.images:
        return None
    size, mean, std = image_preprocessing(encoder_cfg)
    return ImageLoading(size=size, mean=mean, std=std,
                        base_dir=data_cfg.image_dir if image_dir is None else image_dir)


@IMAGE_ENCODERS.register("efficientnet-lite0")
class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (efficientnet-lite-pytorch) up to its head or an earlier block."""
    mean = (127.0 / 255, 127.0 / 255, 127.0 / 255)
    std = (128.0 / 255, 128.0 / 255, 128.0 / 255)

    def __init__(self, arg: str, feature_layer: int = -1, models_dir: Optional[str] = None) -> None:
        super().__init__()
        from xasr.pretrained.install import resolve_model_dir

        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise XasrError("the efficientnet-lite0 image encoder needs the model code: "
                            "pip install efficientnet-lite-pytorch==0.1.0") from e
        d = Path(resolve_model_dir(arg or "efficientnet-lite0", models_dir))
        self.weights_file = self._weights_file(d)
        net = EfficientNet.from_name("efficientnet-lite0")
        try:
            net.load_state_dict(torch.load(self.weights_file, map_location="cpu", weights_only=True), strict=True)
        except (RuntimeError, OSError, ValueError) as e:
            raise XasrError(f"{self.weights_file} is not an EfficientNet-Lite0 state dict: {e}") from e
        n = len(net._blocks)
        if not -1 <= feature_layer < n:
            raise XasrError(f"image encoder feature_layer {feature_layer} is out of range: -1 (head) or 0..{n - 1}")
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[:n if feature_layer == -1 else feature_layer + 1])
        self.head = nn.Sequential(net._conv_head, net._bn1, net._swish) if feature_layer == -1 else None

    @staticmethod
    def _weights_file(d: Path) -> Path:
        info = d / "model.json"
        if info.is_file():
            f = d / json.loads(info.read_text())["file"]
            if f.is_file():
                return f
        found = sorted(d.glob("*.pth"))
        if len(found) != 1:
            raise XasrError(f"{d}: expected one EfficientNet-Lite0 .pth state dict, found {len(found)}")
        return found[0]

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)  # (B, 32, H/2, W/2)
        for block in self.blocks:
            x = block(x)
        return x if self.head is None else self.head(x)  # (B, C, h, w)


@IMAGE_ENCODERS.register("torchvision")
class TorchvisionTrunk(nn.Module):
    """The convolutional trunk of a torchvision classification model from a local state dict."""
    mean = IMAGENET_MEAN
    std = IMAGENET_STD

    def __init__(self, arg: str, feature_layer: int = -1, models_dir: Optional[str] = None) -> None:
        super().__init__()
        arch, _, weights = arg.partition(":")
        if not arch or not weights:
            raise XasrError(f"a torchvision image encoder is named torchvision:<arch>:<weights file>, got "
                            f"'torchvision:{arg}'")
        try:
            import torchvision
        except ImportError as e:
            raise XasrError(f"the image encoder torchvision:{arg} needs torchvision (pip install torchvision)") from e
        self.weights_file = Path(weights).expanduser()
        if not self.weights_file.is_file():
            raise XasrError(f"torchvision weights {self.weights_file} do not exist")
        try:
            model = torchvision.models.get_model(arch, weights=None)
        except (ValueError, KeyError) as e:
            raise XasrError(f"torchvision has no model {arch!r}: {e}") from e
        try:
            model.load_state_dict(torch.load(self.weights_file, map_location="cpu", weights_only=True), strict=True)
        except (RuntimeError, OSError, ValueError) as e:
            raise XasrError(f"{self.weights_file} is not a state dict of torchvision's {arch}: {e}") from e
        features = getattr(model, "features", None)
        if isinstance(features, nn.Module):
            trunk = features
        elif hasattr(model, "avgpool"):
            children = []
            for name, child in model.named_children():
                if name == "avgpool":
                    break
                children.append(child)
            trunk = nn.Sequential(*children)
        else:
            raise XasrError(f"torchvision's {arch} has neither .features nor .avgpool: its feature map is unknown")
        if feature_layer >= 0:
            if not isinstance(trunk, nn.Sequential) or feature_layer >= len(trunk):
                raise XasrError(f"feature_layer {feature_layer} is out of range for torchvision's {arch}")
            trunk = trunk[:feature_layer + 1]
        self.trunk = trunk

    def forward(self, x: Tensor) -> Tensor:
        return self.trunk(x)  # (B, C, h, w)


class FrozenImageEncoder(nn.Module):
    """A registered image encoder, frozen, with its feature map flattened to a sequence."""

    def __init__(self, cfg: ImageEncoderConfig, models_dir: Optional[str] = None) -> None:
        super().__init__()
        self.cfg = cfg
        kind, arg = _split_name(cfg.name)
        self.backbone = IMAGE_ENCODERS.get(kind)(arg, cfg.feature_layer, models_dir)
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        with torch.no_grad():
            probe = self.backbone(torch.zeros(1, 3, cfg.image_size, cfg.image_size))  # (1, C, h, w)
        if probe.dim() != 4:
            raise XasrError(f"image encoder {cfg.name} gives {tuple(probe.shape)}, not a feature map (B, C, h, w)")
        self.output_dim = int(probe.shape[1])
        self.grid = (int(probe.shape[2]), int(probe.shape[3]))
        logger.info("image encoder %s: %.2fM parameters (frozen), %d x %d pixels -> %d x %d x %d features",
                    cfg.name, sum(p.numel() for p in self.parameters()) / 1e6, cfg.image_size, cfg.image_size,
                    self.output_dim, *self.grid)

    @property
    def weights_file(self) -> Path:
        return Path(self.backbone.weights_file)

    def train(self, mode: bool = True) -> "FrozenImageEncoder":
        return super().train(False)  # batch norm statistics and dropout stay as pretrained

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor, List[Tuple[int, int]]]:
        fmap = self.backbone(images)  # (B, C, h, w)
        B, C, h, w = fmap.shape
        feats = fmap.flatten(2).transpose(1, 2)  # (B, h*w, C)
        lens = torch.full((B,), h * w, dtype=torch.long, device=fmap.device)
        return feats, lens, [(h, w)] * B

