"""Outputs of a frozen speech encoder, computed once and stored with lhotse.

A frozen pretrained encoder (Whisper) gives the same output for an utterance at every epoch,
and it is most of the cost of a training step whose trainable parts (CTC head, C-Former,
adapter) are small. Caching its outputs turns each later step into the cost of the small
parts only.

In: cut manifests (with audio, or fbank features for an fbank encoder), the experiment config
that names the encoder and its input features. Out: in ``out_dir``, for each manifest a copy
``<same file name>`` whose cuts carry ``encoder_out`` (a TemporalArray, float16 .npy files in
``<out_dir>/arrays/``), and ``cache.json`` naming the encoder (path, fingerprint, layers) and
the features. Training reads it with ``data.encoder_cache=<out_dir>``: the trainer maps its
train/valid manifests to the cached copies and refuses a cache made with another encoder.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch

from xasr.data.dataset import ENCODED_FIELD
from xasr.errors import XasrError

logger = logging.getLogger(__name__)

CACHE_JSON = "cache.json"
OLD_CACHE = {"train_top": 0, "output_layers": 1}  # what a cache.json written before an identity key existed means


def encoder_identity(model_cfg, models_dir=None) -> Dict[str, object]:
    """What makes two encoders give the same outputs: path, weights fingerprint, layer count."""
    from xasr.models.encoder_registry import ENCODERS

    name = model_cfg.encoder.name
    return ENCODERS.get(name).cache_identity(getattr(model_cfg.encoder, name), models_dir)


def cached_manifest(cache_dir: str, manifest: str) -> str:
    return str(Path(cache_dir) / Path(manifest).name)


def experiment_manifests(cfg) -> Tuple[List[str], List[str]]:
    """The experiment's training and validation manifests; with ``data.encoder_cache`` the
    stored encoder outputs under the same names (the cache checked against the model first)."""
    train_paths, valid_paths = list(cfg.data.train_cuts), list(cfg.data.valid_cuts)
    cache = cfg.data.encoder_cache
    if cache:
        check_cache(cache, cfg.model, cfg.data.features, cfg.models_dir)
        train_paths = [cached_manifest(cache, p) for p in train_paths]
        valid_paths = [cached_manifest(cache, p) for p in valid_paths]
        for p in train_paths + valid_paths:
            if not Path(p).is_file():
                raise XasrError(f"{p} is missing: run `xasr cache-encoder` on the same manifests first")
        logger.info("reading stored encoder outputs from %s", cache)
    return train_paths, valid_paths


def check_cache(cache_dir: str, model_cfg, features: str, models_dir=None) -> None:
    """Raise unless ``cache_dir`` was made by this encoder on these features."""
    meta_path = Path(cache_dir) / CACHE_JSON
    if not meta_path.is_file():
        raise XasrError(f"{meta_path} is missing: make the cache with `xasr cache-encoder`")
    meta = json.loads(meta_path.read_text())
    want = encoder_identity(model_cfg, models_dir)
    for key in ("fingerprint", "num_layers", "train_top", "output_layers"):
        have, need = meta.get(key, OLD_CACHE.get(key)), want.get(key, OLD_CACHE.get(key))
        if have != need:
            raise XasrError(f"{meta_path}: made with encoder {meta.get('path')} ({key} {have}), "
                            f"but the model uses {want['path']} ({key} {need}); remake the cache")
    if meta.get("features") != features:
        raise XasrError(f"{meta_path}: made from {meta.get('features')} features, the model reads {features}")


def cache_encoder_outputs(cfg, manifests: Sequence[str], out_dir: str, max_duration: float = 60.0,
                          device: str = "cpu") -> List[str]:
    """Run the config's frozen encoder over every cut of ``manifests``; returns the cached manifests.

    A manifest whose cached copy exists (and whose cache.json matches) is skipped, so an
    interrupted run redoes only the manifest it was writing.
    """
    from lhotse import CutSet, NumpyFilesWriter

    from xasr.data.dataset import AsrDataset, DataConfig, make_loader
    from xasr.models.encoder_registry import ENCODERS
    from xasr.utils.progress import progress

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ident = encoder_identity(cfg.model, cfg.models_dir)
    meta = dict(ident, features=cfg.data.features, dtype="float16")
    meta_path = out / CACHE_JSON
    if meta_path.is_file() and {**OLD_CACHE, **json.loads(meta_path.read_text())} != meta:
        raise XasrError(f"{meta_path} was made with another encoder or features; use a new --out-dir")
    meta_path.write_text(json.dumps(meta, indent=1))

    encoder = ENCODERS.get(ident["encoder"]).from_identity(ident)
    encoder.to(device).eval()
    dataset = AsrDataset(None, cfg.data.features)
    frame_shift = encoder.frame_shift
    written = []
    for manifest in manifests:
        target = Path(cached_manifest(out_dir, manifest))
        if target.is_file():
            logger.info("%s: already cached, skipped", target)
            written.append(str(target))
            continue
        if not Path(manifest).is_file():
            raise XasrError(f"{manifest}: no such cut manifest")
        cuts = CutSet.from_file(manifest).to_eager()
        by_id = {c.id: c for c in cuts}
        audio = sum(c.duration for c in cuts)
        loader, _ = make_loader(cuts, dataset, DataConfig(max_duration=max_duration, shuffle=False), train=False)
        stem = target.name.split(".")[0]
        t0 = time.time()
        bar = progress(len(cuts), f"encoding {Path(manifest).name}", unit="utt")
        done = {}
        with NumpyFilesWriter(str(out / "arrays" / stem)) as writer, torch.no_grad():
            for batch in loader:
                # the part that never trains (the whole encoder unless its top layers train)
                h, h_lens = encoder.forward_frozen(batch.feats.to(device), batch.feat_lens.to(device))  # (B, T', D)
                for i, cid in enumerate(batch.ids):
                    arr = h[i, :int(h_lens[i])].to(torch.float16).cpu().numpy()
                    done[cid] = writer.store_array(cid, arr, frame_shift=frame_shift, temporal_dim=0)
                bar.update(len(batch.ids))
        bar.close()
        cached = CutSet.from_cuts(by_id[c.id].with_custom(ENCODED_FIELD, done[c.id]) for c in cuts)
        tmp = target.with_name(target.name + ".partial.jsonl.gz")
        cached.to_file(str(tmp))
        tmp.rename(target)
        wall = time.time() - t0
        logger.info("%s: %d cuts, %.0f s of audio encoded in %.0f s (%.0f s of audio per second) -> %s",
                    manifest, len(cuts), audio, wall, audio / max(wall, 1e-9), target)
        written.append(str(target))
    return written
