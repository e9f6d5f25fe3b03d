"""The X-LLM speech model: where a batch turns into a loss, and a model turns into text.

    feats -> speech encoder -> CTC head                               (stage-1 loss, baseline)
                            -> C-Former (CIF + transformer) -> CE head (stage-1 loss, baseline)
                                       -> S-Adapter -> frozen LLM      (stage-2 loss, main decoder)
    image -> frozen image encoder -> Q-Former -> I-Adapter --/         (stage 3, model.image.enabled)

In: batches from :mod:`xasr.data.dataset`. Out: loss dictionaries for the trainer, and the
encoder output, CTC log-probs, C-Former vectors and adapted LLM inputs that the decoding methods
(:mod:`xasr.decoding.methods`) turn into text. A trained model is a directory
(:func:`xasr.model_dir.save_model_dir`) that holds only what xasr trained, and names the frozen
pretrained parts it was trained with (path and fingerprint).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from xasr.data.units import FIRST_TEXT_UNIT
from xasr.decoding.ngram import NgramConfig
from xasr.errors import XasrError
from xasr.models.adapter import Adapter, AdapterConfig
from xasr.models.cformer import CFormer, CFormerConfig
from xasr.models.context import ContextConfig, ContextualHead
from xasr.models.conformer import ConformerConfig
from xasr.models.ctc import CtcHead
from xasr.models.encoder_registry import ENCODERS
from xasr.models.image_encoder import FrozenImageEncoder, ImageEncoderConfig
from xasr.models.llm import FrozenLLM, LLMConfig
from xasr.models.qformer import QFormer, QFormerConfig
from xasr.models.whisper_encoder import WhisperEncoderConfig
from xasr.utils.fingerprint import fingerprint

if TYPE_CHECKING:
    from xasr.data.dataset import Batch

logger = logging.getLogger(__name__)

PARTS = ("encoder", "context", "ctc", "cformer", "adapter", "lora", "qformer", "image_adapter")


@dataclass
class EncoderSection:
    name: str = "conformer"  # a name in ENCODERS: "conformer" or "whisper"
    conformer: ConformerConfig = field(default_factory=ConformerConfig)
    whisper: WhisperEncoderConfig = field(default_factory=WhisperEncoderConfig)


@dataclass
class ImageSection:
    """The image path (stage 3): frozen image encoder -> Q-Former -> I-Adapter -> LLM."""
    enabled: bool = False
    encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    qformer: QFormerConfig = field(default_factory=QFormerConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    # queries come in groups of this size (e.g. the four word slots of a grid cell, see
    # recipes/multimodal/local/align_image.py); a group whose vectors are near zero (mean norm below
    # empty_norm_ratio x the mean norm of the LLM's token embeddings: what the fit makes of an empty
    # cell) is left out of the prompt, so the LLM reads only words. 0: every query goes in.
    drop_empty_groups: int = 0
    empty_norm_ratio: float = 0.5


@dataclass
class ModelConfig:
    encoder: EncoderSection = field(default_factory=EncoderSection)
    # trainable layers between the encoder and the CTC / CIF heads (off: the heads read the encoder)
    context: ContextConfig = field(default_factory=ContextConfig)
    cformer: CFormerConfig = field(default_factory=CFormerConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    image: ImageSection = field(default_factory=ImageSection)
    use_llm: bool = False  # stage 1 trains without the LLM
    vocab_size: int = 0  # set from the units
    ctc_weight: float = 0.5
    # a JSON list of a class id per unit (homophones share one: `xasr train-units
    # --homophone-classes`): the CTC head's logit of a unit is its class's plus its own
    # (xasr.models.ctc.ClassTiedLinear), and the C-Former's too with cformer_classes; a trained
    # model directory keeps its own copy
    unit_classes: Optional[str] = None
    cformer_classes: bool = False
    # where the CIF weights come from: "predictor" (the C-Former's own conv + sigmoid) or "ctc"
    # (the CTC head's non-blank probability per frame, detached: CTC spikes sit on units, so
    # the C-Former fires one vector per unit as soon as CTC has learned to spike)
    cif_alphas: str = "predictor"
    # SpecAugment-style masks on the output of a frozen encoder, in training only (a frozen
    # encoder gives the same vectors at every epoch; a trained one has its own spec_augment):
    # up to frozen_time_masks spans of at most frozen_time_mask_ratio of the frames each, and
    # frozen_dim_masks spans of at most frozen_dim_mask_width dimensions, set to zero
    frozen_time_masks: int = 0
    frozen_time_mask_ratio: float = 0.05
    frozen_dim_masks: int = 0
    frozen_dim_mask_width: int = 32
    ce_weight: float = 1.0
    quantity_weight: float = 1.0
    # the decoding search: the defaults of a model's DecodingOptions (xasr.decoding.options), read
    # when it decodes; callers change them on a DecodingOptions, never here
    beam_size: int = 4  # llm_beam
    length_bound_factor: float = 1.5  # LLM output bound: factor * LLM tokens of the CIF-head text + margin
    length_bound_margin: int = 8
    # LLM decodings: an output that repeats a run of this many LLM tokens is cut where the repeat
    # starts, and a greedy row stops there (xasr.decoding.loops); 0: off
    repeat_ngram: int = 5
    # llm_ctc: beam search (beam_size) over LLM tokens scored (1 - w) * LLM + w * CTC prefix
    # log-probability, w = joint_ctc_weight; joint_pre_beam LLM tokens tried per hypothesis
    joint_ctc_weight: float = 0.5
    joint_pre_beam: int = 8
    joint_length_bonus: float = 0.0  # added to a hypothesis' score per CTC unit of its text
    # ctc_beam: CTC prefix beam search (ctc_beam_size hypotheses, also the N-best size);
    # llm_rescore: its N-best rescored (1 - w) * LLM + w * CTC log-probability + bonus * units,
    # w = rescore_ctc_weight (xasr.decoding.rescore)
    ctc_beam_size: int = 32
    # ctc_beam / llm_rescore: an n-gram LM in the CTC prefix search (none without a path)
    ngram: NgramConfig = field(default_factory=NgramConfig)
    # ctc_beam / llm_rescore with a CTC head that ties homophones (unit_classes): the search scores
    # a unit by its class's probability plus homophone_scale x its share of the class
    # (xasr.decoding.homophones.class_log_probs), so the n-gram LM picks among homophones; 1: off
    homophone_scale: float = 1.0
    rescore_ctc_weight: float = 0.5
    rescore_length_bonus: float = 0.0
    # llm_speculative / llm_fast: the draft, "cif" or "ctc" (that head's greedy text) or "ctc_beam" (the CTC
    # prefix search's best path: what an LLM reading prompt_draft=ctc_beam mostly writes)
    speculative_draft: str = "cif"
    # the LLM's prompt also holds a draft transcript after the speech vectors: "ctc", the CTC head's
    # greedy text (after draft_prefix, embedded by the LLM's own table), so the LLM corrects a draft
    # instead of reading the vectors alone (generative error correction with the speech in view);
    # "none": vectors only. In training the draft comes from the (masked) training batch, and each
    # of its units is then substituted, dropped or followed by a random unit with probability
    # draft_noise, split between the three as draft_noise_shares (substitution, deletion,
    # insertion): training cuts get better drafts than unseen ones, and an LLM that learned to
    # copy them would copy the errors of unseen ones too. On Aishell, noise at the head's dev-minus-
    # training error rate in equal shares beat the same noise shaped as the head's errors
    # (recipes/aishell/RESULTS.md)
    # draft_share: the share of training utterances whose prompt holds the draft (the others read the
    # vectors alone), so that one model decodes with a draft and without one (DecodingOptions.prompt_draft)
    llm_draft: str = "none"
    draft_share: float = 1.0
    draft_noise: float = 0.0
    draft_noise_shares: List[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    draft_prefix: str = "\nDraft: "
    fast_path_threshold: float = 0.9  # llm_fast: take the draft unverified when its head's smallest posterior >= this
    # LLM decodings: the tokens the LLM scores. "full": its whole vocabulary; "units": only the
    # tokens the units can spell (xasr.decoding.vocab), at a fraction of the output layer's cost
    llm_vocab: str = "full"
    # LLM decodings of a model trained with llm_draft=ctc: the draft in the prompt. "ctc_greedy": the
    # CTC head's greedy text (what training reads); "ctc_beam": the best path of the CTC prefix search
    # with the n-gram LM (ctc_beam's output); "none": the vectors alone (for a model trained with
    # draft_share < 1). rescore_draft: the same for llm_rescore's prompt. No effect on a model trained
    # without drafts
    prompt_draft: str = "ctc_greedy"
    rescore_draft: str = "ctc_greedy"


def _trains(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())



def read_unit_classes(path: str, vocab_size: int) -> List[int]:
    """The class id of each unit from a JSON list (``model.unit_classes``), checked."""
    p = Path(path)
    if not p.is_file():
        raise XasrError(f"model.unit_classes: {path} does not exist (a JSON list of a class id per unit)")
    try:
        ids = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise XasrError(f"model.unit_classes: {path} is not JSON ({e})") from None
    if not isinstance(ids, list) or len(ids) != vocab_size or not all(isinstance(i, int) and i >= 0 for i in ids):
        raise XasrError(f"model.unit_classes: {path} must be a list of {vocab_size} class ids >= 0 (one per unit)")
    return ids


def corrupt_units(units: Sequence[int], p: float, vocab_size: int, first: int = FIRST_TEXT_UNIT,
                  shares: Sequence[float] = (1.0, 1.0, 1.0)) -> List[int]:
    """A noisy copy of a unit sequence: each unit is, with probability p in all, replaced by a
    random unit, dropped, or kept and followed by a random unit, in the proportions ``shares``
    (substitution, deletion, insertion; random ids ``first`` .. vocab_size - 1: never blank,
    sos/eos or unk). Draws come from torch's global generator (a seed repeats them)."""
    if p <= 0 or not units:
        return list(units)
    if len(shares) != 3 or min(shares) < 0 or sum(shares) <= 0:
        raise ValueError(f"draft noise shares must be 3 non-negative numbers, not {list(shares)}")
    total = float(sum(shares))
    sub, dele = p * shares[0] / total, p * (shares[0] + shares[1]) / total
    draws = torch.rand(len(units)).tolist()
    randoms = torch.randint(first, max(first + 1, vocab_size), (len(units),)).tolist()
    out: List[int] = []
    for u, r, x in zip(units, draws, randoms):
        if r < sub:
            out.append(x)
        elif r < dele:
            continue
        elif r < p:
            out.extend((u, x))
        else:
            out.append(u)
    return out


