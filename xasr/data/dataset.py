"""Where the data turns into a batch: lhotse cuts -> padded features, texts and unit ids.

In: cut manifests with precomputed fbank features (recipes' stage 2), or with audio only
when the encoder wants Whisper log-mel features (computed on the fly), or with stored outputs
of a frozen encoder (:mod:`xasr.data.encoder_cache`); a sentencepiece model.
Out: :class:`Batch` objects (padded features, lengths, texts, unit ids), longest utterance
first; the transcription path builds the same kind from raw audio
(:func:`xasr.transcribe.batching.make_batch`).

Batches are duration-bucketed (lhotse's DynamicBucketingSampler, ``max_duration`` seconds of
audio per batch). Under DDP every rank draws the same global batch and keeps its share
(:class:`GlobalBatchSampler`), so a run on N processes sees exactly the batches a single
process would, which makes multi-process training reproducible against single-process runs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Iterator, List, Optional, Sequence

import torch
from torch import Tensor

logger = logging.getLogger(__name__)


@dataclass
class DataConfig:
    train_cuts: List[str] = field(default_factory=list)
    valid_cuts: List[str] = field(default_factory=list)
    units: str = ""  # sentencepiece model (lang dir's unit.model)
    features: str = "fbank"  # "fbank" (precomputed) or "whisper_mel" (from audio, on the fly)
    max_duration: float = 120.0  # seconds of audio per (global) batch
    num_buckets: int = 8
    shuffle: bool = True
    num_workers: int = 0
    text_case: str = "keep"  # "upper": LibriSpeech style units
    # a directory made by `xasr cache-encoder`: train on the stored outputs of the frozen encoder
    # (train/valid manifests are read from there under the same file names); "" = run the encoder
    encoder_cache: str = ""
    images: bool = False  # load the picture each cut names (custom["image"]): the image path, stage 3
    image_dir: str = ""  # relative picture paths are taken from here ("" = the current directory)
    # permute the pictures across the cuts of each set (xasr.data.images.shuffle_images): a
    # mismatched-image control; None = every cut keeps its own picture
    image_shuffle_seed: Optional[int] = None


@dataclass
class Batch:
    """Utterances padded together, the longest first."""

    feats: Tensor  # (B, T, F) features, or with ``encoded`` the frozen encoder's outputs (B, T', D)
    feat_lens: Tensor  # (B,)
    ids: List[str] = field(default_factory=list)
    texts: List[str] = field(default_factory=list)  # transcripts ("" when unknown)
    durations: Optional[Tensor] = None  # (B,) seconds
    encoded: bool = False  # feats are stored encoder outputs: the model skips its encoder
    stand_in: bool = False  # a rank's stand-in copy, counted for nothing (GlobalBatchSampler)
    tokens: Optional[Tensor] = None  # (B, U) unit ids of the texts, padded with -1
    token_lens: Optional[Tensor] = None  # (B,)
    # with pictures (xasr.data.images): (B, 3, S, S) the picture each cut's custom["image"]
    # names, preprocessed for the image encoder, and (B,) bool (False, with a zero picture,
    # for a cut without one)
    images: Optional[Tensor] = None
    has_image: Optional[Tensor] = None

    def __len__(self) -> int:
        return int(self.feats.shape[0])

    def to(self, device) -> "Batch":
        """The batch with its tensors on ``device`` (ids and texts unchanged)."""
        return Batch(**{f: (v.to(device) if isinstance(v, Tensor) else v)
                        for f, v in ((f.name, getattr(self, f.name)) for f in fields(self))})


def feature_pad_value(kind: str) -> float:
    """What a batch of features of this kind is padded with, in training (:class:`AsrDataset`) and
    in decoding alike: lhotse's log(1e-10) for fbank (as ``collate_features`` pads stored ones),
    0 for Whisper's log-mel."""
    if kind == "fbank":
        from lhotse.utils import LOG_EPSILON

        return float(LOG_EPSILON)
    return 0.0


def pad_features(feats: Sequence[Tensor], value: float = 0.0) -> "tuple[Tensor, Tensor]":
    """[(T_i, F), ...] -> (B, max T_i, F) padded with ``value``, and lengths (B,)."""
    if not feats:
        raise ValueError("pad_features needs at least one feature matrix")
    lens = torch.tensor([int(f.shape[0]) for f in feats], dtype=torch.long)
    out = feats[0].new_full((len(feats), max(1, int(lens.max())), feats[0].shape[1]), value)
    for i, f in enumerate(feats):
        out[i, :f.shape[0]] = f
    return out, lens


def batch_texts(cuts) -> List[str]:
    return [" ".join(s.text for s in c.supervisions if s.text).strip() for c in cuts]


