"""Decode cut sets with a trained model and score them.

In: a model directory (``xasr.models.model.load_model_dir``), cut manifests with features,
decoding methods. Out: per method and set, ``recogs-/errs-/wer-{set}-{method}.txt`` (through
:mod:`xasr.scoring`), and a summary with the error rate, real-time factor and audio seconds per
second of each decoding.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence


from xasr.data.dataset import AsrDataset, DataConfig, batch_texts, batch_to, make_loader
from xasr.scoring.wer import kaldi_line, score, write_results
from xasr.utils.progress import progress

logger = logging.getLogger(__name__)


@dataclass
class DecodeSummary:
    set_name: str
    method: str
    error_rate: float
    unit: str
    kaldi_line: str
    audio_seconds: float
    wall_seconds: float

    @property
    def rtf(self) -> float:
        return self.wall_seconds / max(1e-9, self.audio_seconds)


def decode_cuts(model, units, cuts, method: str, features: str = "fbank", max_duration: float = 60.0,
                device: str = "cpu", images=None, stats=None, nbest: Optional[dict] = None) -> Dict[str, str]:
    """Hypotheses for every cut, batched by duration; returns {cut id: text}. ``images``: an
    :class:`xasr.data.images.ImageLoading` for a model with the image path, or None. ``stats``:
    a :class:`xasr.decoding.speculative.DecodeStats` that each batch's LLM work is added to.
    ``nbest``: with ``llm_rescore``, filled with {cut id: the scored N-best} (``model.last_nbest``)."""
    dataset = AsrDataset(None, features, images=images)
    loader, _ = make_loader(cuts, dataset, DataConfig(max_duration=max_duration, shuffle=False), train=False)
    hyps: Dict[str, str] = {}
    bar = progress(len(cuts), f"decoding ({method})", unit="utt")
    for batch in loader:
        batch = batch_to(batch, device)
        for cid, text in zip(batch["ids"], model.decode(batch, method, units)):
            hyps[cid] = text
        if nbest is not None and method == "llm_rescore":
            nbest.update(zip(batch["ids"], model.last_nbest))
        if stats is not None and getattr(model, "last_decode_stats", None) is not None:
            stats.add(model.last_decode_stats)
        bar.update(len(batch["ids"]))
    bar.close()
    return hyps


def decode_and_score(model, units, cut_paths: Dict[str, str], methods: Sequence[str], out_dir: str,
                     normalizer: str, features: str = "fbank", max_duration: float = 60.0,
                     device: str = "cpu", images=None, image_shuffle_seed: Optional[int] = None
                     ) -> List[DecodeSummary]:
    """Decode and score each set; with ``image_shuffle_seed`` the pictures are permuted across
    each set's cuts first (the mismatched-image control, :func:`xasr.data.images.shuffle_images`)."""
    from lhotse import CutSet

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for set_name, path in cut_paths.items():
        cuts = CutSet.from_file(path).to_eager()
        if image_shuffle_seed is not None:
            from xasr.data.images import shuffle_images

            cuts = shuffle_images(cuts, image_shuffle_seed)
        refs = dict(zip([c.id for c in cuts], batch_texts(cuts)))
        audio = sum(c.duration for c in cuts)
        for method in methods:
            t0 = time.time()
            hyps = decode_cuts(model, units, cuts, method, features, max_duration, device, images=images)
            wall = time.time() - t0
            result = score(refs, hyps, normalizer)
            write_results(result, out, set_name, method=method)
            s = DecodeSummary(set_name, method, result.error_rate, result.unit, kaldi_line(result), audio, wall)
            logger.info("%s %s: %s (RTF %.3f, %.1f s of audio per second)", set_name, method, s.kaldi_line,
                        s.rtf, audio / max(wall, 1e-9))
            summaries.append(s)
    return summaries