def never_saved(key: str) -> bool:
    """State entries of the frozen LLM (LoRA aside) and image encoder, parameters and buffers."""
    return (key.startswith("llm.") and "lora_" not in key) or key.startswith("image_encoder.")


def _resolve(path_or_name: str, models_dir: Optional[str]) -> Path:
    from xasr.pretrained.install import resolve_model_dir

    return Path(resolve_model_dir(path_or_name, models_dir))


class XLLMSpeechModel(nn.Module):
    def __init__(self, cfg: ModelConfig, models_dir: Optional[str] = None) -> None:
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (the number of units)")
        self.cfg = cfg
        self.models_dir = models_dir
        if cfg.llm_draft not in ("none", "ctc"):
            raise ValueError(f"model.llm_draft must be none or ctc, not {cfg.llm_draft!r}")
        if not 0.0 < cfg.draft_share <= 1.0:
            raise ValueError(f"model.draft_share must be in (0, 1], not {cfg.draft_share}")
        self.units = None  # the sentencepiece units (set_units): the text of a draft
        name = cfg.encoder.name
        self.encoder = ENCODERS.get(name)(getattr(cfg.encoder, name), models_dir=models_dir)
        enc_dim = self.encoder.output_dim
        self.context: Optional[ContextualHead] = None
        if cfg.context.enabled:
            cfg.context.input_dim = enc_dim
            cfg.context.groups = int(getattr(self.encoder.cfg, "output_layers", 1))
            self.context = ContextualHead(cfg.context)
            enc_dim = self.context.output_dim
        classes = read_unit_classes(cfg.unit_classes, cfg.vocab_size) if cfg.unit_classes else None
        self.ctc = CtcHead(enc_dim, cfg.vocab_size, classes=classes)
        cfg.cformer.input_dim, cfg.cformer.vocab_size = enc_dim, cfg.vocab_size
        self.cformer = CFormer(cfg.cformer, classes=classes if cfg.cformer_classes else None)
        self.llm: Optional[FrozenLLM] = None
        self.adapter: Optional[Adapter] = None
        if cfg.use_llm:
            self.llm = FrozenLLM(cfg.llm, model_dir=_resolve(cfg.llm.path, models_dir))
            cfg.adapter.input_dim, cfg.adapter.output_dim = self.cformer.output_dim, self.llm.embed_dim
            if cfg.adapter.posterior_mix:
                cfg.adapter.vocab_size = cfg.vocab_size
            self.adapter = Adapter(cfg.adapter)
            with torch.no_grad():  # start the adapter's output at the scale of the LLM's embeddings
                ids = torch.arange(min(4096, self.llm.model.get_input_embeddings().weight.shape[0]))
                rms = self.llm.model.get_input_embeddings()(ids).float().pow(2).mean().sqrt()
                self.adapter.norm.weight.fill_(float(rms))
        self.image_encoder: Optional[FrozenImageEncoder] = None
        self.qformer: Optional[QFormer] = None
        self.image_adapter: Optional[Adapter] = None
        if cfg.image.enabled:
            if self.llm is None:
                raise ValueError("model.image.enabled needs model.use_llm=true (images reach the LLM)")
            self.image_encoder = FrozenImageEncoder(cfg.image.encoder, models_dir=models_dir)
            cfg.image.qformer.input_dim = self.image_encoder.output_dim
            self.qformer = QFormer(cfg.image.qformer)
            cfg.image.adapter.input_dim, cfg.image.adapter.output_dim = self.qformer.output_dim, self.llm.embed_dim
            self.image_adapter = Adapter(cfg.image.adapter)
            with torch.no_grad():  # like the S-Adapter: start at the scale of the LLM's embeddings
                self.image_adapter.norm.weight.copy_(self.adapter.norm.weight)

    # ------------------------------------------------------------------ parts
    def train(self, mode: bool = True) -> "XLLMSpeechModel":
        """Parts with nothing to train stay in eval mode (no dropout in frozen parts)."""
        super().train(mode)
        for part in (self.encoder, self.context, self.ctc, self.cformer, self.adapter, self.llm, self.image_encoder,
                     self.qformer, self.image_adapter):
            if part is not None and not _trains(part):
                part.eval()
        return self

    def pretrained_param_names(self) -> List[str]:
        """Parameters that come from frozen pretrained models and are never saved."""
        names = []
        encoder_pretrained = {"encoder." + n for n in self.encoder.pretrained_param_names()}
        for n, _ in self.named_parameters():
            if n.startswith("llm.") and "lora_" not in n:
                names.append(n)
            elif n in encoder_pretrained:
                names.append(n)
            elif n.startswith("image_encoder."):
                names.append(n)
        return names

    def set_trainable(self, parts: Sequence[str]) -> None:
        unknown = set(parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown trainable parts {sorted(unknown)}; choose from {PARTS}")
        pretrained = set(self.pretrained_param_names())
        # CIF weights taken from the CTC head leave the C-Former's own predictor out of every loss:
        # it is not trained (DDP refuses parameters that get no gradient)
        unused = ("cformer.cif.conv.", "cformer.cif.weight_proj.") if self.cfg.cif_alphas == "ctc" else ()
        for n, p in self.named_parameters():
            part = n.split(".", 1)[0]
            if "lora_" in n:
                part = "lora"
            p.requires_grad_(part in parts and n not in pretrained and not n.startswith(unused))
        if "adapter" in parts and self.adapter is None:
            raise ValueError("the adapter trains only with model.use_llm=true")
        if {"qformer", "image_adapter"} & set(parts) and self.qformer is None:
            raise ValueError("the qformer and image_adapter train only with model.image.enabled=true")

    def frozen_parts(self) -> Dict[str, dict]:
        out = {}
        if self.llm is not None:
            d = _resolve(self.cfg.llm.path, self.models_dir)
            out["llm"] = {"path": str(d), "fingerprint": fingerprint(d)}
        if self.encoder.pretrained_dir is not None:
            d = Path(self.encoder.pretrained_dir)
            out["encoder"] = {"path": str(d), "fingerprint": fingerprint(d)}
        if self.image_encoder is not None:
            f = self.image_encoder.weights_file
            out["image_encoder"] = {"path": str(f), "fingerprint": fingerprint(f)}
        return out

    # ------------------------------------------------------------------ losses
    def encode(self, feats: Tensor, feat_lens: Tensor):
        return self.encoder(feats, feat_lens)  # (B, T', D), (B,)

    def cif_alphas(self, h: Tensor, h_lens: Tensor, ctc_log_probs: Optional[Tensor] = None) -> Optional[Tensor]:
        """CIF weights (B, T) from the CTC head with ``cif_alphas: ctc`` (its log-probs on ``h``, or
        ``ctc_log_probs`` when the caller has them); None: the C-Former's predictor.

        The weights are the CTC non-blank probabilities, scaled so that each row sums to the
        number of tokens on the CTC greedy path: CTC may spread one token over several
        non-blank frames, so the plain sum overcounts. In training the C-Former rescales them to
        the reference length anyway."""
        if self.cfg.cif_alphas == "predictor":
            return None
        if self.cfg.cif_alphas != "ctc":
            raise ValueError(f"model.cif_alphas must be predictor or ctc, not {self.cfg.cif_alphas!r}")
        with torch.no_grad():
            log_probs = self.ctc(h) if ctc_log_probs is None else ctc_log_probs.detach()  # (B, T, V)
            blank = self.ctc.blank_id
            valid = torch.arange(h.shape[1], device=h.device)[None, :] < h_lens[:, None]  # (B, T)
            alphas = (1.0 - log_probs[..., blank].exp()) * valid
            best = log_probs.argmax(-1)  # (B, T)
            prev = torch.nn.functional.pad(best[:, :-1], (1, 0), value=blank)
            tokens = ((best != blank) & (best != prev) & valid).sum(1).to(alphas.dtype)  # (B,)
            return alphas * (tokens / alphas.sum(1).clamp(min=1e-6)).unsqueeze(1)  # (B, T)

    def encode_batch(self, batch: Batch):
        """What the heads read for a batch: the frozen encoder's outputs (computed, or as stored in
        ``batch.encoded``, see :mod:`xasr.data.encoder_cache`), SpecAugment-masked in training
        (``frozen_*_masks``), then the encoder's trained top layers if it has some
        (``forward_trained``), and the contextual head if the model has one. An encoder that
        trains whole (the Conformer) runs as one. Returns (h (B, T', D), h_lens (B,))."""
        grad = torch.is_grad_enabled()
        frozen = self.encoder.frozen
        if batch.encoded:
            if not frozen and _trains(self.encoder):
                raise XasrError("the batch holds stored encoder outputs, but the encoder is being trained")
            h, h_lens = batch.feats, batch.feat_lens
        elif frozen:
            with torch.no_grad():
                h, h_lens = self.encoder.forward_frozen(batch.feats, batch.feat_lens)
        else:
            with torch.set_grad_enabled(grad and _trains(self.encoder)):
                h, h_lens = self.encode(batch.feats, batch.feat_lens)
        if self.training and (frozen or not _trains(self.encoder)):
            h = self._mask_frozen(h, h_lens)
        if frozen:
            with torch.set_grad_enabled(grad and _trains(self.encoder)):  # the trained top, if any
                h, h_lens = self.encoder.forward_trained(h, h_lens)
        if self.context is not None:
            with torch.set_grad_enabled(grad and _trains(self.context)):
                h, h_lens = self.context(h, h_lens)
        return h, h_lens

    def _mask_frozen(self, h: Tensor, h_lens: Tensor) -> Tensor:
        """SpecAugment on a frozen encoder's output (B, T, D): per row up to ``frozen_time_masks``
        spans of at most ``frozen_time_mask_ratio`` x its length in frames, and ``frozen_dim_masks``
        spans of at most ``frozen_dim_mask_width`` dimensions, set to zero. Widths and starts are
        uniform (Park et al. 2019); draws come from torch's global generator, so a seed repeats them."""
        cfg = self.cfg
        if cfg.frozen_time_masks <= 0 and cfg.frozen_dim_masks <= 0:
            return h
        B, T, D = h.shape
        dev = h.device
        drop = torch.zeros(B, T, D, dtype=torch.bool, device=dev)
        if cfg.frozen_time_masks > 0:
            n = h_lens.to(dev).float()[:, None]  # (B, 1)
            max_w = (cfg.frozen_time_mask_ratio * n).floor().clamp(min=1)  # (B, 1)
            w = (torch.rand(B, cfg.frozen_time_masks, device=dev) * (max_w + 1)).floor()  # (B, M)
            t0 = (torch.rand(B, cfg.frozen_time_masks, device=dev) * (n - w + 1).clamp(min=1)).floor()
            t = torch.arange(T, device=dev).float()[None, None, :]  # (1, 1, T)
            spans = (t >= t0[..., None]) & (t < (t0 + w)[..., None])  # (B, M, T)
            drop |= spans.any(1)[:, :, None]
        if cfg.frozen_dim_masks > 0:
            max_w = float(min(cfg.frozen_dim_mask_width, D))
            w = (torch.rand(B, cfg.frozen_dim_masks, device=dev) * (max_w + 1)).floor()  # (B, M)
            d0 = (torch.rand(B, cfg.frozen_dim_masks, device=dev) * (D - w + 1)).floor()
            d = torch.arange(D, device=dev).float()[None, None, :]  # (1, 1, D)
            spans = (d >= d0[..., None]) & (d < (d0 + w)[..., None])  # (B, M, D)
            drop |= spans.any(1)[:, None, :]
        return h.masked_fill(drop, 0.0)  # (B, T, D)

    def forward(self, batch: Batch, stage: int) -> Dict[str, Tensor]:
        """Losses for a batch: stage 1 (CTC + CE + quantity) or stage 2 (LLM cross-entropy,
        plus the stage-1 losses when the C-Former still trains); stage 3 is stage 2 with the
        image path (rows with a picture get its query vectors in the prompt, see
        :meth:`image_vectors`). ``loss`` is a sum over tokens; ``num_tokens`` is what to divide by."""
        feats = batch.feats
        tokens, token_lens = batch.tokens, batch.token_lens
        grad = torch.is_grad_enabled()
        h, h_lens = self.encode_batch(batch)  # no graph through frozen parts
        acoustic_trains = _trains(self.encoder) or (self.context is not None and _trains(self.context))
        out: Dict[str, Tensor] = {}
        with torch.set_grad_enabled(grad and (acoustic_trains or _trains(self.cformer))):
            cf = self.cformer(h, h_lens, target_lens=token_lens, alphas=self.cif_alphas(h, h_lens))
        n_units = token_lens.sum()
        log_probs = None
        if stage == 1 or _trains(self.cformer):
            log_probs = self.ctc(h)
            ctc = self.ctc.loss(log_probs, h_lens, tokens.clamp(min=0), token_lens)  # per unit
            ce = self.cformer.ce_loss(cf.logits, cf.lens, tokens, token_lens)  # per unit
            qua = cf.quantity_loss  # per utterance
            out["ctc"], out["ce"], out["quantity"] = ctc.detach(), ce.detach(), qua.detach()
            # summed over the batch's units (the trainer divides by the global unit count)
            stage1 = (self.cfg.ctc_weight * ctc + self.cfg.ce_weight * ce) * n_units \
                + self.cfg.quantity_weight * qua * token_lens.shape[0]
        else:
            stage1 = None
        if stage == 1:
            out["loss"], out["num_tokens"] = stage1, n_units
            return out
        if self.llm is None or self.adapter is None:
            raise ValueError("stage 2 needs model.use_llm=true")
        if stage == 3 and self.qformer is None:
            raise ValueError("stage 3 needs model.image.enabled=true")
        drafts = None
        if self.cfg.llm_draft == "ctc":
            with torch.no_grad():  # the stage-1 loss's log-probs when the C-Former still trains
                drafts = self.ctc.greedy_decode((self.ctc(h) if log_probs is None else log_probs).detach(), h_lens)
            if self.training and self.cfg.draft_noise > 0:
                drafts = [corrupt_units(d, self.cfg.draft_noise, self.cfg.vocab_size,
                                        shares=self.cfg.draft_noise_shares) for d in drafts]
            if self.training and self.cfg.draft_share < 1.0:  # these rows read the vectors alone
                keep = (torch.rand(len(drafts)) < self.cfg.draft_share).tolist()
                drafts = [d if k else None for d, k in zip(drafts, keep)]
        rows = self.llm_rows(cf, drafts)
        flat = torch.cat(rows)
        images = self.image_vectors(batch)  # per row (Q, D_llm) or None
        n_image = None if images is None else [0 if v is None else int(v.shape[0]) for v in images]
        inputs = self.llm.build_inputs([int(r.shape[0]) for r in rows], targets=batch.texts, n_image=n_image)
        dev = feats.device
        image_flat = torch.cat([v for v in images if v is not None]) if n_image and any(n_image) else None
        emb = self.llm.embed(inputs["input_ids"].to(dev), flat, image_flat)
        llm_loss, n_llm, correct = self.llm.loss(emb, inputs["attention_mask"].to(dev), inputs["labels"].to(dev))
        n = torch.tensor(float(n_llm), device=dev)
        out["llm"] = llm_loss.detach() / max(1, n_llm)  # per token, for the log
        out["llm_acc"] = torch.tensor(correct / max(1, n_llm), device=dev)
        # stage-1 losses are per unit: scale them to the LLM token count so the sum stays a per-token mean
        out["loss"] = llm_loss if stage1 is None else llm_loss + stage1 * (n / n_units.clamp(min=1))
        if image_flat is None and self.qformer is not None and torch.is_grad_enabled():
            # a batch without pictures: the image interface stays in the graph with zero gradients, so
            # that backward (and DDP's reduction) sees the same parameters in every batch
            image_params = [p for m in (self.qformer, self.image_adapter) for p in m.parameters() if p.requires_grad]
            out["loss"] = out["loss"] + 0.0 * sum(p.sum() for p in image_params)
        out["num_tokens"] = n
        return out

    def image_vectors(self, batch: Batch) -> Optional[List[Optional[Tensor]]]:
        """The I-Adapter's vectors (num_queries, D_llm) of each row with a picture, None for
        rows without one (``batch.has_image`` False); None for the whole batch when the model
        has no image path or the batch no ``images``."""
        if self.qformer is None or batch.images is None:
            return None
        has = batch.has_image.bool()  # (B,)
        out: List[Optional[Tensor]] = [None] * int(has.shape[0])
        rows = has.nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            return out
        feats, lens, grids = self.image_encoder(batch.images[rows])  # (B_img, N, C), (B_img,), [(h, w)]
        trains = _trains(self.qformer) or _trains(self.image_adapter)
        with torch.set_grad_enabled(torch.is_grad_enabled() and trains):
            vectors = self.image_adapter(self.qformer(feats, lens, grids))  # (B_img, Q, D_llm)
        g = self.cfg.image.drop_empty_groups
        for j, b in enumerate(rows.tolist()):
            out[b] = vectors[j] if g <= 0 else self._drop_empty(vectors[j], g)
        return out

    def _drop_empty(self, v: Tensor, group: int) -> Optional[Tensor]:
        """The query vectors v (Q, D) without the groups of ``group`` consecutive queries whose mean
        norm is below ``empty_norm_ratio`` x the LLM's mean token-embedding norm; None if none is left."""
        if v.shape[0] % group:
            raise XasrError(f"model.image.drop_empty_groups={group} does not divide the {v.shape[0]} queries")
        if getattr(self, "_token_norm", None) is None:
            with torch.no_grad():
                self._token_norm = float(self.llm.model.get_input_embeddings().weight.float().norm(dim=-1).mean())
        groups = v.reshape(-1, group, v.shape[-1])  # (Q / g, g, D)
        keep = groups.detach().float().norm(dim=-1).mean(dim=-1) >= self.cfg.image.empty_norm_ratio * self._token_norm
        if not bool(keep.any()):
            return None
        return groups[keep].reshape(-1, v.shape[-1])

    def unit_classes(self):
        """The CTC head's class id per unit (numpy, (V,)) when it ties homophones, else None."""
        classes = getattr(self.ctc.proj, "classes", None)
        return None if classes is None else classes.cpu().numpy()

    def set_units(self, units) -> None:
        """The sentencepiece units the model was trained on: a draft's text (``llm_draft``)."""
        self.units = units

    def llm_rows(self, cf, drafts: Optional[List[Optional[List[int]]]] = None,
                 pad_empty: bool = False) -> List[Tensor]:
        """What the LLM reads in place of its speech placeholder, per utterance: the S-Adapter's
        vectors (n_b, D_llm), then for a draft ``drafts[b]`` (units; None: that row has none) the
        embedded draft prefix and its text. ``drafts`` None: no row has one. Drafts need a model
        trained with ``llm_draft``. ``pad_empty``: a row with nothing gets one zero vector
        (generation needs a prompt position); without it such a row is empty."""
        speech = self.speech_embeddings(cf)  # (B, N, D_llm)
        rows = [speech[b, :n] for b, n in enumerate(cf.lens.tolist())]
        if drafts is not None:
            if self.cfg.llm_draft == "none":
                raise XasrError("a draft in the LLM's prompt needs a model trained with one (model.llm_draft=ctc)")
            if len(drafts) != len(rows):
                raise ValueError(f"{len(drafts)} drafts for {len(rows)} utterances")
            if self.units is None:
                raise XasrError("model.llm_draft needs the model's units (XLLMSpeechModel.set_units)")
            rows = [r if d is None else
                    torch.cat([r, self.llm.text_embeddings(self.cfg.draft_prefix + self.units.decode(list(d))).to(r.dtype)])
                    for r, d in zip(rows, drafts)]
        if pad_empty:
            rows = [r if r.shape[0] > 0 else speech.new_zeros(1, speech.shape[-1]) for r in rows]
        return rows

    def speech_embeddings(self, cf) -> Tensor:
        """The S-Adapter's output for the C-Former's vectors (and, with posterior_mix, its head's
        unit posteriors): (B, N, D_llm)."""
        if self.adapter.unit_table is None:
            return self.adapter(cf.vectors)
        return self.adapter(cf.vectors, cf.logits.float().softmax(-1))