class AsrDataset(torch.utils.data.Dataset):
    """Map-style dataset whose index is a CutSet (one batch), as lhotse samplers produce."""

    def __init__(self, units_model: Optional[str], features: str = "fbank", encoded: bool = False,
                 images=None) -> None:
        """``images``: an :class:`xasr.data.images.ImageLoading` to load pictures, or None."""
        import sentencepiece as spm

        if features not in ("fbank", "whisper_mel"):
            raise ValueError(f"features must be fbank or whisper_mel, not {features!r}")
        self.features = features
        self._fbank = None  # the fbank extractor, made when a cut without stored features comes
        self.encoded = encoded
        self.images = images
        self.sp = spm.SentencePieceProcessor(model_file=units_model) if units_model else None

    def __getitem__(self, cuts) -> Batch:
        from lhotse.dataset.collation import collate_features

        cuts = cuts.sort_by_duration(ascending=False)
        if self.encoded:
            from lhotse.dataset.collation import collate_custom_field

            feats, feat_lens = collate_custom_field(cuts, ENCODED_FIELD, pad_value=0.0)  # (B, T', D), (B,)
            feats = feats.float()
        elif self.features == "fbank" and all(c.has_features for c in cuts):
            feats, feat_lens = collate_features(cuts)  # (B, T, F), (B,)
        elif self.features == "fbank":
            # cuts stored without features (a recipe run with --fbank false, an audio-only
            # manifest): the stage's extractor, as it goes
            from xasr.data.features import fbank_extractor

            if self._fbank is None:
                self._fbank = fbank_extractor()
            feats, feat_lens = pad_features([torch.as_tensor(c.compute_features(self._fbank)) for c in cuts],
                                            value=feature_pad_value("fbank"))
        else:
            from xasr.data.whisper_mel import whisper_log_mel

            feats, feat_lens = pad_features([torch.as_tensor(whisper_log_mel(c.load_audio()[0], c.sampling_rate))
                                           for c in cuts], value=feature_pad_value("whisper_mel"))
        texts = batch_texts(cuts)
        batch = Batch(feats, feat_lens, ids=[c.id for c in cuts], texts=texts,
                      durations=torch.tensor([c.duration for c in cuts]), encoded=self.encoded,
                      stand_in=any((c.custom or {}).get(STAND_IN) for c in cuts))  # see GlobalBatchSampler
        if self.images is not None:
            from xasr.data.images import collate_images

            batch.images, batch.has_image = collate_images(cuts, self.images)  # (B, 3, S, S), (B,)
        if self.sp is not None:
            toks = [self.sp.encode(t) for t in texts]
            lens = torch.tensor([len(t) for t in toks], dtype=torch.long)
            padded = torch.full((len(toks), max(1, int(lens.max()))), -1, dtype=torch.long)
            for i, t in enumerate(toks):
                padded[i, :len(t)] = torch.tensor(t, dtype=torch.long)
            batch.tokens, batch.token_lens = padded, lens
        return batch


ENCODED_FIELD = "encoder_out"  # a cut's custom field: its stored encoder output (xasr.data.encoder_cache)
STAND_IN = "xasr_stand_in"  # a cut's custom field: a copy for a rank left without a cut, counted for nothing


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Yields this rank's share of each global duration-bucketed batch.

    Every rank runs the same lhotse sampler (same seed, world size 1) and keeps the cuts at
    positions rank, rank + world_size, ... of each global batch sorted by duration. A rank
    left without a cut (a global batch with fewer cuts than ranks) gets a stand-in: the batch's
    first cut marked ``custom[STAND_IN]``, which the dataset flags (``Batch.stand_in``) and
    the trainer counts for nothing. Every rank still runs forward and backward, as DDP needs,
    and N ranks train on exactly the batches one process does.
    """

    def __init__(self, cuts, max_duration: float, shuffle: bool, num_buckets: int, seed: int = 0,
                 world_size: int = 1, rank: int = 0) -> None:
        from lhotse.dataset import DynamicBucketingSampler

        self.world_size, self.rank = world_size, rank
        try:  # lhotse needs at least as many cuts as buckets
            num_buckets = max(1, min(num_buckets, len(cuts)))
        except TypeError:  # a lazy CutSet has no length
            pass
        if num_buckets < 2:  # lhotse's bucketing needs two buckets: one cut (or one bucket) is a simple list
            from lhotse.dataset import SimpleCutSampler

            self.inner = SimpleCutSampler(cuts, max_duration=max_duration, shuffle=shuffle, seed=seed,
                                          world_size=1, rank=0, drop_last=False)
        else:
            self.inner = DynamicBucketingSampler(cuts, max_duration=max_duration, shuffle=shuffle,
                                                 num_buckets=num_buckets, seed=seed, world_size=1, rank=0,
                                                 drop_last=False)

        self.skip_batches = 0  # set to resume inside an epoch; applies to the next iteration only

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator:
        from lhotse import CutSet

        skip, self.skip_batches = self.skip_batches, 0
        for batch in self.inner:
            if skip > 0:  # resuming: these batches were trained on before the interruption
                skip -= 1
                continue
            cuts = sorted(batch, key=lambda c: (-c.duration, c.id))
            mine = cuts[self.rank::self.world_size] or [cuts[0].with_custom(STAND_IN, True)]
            yield CutSet.from_cuts(mine)

    def __len__(self) -> int:  # lhotse's dynamic samplers do not know it in advance
        raise TypeError("the number of batches is not known in advance")


def make_loader(cuts, dataset: AsrDataset, cfg: DataConfig, train: bool, seed: int = 0,
                world_size: int = 1, rank: int = 0):
    """DataLoader over batches of ``cuts`` (a CutSet); returns (loader, sampler)."""
    sampler = GlobalBatchSampler(cuts, max_duration=cfg.max_duration, shuffle=cfg.shuffle and train,
                                 num_buckets=cfg.num_buckets, seed=seed, world_size=world_size, rank=rank)
    loader = torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None,
                                         num_workers=cfg.num_workers if train else 0,
                                         persistent_workers=False)
    return loader, sampler
