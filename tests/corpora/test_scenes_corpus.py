import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from xasr.data.images import ORIGINAL_FIELD, load_image, shuffle_images
from xasr.corpora.scenes_corpus import (ScenesConfig, ScenesCorpusError, babble, cut_scene, estimate_word_spans,
                                  pink_noise, plan_scenes_corpus, read_record, scale_to_snr, snr_db,
                                  synthesize_scenes_corpus, write_manifests)
from xasr.errors import XasrError
from xasr.models.image_encoder import EfficientNetLite0
from xasr.corpora.scenes import check_claims, render_scene
from tests.corpora.test_scenes import independent_check, text_check

SNRS = (0.0, -5.0)


def tiny_config(out_dir: Path, seed: int = 0, jobs: int = 2) -> ScenesConfig:
    return ScenesConfig(out_dir=str(out_dir), seed=seed, train_hours=0.006, train_speakers=2, dev_scenes=3,
                        test_scenes=3, eval_speakers=2, snrs_db=SNRS, jobs=jobs)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes") / "scenes"
    synthesize_scenes_corpus(tiny_config(out))
    return out


def _cuts(root: Path, name: str):
    from lhotse import CutSet
    return CutSet.from_file(root / "manifests" / f"scenes_cuts_{name}.jsonl.gz")


def _digests(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and p.parent.name != "manifests" and p.name != "scenes.json"}


ALL_SETS = ["train", "dev", "test", "train_noisy", "dev_noisy_0", "dev_noisy_m5", "test_noisy_0", "test_noisy_m5",
            "dev_masked", "test_masked"]


# --- the corpus --------------------------------------------------------------------------------

@pytest.mark.slow
def test_manifests_images_and_texts(corpus):
    rec = read_record(str(corpus))
    assert sorted(rec["sets"]) == sorted(ALL_SETS)
    for name in ALL_SETS:
        cuts = _cuts(corpus, name)
        assert len(cuts) == (rec["summary"]["utterances"][name.split("_")[0]])
        for c in cuts:
            text = c.supervisions[0].text
            assert text == text.upper() and text.strip() and c.supervisions[0].speaker
            assert c.recording.sampling_rate == 16000 and c.duration > 0.5
            assert c.custom["condition"] == name and c.custom["noise"]["type"]
            # the image is there, loads, and shows the scene of the cut
            img = Path(c.custom["image"])
            assert img.is_absolute() and img.is_file()
            assert load_image(img, 224, EfficientNetLite0.mean, EfficientNetLite0.std).shape == (3, 224, 224)
            scene = cut_scene(c)
            assert scene.id == c.custom["scene_id"]
            from PIL import Image
            with Image.open(img) as im:
                assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(render_scene(scene)))
            # the sentence is true of the picture, and its keywords are its words
            assert check_claims(scene, c.custom["claims"]) == []
            independent_check(json.loads(c.custom["scene"]), c.custom["claims"])
            text_check(json.loads(c.custom["scene"]), text)
            words = text.split()
            for (i, w, _), (s, e) in zip(c.custom["keywords"], c.custom["keyword_spans"]):
                assert words[i] == w and 0 <= s < e <= c.duration
    info = sf.info(next((corpus / "audio" / "test").glob("*.flac")))
    assert (info.format, info.samplerate, info.channels) == ("FLAC", 16000, 1)


@pytest.mark.slow
def test_scenes_and_speakers_are_disjoint_between_splits(corpus):
    rec = read_record(str(corpus))
    scenes = {s: set() for s in ("train", "dev", "test")}
    images = {s: set() for s in scenes}
    signatures = {s: set() for s in scenes}
    for sc in rec["scenes"]:
        scenes[sc["split"]].add(sc["id"])
        images[sc["split"]].add(hashlib.sha256((corpus / sc["image"]).read_bytes()).hexdigest())
        signatures[sc["split"]].add(json.dumps(sorted((o["colour"], o["shape"], o["size"], o["row"], o["column"])
                                                      for o in sc["objects"])))
    speakers = {s: {k["id"] for k in rec["speakers"] if k["split"] == s} for s in scenes}
    voices = {s: {(k["engine"], k["name"]) for k in rec["speakers"] if k["split"] == s} for s in scenes}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        for sets in (scenes, images, signatures, speakers, voices):
            assert not sets[a] & sets[b], (a, b)
    # every cut of a split (noisy copies included) uses that split's scenes and speakers
    for name in ALL_SETS:
        split = name.split("_")[0]
        for c in _cuts(corpus, name):
            assert c.custom["scene_id"] in scenes[split] and c.supervisions[0].speaker in speakers[split]
    # several sentences per training picture, from distinct templates
    per_scene = {}
    for u in rec["utterances"]:
        if u["split"] == "train":
            per_scene.setdefault(u["scene_id"], []).append(u["template"])
    assert all(len(v) == 2 and len(set(v)) == 2 for v in per_scene.values())


