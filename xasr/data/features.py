"""Cut manifests -> 80-dim log-mel fbank features stored with lhotse, plus filtering.

In: ``<manifest_dir>/{corpus}_cuts_{split}.jsonl.gz`` (from :mod:`xasr.data.prepare`).
Out: ``<output_dir>/{corpus}_cuts_{split}.jsonl.gz`` with features attached, the feature
arrays in ``<output_dir>/{corpus}_feats_{split}/`` (LilcomChunkyWriter), and
``<output_dir>/{corpus}_dropped_{split}.tsv`` listing every cut left out and why. With
``store_features=False`` the cuts are written filtered (and perturbed) but without features:
for models that read the audio (Whisper's log-mel), and a fbank model can still read such cuts
(:class:`xasr.data.dataset.AsrDataset` then extracts the same features as it goes).

Filtering: cuts with empty text are dropped from every split (they cannot be trained on or
scored); cuts too short or too long are dropped from training splits only, so that a test set
is always scored whole. Optional speed perturbation (0.9x and 1.1x copies, as in Kaldi and
icefall) applies to training splits.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

logger = logging.getLogger(__name__)


@dataclass
class FilterConfig:
    min_duration: float = 1.0  # seconds; training splits only
    max_duration: float = 20.0  # seconds; training splits only


FBANK_BINS = 80  # the recipes' fbank size (an fbank encoder's input_dim)


def fbank_extractor(num_mel_bins: int = FBANK_BINS):
    """lhotse's kaldi-compatible fbank, as stored here and extracted on the fly elsewhere."""
    from lhotse import Fbank, FbankConfig

    return Fbank(FbankConfig(num_mel_bins=num_mel_bins))


def filter_cuts(cuts, is_train: bool, cfg: FilterConfig) -> Tuple[object, List[Tuple[str, str]]]:
    """Return (kept cuts, [(cut id, reason), ...] for the dropped ones)."""
    dropped: List[Tuple[str, str]] = []
    keep_ids = []
    for c in cuts:
        text = " ".join((s.text or "") for s in c.supervisions).strip()
        if not text:
            dropped.append((c.id, "empty text"))
        elif is_train and c.duration < cfg.min_duration:
            dropped.append((c.id, f"too short ({c.duration:.2f} s < {cfg.min_duration} s)"))
        elif is_train and c.duration > cfg.max_duration:
            dropped.append((c.id, f"too long ({c.duration:.2f} s > {cfg.max_duration} s)"))
        else:
            keep_ids.append(c.id)
    kept = cuts.subset(cut_ids=keep_ids) if dropped else cuts
    return kept, dropped


def is_train_split(split: str) -> bool:
    return split.startswith("train")


def compute_fbank(corpus: str, manifest_dir: str, output_dir: str, splits: Sequence[str],
                  num_jobs: int = 2, speed_perturb: bool = False,
                  filter_cfg: FilterConfig = FilterConfig(), num_mel_bins: int = FBANK_BINS,
                  store_features: bool = True) -> Dict[str, dict]:
    """Filter (and perturb) each split's cuts and store their features unless ``store_features``
    is False; returns per-split statistics."""
    import torch
    from lhotse import CutSet, LilcomChunkyWriter

    # Each worker process runs one torch thread: with num_jobs processes the cores are busy
    # without oversubscription (measured: much slower otherwise on 2 cores).
    torch.set_num_threads(1)
    extractor = fbank_extractor(num_mel_bins)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stats = {}
    for split in splits:
        src = Path(manifest_dir) / f"{corpus}_cuts_{split}.jsonl.gz"
        if not src.is_file():
            raise FileNotFoundError(f"{src} does not exist: run the manifest stage first")
        cuts = CutSet.from_file(src)
        n_in = len(cuts)
        train = is_train_split(split)
        cuts, dropped = filter_cuts(cuts, train, filter_cfg)
        drop_file = out / f"{corpus}_dropped_{split}.tsv"
        drop_file.write_text("".join(f"{i}\t{r}\n" for i, r in dropped), encoding="utf-8")
        if dropped:
            reasons: Dict[str, int] = {}
            for _, r in dropped:
                key = r.split(" (")[0]
                reasons[key] = reasons.get(key, 0) + 1
            logger.warning("%s %s: dropped %d of %d cuts (%s); list in %s", corpus, split, len(dropped),
                           n_in, ", ".join(f"{k}: {v}" for k, v in reasons.items()), drop_file)
        if len(cuts) == 0:
            raise RuntimeError(f"{corpus} {split}: every cut was filtered out (see {drop_file})")
        if train and speed_perturb:
            cuts = cuts + cuts.perturb_speed(0.9) + cuts.perturb_speed(1.1)
        audio_seconds = sum(c.duration for c in cuts)
        t0 = time.time()
        if store_features:
            cuts = cuts.compute_and_store_features(
                extractor=extractor,
                storage_path=str(out / f"{corpus}_feats_{split}"),
                num_jobs=num_jobs if num_jobs > 1 else None,
                storage_type=LilcomChunkyWriter,
            )
        wall = time.time() - t0
        dst = out / f"{corpus}_cuts_{split}.jsonl.gz"
        tmp = dst.with_name(dst.name.replace(".jsonl.gz", ".partial.jsonl.gz"))
        cuts.to_file(tmp)
        os.replace(tmp, dst)
        if store_features:
            speed = audio_seconds / max(wall, 1e-9)
            logger.info("%s: %d cuts, %.2f h of audio, features in %.1f s = %.0f s of audio per second "
                        "(%d jobs)", dst, len(cuts), audio_seconds / 3600, wall, speed, num_jobs)
        else:
            speed = None
            logger.info("%s: %d cuts, %.2f h of audio, no features stored", dst, len(cuts), audio_seconds / 3600)
        stats[split] = {"cuts": len(cuts), "dropped": len(dropped), "hours": audio_seconds / 3600,
                        "wall_seconds": wall, "audio_seconds_per_second": speed}
    return stats
