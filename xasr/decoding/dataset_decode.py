"""Decode cut sets with a trained model and score them.

In: a model directory (``xasr.model_dir.load_model_dir``), cut manifests with features,
decoding methods and their options (:class:`xasr.decoding.options.DecodingOptions`). Out: per
method and set, ``recogs-/errs-/wer-{set}-{method}.txt`` (through :mod:`xasr.scoring`), and a
summary with the error rate, real-time factor and audio seconds per second of each decoding. ``llm_rescore``'s weights can be tuned on one of the sets first.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from xasr.data.dataset import AsrDataset, DataConfig, batch_texts, make_loader
from xasr.decoding.methods import decode, options_for
from xasr.decoding.options import DecodingOptions
from xasr.errors import XasrError
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
    note: str = ""  # e.g. the settings a decoding was tuned to on this set
    ci_low: float = float("nan")  # 95% bootstrap interval of the error rate (fractions)
    ci_high: float = float("nan")

    @property
    def rtf(self) -> float:
        return self.wall_seconds / max(1e-9, self.audio_seconds)


def decode_cuts(model, units, cuts, method: str, features: str = "fbank", max_duration: float = 60.0,
                device: str = "cpu", images=None, stats=None, nbest: Optional[dict] = None,
                opts: Optional[DecodingOptions] = None) -> Dict[str, str]:
    """Hypotheses for every cut, batched by duration; returns {cut id: text}. ``opts``: the
    decoding options (None: the model config's). ``images``: an
    :class:`xasr.data.images.ImageLoading` for a model with the image path, or None. ``stats``:
    a :class:`xasr.decoding.speculative.DecodeStats` that each batch's LLM work is added to.
    ``nbest``: with ``llm_rescore``, filled with {cut id: the scored N-best} (``DecodeResult.nbest``)."""
    dataset = AsrDataset(None, features, images=images)
    loader, _ = make_loader(cuts, dataset, DataConfig(max_duration=max_duration, shuffle=False), train=False)
    hyps: Dict[str, str] = {}
    bar = progress(len(cuts), f"decoding ({method})", unit="utt")
    for batch in loader:
        batch = batch.to(device)
        result = decode(model, batch, method, units, opts, llm_scores=nbest is not None)
        hyps.update(zip(batch.ids, result.texts))
        if nbest is not None and result.nbest is not None:
            nbest.update(zip(batch.ids, result.nbest))
        if stats is not None:
            stats.add(result.stats)
        bar.update(len(batch.ids))
    bar.close()
    return hyps


def decode_and_score(model, units, cut_paths: Dict[str, str], methods: Sequence[str], out_dir: str,
                     normalizer: str, features: str = "fbank", max_duration: float = 60.0,
                     device: str = "cpu", images=None, image_shuffle_seed: Optional[int] = None,
                     tune_on: Optional[str] = None, opts: Optional[DecodingOptions] = None) -> List[DecodeSummary]:
    """Decode and score each set; with ``image_shuffle_seed`` the pictures are permuted across
    each set's cuts first (the mismatched-image control, :func:`xasr.data.images.shuffle_images`).
    ``opts``: the decoding options (None: the model config's).

    ``tune_on``: a set of ``cut_paths`` (decoded first) on which ``llm_rescore``'s CTC weight and
    length bonus are chosen from a grid (:func:`xasr.decoding.rescore.tune`; ``tune-{set}.tsv``
    and ``.png`` in ``out_dir``), and then used for the other sets; the choice is written to
    ``rescore-weights.json``. The tuned set's own llm_rescore figure is the best of the grid,
    so an optimistic one; the other sets' are not.
    """
    from lhotse import CutSet

    opts = opts if opts is not None else options_for(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if tune_on is not None:
        if tune_on not in cut_paths:
            raise XasrError(f"the set to tune llm_rescore on, {tune_on!r}, is not among the sets {list(cut_paths)}")
        cut_paths = {tune_on: cut_paths[tune_on], **{k: v for k, v in cut_paths.items() if k != tune_on}}
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
            note = ""
            if method == "llm_rescore" and set_name == tune_on:
                hyps, note, opts = _tune_rescore(model, units, cuts, refs, normalizer, features, max_duration,
                                                 device, images, out, set_name, opts)
            else:
                hyps = decode_cuts(model, units, cuts, method, features, max_duration, device, images=images,
                                   opts=opts)
            wall = time.time() - t0
            result = score(refs, hyps, normalizer)
            write_results(result, out, set_name, method=method)
            low, high = result.interval()
            s = DecodeSummary(set_name, method, result.error_rate, result.unit, kaldi_line(result), audio, wall, note,
                              low, high)
            logger.info("%s %s: %s (RTF %.3f, %.1f s of audio per second)%s", set_name, method, s.kaldi_line,
                        s.rtf, audio / max(wall, 1e-9), f" {note}" if note else "")
            summaries.append(s)
    return summaries


def _tune_rescore(model, units, cuts, refs, normalizer, features, max_duration, device, images, out: Path,
                  set_name: str, opts: DecodingOptions):
    """llm_rescore on the tuning set: its N-best scored once, every grid point tried. Returns the
    hypotheses at the best point, a note, and ``opts`` with the best point's weights."""
    from xasr.decoding.rescore import choose, tune

    nbest: Dict[str, list] = {}
    decode_cuts(model, units, cuts, "llm_rescore", features, max_duration, device, images=images, nbest=nbest,
                opts=opts)
    tuning = tune(nbest, refs, normalizer)
    w, b = tuning.best
    tuning.write(out, set_name, f"{set_name}: llm_rescore, {opts.ctc_beam_size}-best")
    with open(out / "rescore-weights.json", "w") as f:
        json.dump({"tuned_on": set_name, "ctc_weight": w, "length_bonus": b, "nbest": opts.ctc_beam_size,
                   "error_rate": tuning.table[(w, b)], "ctc_alone": tuning.ctc_alone, "oracle": tuning.oracle,
                   "unit": tuning.unit}, f, indent=1)
    note = (f"(w {w:g}, bonus {b:g}: tuned on this set; CTC search alone {tuning.ctc_alone:.2f}, "
            f"{opts.ctc_beam_size}-best oracle {tuning.oracle:.2f})")
    return choose(nbest, w, b), note, opts.replace(rescore_ctc_weight=w, rescore_length_bonus=b)