@pytest.mark.slow
def test_noisy_copies_have_the_intended_snr(corpus):
    checked = 0
    for name in ("dev_noisy_0", "test_noisy_m5", "train_noisy"):
        for c in _cuts(corpus, name):
            noise = c.custom["noise"]
            if noise["type"] != "babble+pink":
                continue
            clean, _ = sf.read(corpus / "audio" / name.split("_")[0] / f"{c.custom['source_id']}.flac", dtype="float64")
            noisy, _ = sf.read(c.recording.sources[0].source, dtype="float64")
            measured = snr_db(clean, noisy / noise["gain"] - clean)
            assert abs(measured - noise["snr_db"]) < 0.2, (c.id, measured, noise)
            assert noise["gain"] <= 1.0 and np.abs(noisy).max() <= 1.0
            assert 1 <= len(noise["babble"]) <= 3 and c.custom["source_id"] not in noise["babble"]
            checked += 1
    assert checked >= 6
    # masked copies: far more noise over the keywords than elsewhere
    for c in _cuts(corpus, "test_masked"):
        noise = c.custom["noise"]
        clean, sr = sf.read(corpus / "audio" / "test" / f"{c.custom['source_id']}.flac", dtype="float64")
        n = sf.read(c.recording.sources[0].source, dtype="float64")[0] / noise["gain"] - clean
        inside = np.zeros(clean.size, bool)
        for s, e in noise["burst_spans"]:
            inside[int(s * sr):int(e * sr)] = True
        assert inside.any() and not inside.all()
        assert snr_db(clean[inside], n[inside]) < noise["background_snr_db"] - 10
        assert abs(snr_db(clean[~inside], n[~inside]) - noise["background_snr_db"]) < 6


@pytest.mark.slow
def test_same_seed_same_corpus_whatever_the_jobs(corpus, tmp_path):
    again = tmp_path / "again"
    synthesize_scenes_corpus(tiny_config(again, jobs=1))
    assert _digests(again) == _digests(corpus)
    a, b = read_record(str(again)), read_record(str(corpus))
    assert a["utterances"] == b["utterances"] and a["copies"] == b["copies"] and a["scenes"] == b["scenes"]
    # another seed: other scenes and sentences (planning only, no audio)
    other = plan_scenes_corpus(tiny_config(tmp_path / "x", seed=1))
    assert [u.text for u in other[2]] != [u["text"] for u in b["utterances"]]


@pytest.mark.slow
def test_tiny_corpus_loads_through_asr_dataset_with_whisper_mel(corpus, tmp_path):
    from lhotse import CutSet

    from xasr.data.dataset import AsrDataset
    from xasr.data.units import train_units

    model = train_units([str(corpus / "manifests" / "scenes_cuts_train.jsonl.gz")], str(tmp_path / "lang"),
                        "bpe", vocab_size=60)
    ds = AsrDataset(str(model), "whisper_mel")
    cuts = CutSet.from_cuts(list(_cuts(corpus, "test_noisy_m5")) + list(_cuts(corpus, "test")))
    batch = ds[cuts]
    assert batch.feats.shape[0] == len(cuts) and batch.feats.shape[2] == 80
    assert int(batch.feat_lens.max()) == batch.feats.shape[1]
    assert sorted(batch.texts) == sorted(c.supervisions[0].text for c in cuts)
    for i, t in enumerate(batch.texts):
        assert ds.sp.decode(batch.tokens[i, :batch.token_lens[i]].tolist()) == t
    # stored fbank features work as well, and keep the image fields
    from xasr.data.features import compute_fbank

    compute_fbank("scenes", str(corpus / "manifests"), str(tmp_path / "fbank"), ["test_masked"], num_jobs=1)
    fcuts = CutSet.from_file(tmp_path / "fbank" / "scenes_cuts_test_masked.jsonl.gz")
    fbatch = AsrDataset(str(model), "fbank")[fcuts]
    assert fbatch.feats.shape[0] == len(fcuts) and fbatch.feats.shape[2] == 80
    assert all(Path(c.custom["image"]).is_file() and c.custom["keywords"] for c in fcuts)


