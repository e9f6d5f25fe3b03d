"""Pictures for speech-with-image batches: loading, batching, and mismatched-image control sets.

In: lhotse cuts whose ``custom["image"]`` names a picture file (absolute, or relative to the
current directory or to ``ImageLoading.base_dir``); cuts without that field have no picture.
Out:
  * :func:`load_image`: one picture -> float tensor (3, size, size), RGB in [0, 1], resized
    (bilinear) to a square, minus ``mean``, over ``std`` (what the image encoder expects: a model's
    :class:`ImageLoading` comes from :func:`xasr.models.image_encoder.image_loading`).
  * :func:`collate_images`: a batch's pictures ``images`` (B, 3, size, size) and ``has_image``
    (B,) bool; a cut without a picture gets a zero picture and False.
  * :func:`shuffle_images`: the cuts with their pictures permuted so that no cut keeps its own
    picture (a deterministic control condition: speech with a mismatched image).
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from xasr.errors import XasrError

logger = logging.getLogger(__name__)

IMAGE_FIELD = "image"  # the cut's custom field with the picture's path
ORIGINAL_FIELD = "original_image"  # set by shuffle_images: the picture the cut came with


@dataclass
class ImageLoading:
    """How a dataset turns picture files into encoder input."""
    size: int = 224
    mean: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: List[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    base_dir: str = ""  # relative picture paths are taken from here ("" = the current directory)


def load_image(path, size: int = 224, mean: Sequence[float] = (0.5, 0.5, 0.5),
               std: Sequence[float] = (0.5, 0.5, 0.5)) -> torch.Tensor:
    """A picture file -> (3, size, size) float tensor; XasrError naming the file when it is
    missing or Pillow cannot read it."""
    from PIL import Image, UnidentifiedImageError

    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std need 3 values each (std > 0), got {list(mean)} and {list(std)}")
    p = Path(path)
    if not p.is_file():
        raise XasrError(f"image {p} does not exist")
    try:
        with Image.open(p) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0  # (H, W, 3)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise XasrError(f"image {p} cannot be read: {e}") from e
    x = torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, H, W)
    return (x - torch.tensor(list(mean)).view(3, 1, 1)) / torch.tensor(list(std)).view(3, 1, 1)


def cut_image_path(cut, base_dir: str = "") -> Optional[Path]:
    """The picture a cut names, or None; a relative path is taken from ``base_dir`` if set."""
    custom = cut.custom or {}
    value = custom.get(IMAGE_FIELD)
    if not value:
        return None
    p = Path(value)
    if not p.is_absolute() and base_dir:
        p = Path(base_dir) / p
    return p


def collate_images(cuts, opts: ImageLoading) -> Tuple[torch.Tensor, torch.Tensor]:
    """``images`` (B, 3, size, size) and ``has_image`` (B,) bool, in the order of ``cuts``."""
    cuts = list(cuts)
    images = torch.zeros(len(cuts), 3, opts.size, opts.size)
    has = torch.zeros(len(cuts), dtype=torch.bool)
    for i, cut in enumerate(cuts):
        path = cut_image_path(cut, opts.base_dir)
        if path is None:
            continue
        try:
            images[i] = load_image(path, opts.size, opts.mean, opts.std)
        except XasrError as e:
            raise XasrError(f"cut {cut.id}: {e}") from e
        has[i] = True
    return images, has


def shuffle_images(cuts, seed: int = 0, carry: Sequence[str] = ()):
    """The cuts (an eager CutSet or a list) with their pictures permuted: every cut with a
    picture gets one of another picture (cuts sharing a picture move together), the same seed
    gives the same permutation. ``custom["original_image"]`` keeps the picture each cut came
    with. Cuts without a picture are unchanged.

    ``carry``: other custom fields that describe the picture and move with it (e.g. ``scene``
    of the scenes corpus, :func:`xasr.corpora.scenes_corpus.cut_scene`), taken from a cut that has
    the new picture; each cut's own value is kept as ``original_<field>``."""
    from lhotse import CutSet
    from lhotse.utils import fastcopy

    cuts = list(cuts)
    paths = sorted({str(c.custom[IMAGE_FIELD]) for c in cuts if c.custom and c.custom.get(IMAGE_FIELD)})
    if len(paths) < 2:
        raise XasrError(f"mismatched images need cuts with at least two different images, got {len(paths)}")
    order = list(paths)
    random.Random(seed).shuffle(order)
    # each picture is replaced by the next one in a random cyclic order: no picture stays in place
    other: Dict[str, str] = {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}
    described: Dict[str, dict] = {}  # picture -> the carried fields of a cut showing it
    for c in cuts:
        if c.custom and c.custom.get(IMAGE_FIELD):
            described.setdefault(str(c.custom[IMAGE_FIELD]), {f: c.custom.get(f) for f in carry})
    out = []
    for c in cuts:
        if c.custom and c.custom.get(IMAGE_FIELD):
            own = str(c.custom[IMAGE_FIELD])
            moved = {f"original_{f}": c.custom.get(f) for f in carry}
            moved.update(described[other[own]])
            c = fastcopy(c, custom=dict(c.custom, **moved, **{IMAGE_FIELD: other[own], ORIGINAL_FIELD: own}))
        out.append(c)
    logger.info("shuffled the images of %d cuts (%d different images, seed %d)", len(out), len(paths), seed)
    return CutSet.from_cuts(out)
