import numpy as np
import pytest
import soundfile as sf
import torch

from xasr.data.images import ORIGINAL_FIELD, ImageLoading, collate_images, load_image, shuffle_images
from xasr.models.image_encoder import image_loading
from xasr.errors import XasrError


def _png(path, rgb=(255, 0, 0), size=(40, 30)):
    from PIL import Image

    Image.new("RGB", size, rgb).save(path)
    return path


def _cuts(tmp_path, images):
    """Cuts of 0.5-1 s noise, the i-th with custom image images[i] (None: no picture)."""
    from lhotse import CutSet, Recording, SupervisionSegment

    cuts = []
    for i, img in enumerate(images):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, np.random.default_rng(i).normal(0, 0.1, 8000 + 1600 * i).astype("float32"), 16000)
        cut = Recording.from_file(path, recording_id=f"u{i}").to_cut()
        cut.supervisions = [SupervisionSegment(f"u{i}", f"u{i}", 0, cut.duration, text="a b")]
        if img is not None:
            cut.custom = {"image": str(img)}
        cuts.append(cut)
    return CutSet.from_cuts(cuts)


def test_load_image_resizes_and_normalises(tmp_path):
    x = load_image(_png(tmp_path / "red.png"), size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5))
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.ones(16, 16)) and torch.allclose(x[1], torch.full((16, 16), -2.0))


def test_a_batch_mixes_cuts_with_and_without_a_picture(tmp_path):
    (tmp_path / "pics").mkdir()
    _png(tmp_path / "pics/red.png")
    _png(tmp_path / "pics/blue.png", rgb=(0, 0, 255))
    cuts = _cuts(tmp_path, ["red.png", None, str(tmp_path / "pics/blue.png")])  # relative, none, absolute
    opts = ImageLoading(size=8, mean=[0.5] * 3, std=[0.5] * 3, base_dir=str(tmp_path / "pics"))
    images, has = collate_images(cuts, opts)
    assert images.shape == (3, 3, 8, 8) and has.tolist() == [True, False, True]
    assert images[0, 0].eq(1).all() and images[2, 2].eq(1).all() and images[1].eq(0).all()

    from xasr.data.dataset import AsrDataset

    batch = AsrDataset(None, "whisper_mel", images=opts)[cuts]  # sorted longest first
    assert batch.ids == ["u2", "u1", "u0"]
    assert batch.has_image.tolist() == [True, False, True]
    assert batch.images[0, 2].eq(1).all() and batch.images[2, 0].eq(1).all()
    assert AsrDataset(None, "whisper_mel")[cuts].images is None  # no option, no pictures


def test_an_unreadable_picture_names_the_file_and_the_cut(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a picture")
    opts = ImageLoading(size=8)
    with pytest.raises(XasrError, match=r"cut u0: image .*broken.png cannot be read"):
        collate_images(_cuts(tmp_path, [tmp_path / "broken.png"]), opts)
    with pytest.raises(XasrError, match=r"cut u1: image .*missing.png does not exist"):
        collate_images(_cuts(tmp_path, [None, tmp_path / "missing.png"]), opts)


def test_image_loading_follows_the_data_and_encoder_configs():
    from xasr.data.dataset import DataConfig
    from xasr.models.image_encoder import ImageEncoderConfig

    assert image_loading(DataConfig(), ImageEncoderConfig()) is None
    opts = image_loading(DataConfig(images=True, image_dir="pics"), ImageEncoderConfig(image_size=96))
    assert opts.size == 96 and opts.base_dir == "pics" and opts.mean == pytest.approx([127 / 255] * 3)
    assert image_loading(DataConfig(images=True, image_dir="pics"), ImageEncoderConfig(), "other").base_dir == "other"


def test_shuffled_pictures_are_a_deterministic_derangement(tmp_path):
    pics = [f"p{i}.png" for i in range(5)]
    images = pics + [pics[0], None]  # two cuts share p0; one cut has no picture
    cuts = _cuts(tmp_path, images)
    a, b = shuffle_images(cuts, seed=3), shuffle_images(cuts, seed=3)
    assert [c.custom and c.custom["image"] for c in a] == [c.custom and c.custom["image"] for c in b]
    new = {c.id: (c.custom or {}).get("image") for c in a}
    for c in a:
        if c.custom:
            assert c.custom["image"] != c.custom[ORIGINAL_FIELD]
            assert c.custom[ORIGINAL_FIELD] == images[int(c.id[1:])]
    assert sorted(new[f"u{i}"] for i in range(5)) == sorted(pics)  # a permutation of the pictures
    assert new["u5"] == new["u0"]  # cuts with the same picture get the same other one
    assert new["u6"] is None
    others = {tuple(c.custom["image"] for c in shuffle_images(cuts, seed=s) if c.custom) for s in range(5)}
    assert len(others) > 1  # the seed matters
    with pytest.raises(XasrError, match="at least two different images"):
        shuffle_images(_cuts(tmp_path, ["p0.png", "p0.png"]), seed=0)
