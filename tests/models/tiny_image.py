"""A tiny random convolutional image encoder for tests, registered as ``tiny_cnn:<weights file>``.

It has the shape of a torchvision classifier's trunk (``features``: conv / batch norm / ReLU,
stride 4 overall: 32 x 32 pixels -> 16 x 8 x 8) and loads its weights from a state dict file,
so a model directory can fingerprint it like a real pretrained encoder.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn

from xasr.models.image_encoder import IMAGE_ENCODERS

CHANNELS = 16


class TinyCnn(nn.Module):
    mean = (0.5, 0.5, 0.5)
    std = (0.25, 0.25, 0.25)

    def __init__(self, arg: str = "", feature_layer: int = -1, models_dir: Optional[str] = None) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, CHANNELS, 3, stride=2, padding=1), nn.BatchNorm2d(CHANNELS), nn.ReLU(),
        )
        if arg:
            self.weights_file = Path(arg)
            self.load_state_dict(torch.load(self.weights_file, map_location="cpu", weights_only=True))
        if feature_layer >= 0:
            self.features = self.features[:feature_layer + 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, H/4, W/4)


if "tiny_cnn" not in IMAGE_ENCODERS.names():
    IMAGE_ENCODERS.register("tiny_cnn")(TinyCnn)


def make_tiny_image_encoder(path: Path, seed: int = 0) -> str:
    """Write random TinyCnn weights (with non-trivial batch norm statistics) to ``path``;
    returns the encoder name for ``model.image.encoder.name``."""
    torch.manual_seed(seed)
    net = TinyCnn()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return f"tiny_cnn:{path}"