@pytest.mark.slow
def test_mismatched_images_and_relocated_manifests(corpus, tmp_path):
    from PIL import Image

    cuts = _cuts(corpus, "test_noisy_0")
    swapped = shuffle_images(cuts, seed=3, carry=("scene",))
    assert [c.id for c in swapped] == [c.id for c in cuts]
    for c, s in zip(cuts, swapped):
        assert s.custom["image"] != c.custom["image"] and Path(s.custom["image"]).is_file()
        assert s.custom[ORIGINAL_FIELD] == c.custom["image"] and s.custom["original_scene"] == c.custom["scene"]
        assert s.supervisions[0].text == c.supervisions[0].text and s.custom["keywords"] == c.custom["keywords"]
        # the scene description moved with the picture: it describes what the cut now shows
        shown = cut_scene(s)
        assert shown.id != c.custom["scene_id"]
        with Image.open(s.custom["image"]) as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(render_scene(shown)))
    assert [c.custom["image"] for c in shuffle_images(cuts, seed=3)] == [c.custom["image"] for c in swapped]
    written = write_manifests(str(corpus), str(tmp_path / "m"))
    assert sorted(written) == sorted(ALL_SETS)


@pytest.mark.slow
def test_refuses_an_existing_directory(tmp_path):
    (tmp_path / "c").mkdir()
    with pytest.raises(ScenesCorpusError, match="already exists"):
        synthesize_scenes_corpus(tiny_config(tmp_path / "c"))
    assert not any((tmp_path / "c").iterdir())


# --- pieces ----------------------------------------------------------------------------------

def test_pictures_load_as_the_image_encoder_expects(tmp_path):
    """The corpus's 224-px PNGs go through the one picture loader with EfficientNet-Lite0's
    normalisation ((x - 127) / 128 of 0..255 pixels), not ImageNet's."""
    import random

    from PIL import Image

    from xasr.models.image_encoder import image_loading
    from xasr.corpora.scenes import sample_scene
    from xasr.models.image_encoder import ImageEncoderConfig

    render_scene(sample_scene("s", random.Random(0))).save(tmp_path / "a.png")
    data_cfg = type("D", (), {"images": True, "image_dir": ""})()
    opts = image_loading(data_cfg, ImageEncoderConfig(name="efficientnet-lite0"))
    x = load_image(tmp_path / "a.png", opts.size, opts.mean, opts.std)
    with Image.open(tmp_path / "a.png") as im:
        arr = np.asarray(im.convert("RGB"), dtype=np.float64)
    assert x.shape == (3, 224, 224)
    assert np.allclose(x.permute(1, 2, 0).numpy(), (arr - 127.0) / 128.0, atol=1e-5)


def test_unreadable_image_gives_a_clear_error(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a picture")
    with pytest.raises(XasrError, match="broken.png.*cannot be read"):
        load_image(bad)
    with pytest.raises(XasrError, match="missing.png.*does not exist"):
        load_image(tmp_path / "missing.png")


def test_noise_helpers_hit_their_levels():
    rng = np.random.default_rng(0)
    speech = (0.3 * np.sin(np.arange(32000) / 7.0)).astype(np.float32)
    for snr in (10.0, 0.0, -5.0):
        n = scale_to_snr(speech, pink_noise(speech.size, rng), snr)
        assert abs(snr_db(speech, n) - snr) < 1e-3
    p = pink_noise(48000, rng)
    spec = np.abs(np.fft.rfft(p)) ** 2
    f = np.fft.rfftfreq(p.size, 1 / 16000)
    assert spec[(f > 100) & (f < 200)].mean() > 10 * spec[(f > 2000) & (f < 4000)].mean()  # pink: 1/f
    b = babble(1000, [np.ones(300, np.float32), np.arange(500, dtype=np.float32)], rng)
    assert b.shape == (1000,) and abs(float(np.mean(b.astype(np.float64) ** 2)) - 1.0) < 1e-3


def test_word_spans_follow_the_pauses():
    sr = 16000
    tone = lambda s: 0.5 * np.sin(np.arange(int(s * sr)) / 3.0)  # noqa: E731
    silence = lambda s: np.zeros(int(s * sr))  # noqa: E731
    audio = np.concatenate([silence(0.1), tone(1.0), silence(0.4), tone(0.5), silence(0.1)]).astype(np.float32)
    spans = estimate_word_spans(audio, ["WHERE", "IS", "IT", "HERE"], breaks=[2])
    assert len(spans) == 4
    assert abs(spans[0][0] - 0.1) < 0.02 and abs(spans[2][1] - 1.1) < 0.02
    assert abs(spans[3][0] - 1.5) < 0.02 and abs(spans[3][1] - 2.0) < 0.02
    assert spans[0][1] - spans[0][0] > spans[1][1] - spans[1][0]  # longer words get more time


def test_cli_is_registered():
    from xasr.bin.cli import SUBCOMMANDS, build_parser

    assert SUBCOMMANDS["synth-scenes"] == "synth_scenes"
    args = build_parser().parse_args(["synth-scenes", "--out-dir", "x", "--snrs", "5,-2.5", "--jobs", "1"])
    assert args.snrs == (5.0, -2.5) and args.jobs == 1
