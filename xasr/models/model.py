"""The X-LLM speech model: where a batch turns into a loss, and a model turns into text.

    feats -> speech encoder -> CTC head                               (stage-1 loss, baseline)
                            -> C-Former (CIF + transformer) -> CE head (stage-1 loss, baseline)
                                       -> S-Adapter -> frozen LLM      (stage-2 loss, main decoder)
    image -> frozen image encoder -> Q-Former -> I-Adapter --/         (stage 3, model.image.enabled)

In: batches from :mod:`xasr.data.dataset`. Out: loss dictionaries for the trainer, or
transcripts from any decoding method (``ctc_greedy``, ``ctc_beam``, ``cif_greedy``, ``llm_greedy``,
``llm_beam``, ``llm_ctc``, ``llm_rescore``, ``llm_speculative``, ``llm_fast``). A trained model is a directory
(:func:`xasr.model_dir.save_model_dir`) that holds only what xasr trained, and names the frozen pretrained parts
it was trained with (path and fingerprint).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

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

logger = logging.getLogger(__name__)

DECODING_METHODS = ("ctc_greedy", "ctc_beam", "cif_greedy", "llm_greedy", "llm_beam", "llm_ctc", "llm_rescore",
                    "llm_speculative", "llm_fast")


def check_methods(methods: Sequence[str], option: str = "--methods") -> None:
    """Refuse unknown decoding method names before anything is loaded."""
    unknown = [m for m in methods if m not in DECODING_METHODS]
    if unknown:
        raise XasrError(f"{option}: unknown decoding method {', '.join(map(repr, unknown))}; choose from "
                        f"{', '.join(DECODING_METHODS)}")


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
    speculative_draft: str = "cif"  # llm_speculative / llm_fast: the draft's head, "cif" or "ctc"
    fast_path_threshold: float = 0.9  # llm_fast: take the draft unverified when its head's smallest posterior >= this


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
        name = cfg.encoder.name
        if name == "whisper":
            wcfg = cfg.encoder.whisper
            wcfg.model_dir = str(_resolve(wcfg.model_dir, models_dir))
            self.encoder = ENCODERS.get(name)(wcfg)
        else:
            self.encoder = ENCODERS.get(name)(getattr(cfg.encoder, name))
        enc_dim = self.encoder.output_dim
        self.context: Optional[ContextualHead] = None
        if cfg.context.enabled:
            cfg.context.input_dim = enc_dim
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
        for n, _ in self.named_parameters():
            if n.startswith("llm.") and "lora_" not in n:
                names.append(n)
            elif self.cfg.encoder.name == "whisper" and n.startswith("encoder.") and self.cfg.encoder.whisper.freeze:
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
        if self.cfg.encoder.name == "whisper":
            d = Path(self.cfg.encoder.whisper.model_dir)
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
        non-blank frames, so the plain sum overcounts (by about 5x on the Aishell recipe's
        model). In training the C-Former rescales them to the reference length anyway."""
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

    def encode_batch(self, batch: dict):
        """What the heads read for a batch: the encoder outputs (computed, or as stored in
        ``batch["encoded"]``, see :mod:`xasr.data.encoder_cache`), SpecAugment-masked in training
        when the encoder is frozen (``frozen_*_masks``), then the contextual head if the model has
        one. Returns (h (B, T', D), h_lens (B,))."""
        grad = torch.is_grad_enabled()
        if batch.get("encoded"):
            if _trains(self.encoder):
                raise XasrError("the batch holds stored encoder outputs, but the encoder is being trained")
            h, h_lens = batch["feats"], batch["feat_lens"]
        else:
            with torch.set_grad_enabled(grad and _trains(self.encoder)):  # no graph through a frozen encoder
                h, h_lens = self.encode(batch["feats"], batch["feat_lens"])
        if self.training and not _trains(self.encoder):
            h = self._mask_frozen(h, h_lens)
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

    def forward(self, batch: dict, stage: int) -> Dict[str, Tensor]:
        """Losses for a batch: stage 1 (CTC + CE + quantity) or stage 2 (LLM cross-entropy,
        plus the stage-1 losses when the C-Former still trains); stage 3 is stage 2 with the
        image path (rows with a picture get its query vectors in the prompt, see
        :meth:`image_vectors`). ``loss`` is a sum over tokens; ``num_tokens`` is what to divide by."""
        feats = batch["feats"]
        tokens, token_lens = batch["tokens"], batch["token_lens"]
        grad = torch.is_grad_enabled()
        h, h_lens = self.encode_batch(batch)  # no graph through frozen parts
        acoustic_trains = _trains(self.encoder) or (self.context is not None and _trains(self.context))
        out: Dict[str, Tensor] = {}
        with torch.set_grad_enabled(grad and (acoustic_trains or _trains(self.cformer))):
            cf = self.cformer(h, h_lens, target_lens=token_lens, alphas=self.cif_alphas(h, h_lens))
        n_units = token_lens.sum()
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
        speech = self.speech_embeddings(cf)  # (B, N, D_llm)
        flat = torch.cat([speech[b, :int(cf.lens[b])] for b in range(speech.shape[0])])
        images = self.image_vectors(batch)  # per row (Q, D_llm) or None
        n_image = None if images is None else [0 if v is None else int(v.shape[0]) for v in images]
        inputs = self.llm.build_inputs(cf.lens.tolist(), targets=batch["texts"], n_image=n_image)
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

    def image_vectors(self, batch: dict) -> Optional[List[Optional[Tensor]]]:
        """The I-Adapter's vectors (num_queries, D_llm) of each row with a picture, None for
        rows without one (``batch["has_image"]`` False); None for the whole batch when the model
        has no image path or the batch no ``images``."""
        if self.qformer is None or batch.get("images") is None:
            return None
        has = batch["has_image"].bool()  # (B,)
        out: List[Optional[Tensor]] = [None] * int(has.shape[0])
        rows = has.nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            return out
        feats, lens, grids = self.image_encoder(batch["images"][rows])  # (B_img, N, C), (B_img,), [(h, w)]
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

    # ------------------------------------------------------------------ decoding
    @torch.no_grad()
    def decode(self, batch: dict, method: str, units) -> List[str]:
        """Transcripts of a batch. ``units`` is the sentencepiece processor of the model.

        ``llm_speculative`` gives the ``llm_greedy`` transcripts with fewer LLM passes: the CIF
        head's (or with ``speculative_draft: ctc`` the CTC head's) transcript is the draft the
        LLM verifies (:mod:`xasr.decoding.speculative`). ``llm_fast`` takes a draft without the
        LLM when its head is confident (``fast_path_threshold``), so its output may differ. Every
        LLM decoding is cut where its output starts repeating a run of ``repeat_ngram`` tokens
        (:mod:`xasr.decoding.loops`). ``llm_ctc`` is a beam search of the LLM scored with the CTC
        head's prefix probabilities (:mod:`xasr.decoding.joint_ctc`, ``joint_*`` settings).
        ``ctc_beam`` is the CTC head's prefix beam search, ``llm_rescore`` its N-best rescored by
        the LLM (:mod:`xasr.decoding.rescore`, ``ctc_beam_size`` and ``rescore_*`` settings). The
        work done is left in ``last_decode_stats`` (a ``DecodeStats``), and each utterance's
        ``no_speech_prob`` (the CTC head's lowest blank posterior) in ``last_no_speech``; with
        ``keep_ctc_log_probs`` set, the CTC log-probs and lengths in ``last_ctc``.
        """
        from xasr.decoding.speculative import (DecodeStats, PassCounter, draft_ids, greedy_stats,
                                               head_confidence, speculative_decode)

        if method not in DECODING_METHODS:
            raise ValueError(f"unknown decoding method {method!r}; choose from {DECODING_METHODS}")
        h, h_lens = self.encode_batch(batch)
        self.last_decode_stats = DecodeStats(utterances=int(h.shape[0]))
        ctc_log_probs = self.ctc(h)
        self.last_no_speech = self.ctc.no_speech_prob(ctc_log_probs, h_lens)
        # kept for word timestamps (xasr.decoding.align) when the caller asks for them
        self.last_ctc = (ctc_log_probs, h_lens) if getattr(self, "keep_ctc_log_probs", False) else None
        if method == "ctc_greedy":
            return [units.decode(u) for u in self.ctc.greedy_decode(ctc_log_probs, h_lens)]
        if method == "ctc_beam":
            return [units.decode(list(nb[0][0])) if nb else ""
                    for nb in self.ctc_nbest(ctc_log_probs, h_lens, units)]
        cf = self.cformer(h, h_lens, alphas=self.cif_alphas(h, h_lens, ctc_log_probs))
        cif_texts = [units.decode(u) for u in self.cformer.greedy_units(cf.logits, cf.lens)]
        if method == "cif_greedy":
            return cif_texts
        if self.llm is None or self.adapter is None:
            raise XasrError(f"{method} needs a model trained with the LLM (stage 2)")
        speech = self.speech_embeddings(cf)  # (B, N, D_llm)
        rows = [speech[b, :n] if n > 0 else speech.new_zeros(1, speech.shape[-1])  # an empty utterance gets one vector
                for b, n in enumerate(cf.lens.tolist())]
        bounds = [self.length_bound(t) for t in cif_texts]
        images = self.image_vectors(batch)  # per row (Q, D_llm) or None
        if method in ("llm_speculative", "llm_fast") and images is not None and any(v is not None for v in images):
            raise XasrError(f"{method} does not take images yet: decode pictures with llm_greedy or llm_beam")
        if method == "llm_rescore":
            return self._rescore(self.ctc_nbest(ctc_log_probs, h_lens, units), rows, images, units)
        if method == "llm_ctc":
            from xasr.decoding.joint_ctc import UnitMap, joint_ctc_generate

            log_probs = ctc_log_probs.float().cpu().numpy()  # (B, T, V)
            if getattr(self, "_unit_map", None) is None or self._unit_map.sp is not units:
                self._unit_map = UnitMap(units, self.llm.tokenizer, self.cfg.llm.target_case)
            emb, mask = self.llm.generation_inputs(rows, images)
            self.last_decode_stats = DecodeStats()
            ids = joint_ctc_generate(
                self.llm, emb, mask, [log_probs[b, :max(1, n)] for b, n in enumerate(h_lens.tolist())],
                self._unit_map, bounds, beam=self.cfg.beam_size,
                ctc_weight=self.cfg.joint_ctc_weight, pre_beam=self.cfg.joint_pre_beam,
                length_bonus=self.cfg.joint_length_bonus,
                repeat_ngram=self.cfg.repeat_ngram, blank=self.ctc.blank_id, stats=self.last_decode_stats)
        elif method in ("llm_speculative", "llm_fast"):
            if self.cfg.speculative_draft == "ctc":
                log_probs = ctc_log_probs  # (B, T, V)
                draft_texts = [units.decode(u) for u in self.ctc.greedy_decode(log_probs, h_lens)]
                confidence = head_confidence(log_probs, h_lens)
            elif self.cfg.speculative_draft == "cif":
                draft_texts, confidence = cif_texts, head_confidence(cf.logits, cf.lens)
            else:
                raise ValueError(f"speculative_draft must be cif or ctc, not {self.cfg.speculative_draft!r}")
            ids, self.last_decode_stats = speculative_decode(
                self.llm, rows, [draft_ids(self.llm, t) for t in draft_texts], bounds, confidence,
                self.cfg.fast_path_threshold if method == "llm_fast" else None, repeat_ngram=self.cfg.repeat_ngram)
        else:
            emb, mask = self.llm.generation_inputs(rows, images)
            with PassCounter(self.llm.model) as counter:
                ids = self.llm.generate_ids(emb, mask, bounds,
                                            num_beams=1 if method == "llm_greedy" else self.cfg.beam_size,
                                            repeat_ngram=self.cfg.repeat_ngram)
            self.last_decode_stats = greedy_stats(counter, ids)
        texts = [self.llm.decode(r) for r in ids]
        if self.cfg.llm.target_case == "lower":
            texts = [t.upper() for t in texts]
        return texts

    def set_ctc_weights(self, ctc_weight: Optional[float] = None, length_bonus: Optional[float] = None) -> None:
        """The CTC weight (in [0, 1]) and length bonus of the decodings that combine the LLM with
        the CTC head: ``llm_ctc`` (``joint_*``) and ``llm_rescore`` (``rescore_*``). None: unchanged."""
        if ctc_weight is not None:
            if not 0.0 <= ctc_weight <= 1.0:
                raise XasrError(f"the CTC weight must be in [0, 1], not {ctc_weight}")
            self.cfg.joint_ctc_weight = self.cfg.rescore_ctc_weight = float(ctc_weight)
        if length_bonus is not None:
            if not math.isfinite(length_bonus):
                raise XasrError(f"the length bonus must be a finite number, not {length_bonus}")
            self.cfg.joint_length_bonus = self.cfg.rescore_length_bonus = float(length_bonus)

    def set_lm_weights(self, weight: Optional[float] = None, token_bonus: Optional[float] = None,
                       homophone_scale: Optional[float] = None) -> None:
        """The n-gram LM's weight (>= 0) and token bonus in the CTC prefix search, and the scale of a
        unit's share of its homophone class there (in [0, 1]; the CTC head must tie homophones).
        None: unchanged."""
        for name, value in (("weight", weight), ("token bonus", token_bonus)):
            if value is not None and not (math.isfinite(value) and (value >= 0 or name != "weight")):
                raise XasrError(f"the n-gram LM's {name} must be a finite number{' >= 0' if name == 'weight' else ''}, "
                                f"not {value}")
        if homophone_scale is not None:
            if not 0.0 <= homophone_scale <= 1.0:
                raise XasrError(f"the homophone scale must be in [0, 1], not {homophone_scale}")
            if homophone_scale != 1.0 and self.unit_classes() is None:
                raise XasrError("a homophone scale needs a CTC head that ties homophones (model.unit_classes); "
                                "this model has none")
            self.cfg.homophone_scale = float(homophone_scale)
        if weight is not None:
            self.cfg.ngram.weight = float(weight)
        if token_bonus is not None:
            self.cfg.ngram.token_bonus = float(token_bonus)

    def unit_classes(self):
        """The CTC head's class id per unit (numpy, (V,)) when it ties homophones, else None."""
        classes = getattr(self.ctc.proj, "classes", None)
        return None if classes is None else classes.cpu().numpy()

    def lm_fusion(self, units):
        """A :class:`xasr.decoding.rescore.LmFusion` maker for one utterance, or None when the model
        has no n-gram LM (or its weight and bonus are both 0). The LM is read on first use."""
        from xasr.decoding.ngram import NgramLM
        from xasr.decoding.rescore import LmFusion

        c = self.cfg.ngram
        if not c.path or (c.weight == 0 and c.token_bonus == 0):
            return None
        if getattr(self, "_ngram", None) is None or self._ngram[0] != c.path:
            self._ngram = (c.path, NgramLM.read_arpa(c.path))
        if getattr(self, "_pieces", None) is None or self._pieces[0] is not units:
            self._pieces = (units, [units.id_to_piece(i) for i in range(units.get_piece_size())])
        lm, pieces = self._ngram[1], self._pieces[1]
        return lambda: LmFusion(lm, pieces, c.tokens, c.weight, c.token_bonus, c.oov_penalty)

    def ctc_nbest(self, ctc_log_probs: Tensor, h_lens: Tensor,
                  units=None) -> List[List[Tuple[Tuple[int, ...], float]]]:
        """Per utterance the CTC prefix beam search's N-best (units, log-probability), best first
        (:func:`xasr.decoding.rescore.ctc_prefix_search`, ``ctc_beam_size``), from the CTC head's
        log-probs (B, T, V). With an n-gram LM (``ngram``; ``units``, the sentencepiece processor,
        needed) the LM is fused into the search and its part is in the scores."""
        from xasr.decoding.joint_ctc import CtcPrefixScorer
        from xasr.decoding.rescore import ctc_prefix_search

        from xasr.decoding.homophones import class_log_probs

        log_probs = ctc_log_probs.float().cpu().numpy()  # (B, T, V)
        k = self.cfg.ctc_beam_size
        fusion = self.lm_fusion(units) if units is not None else None
        scale = self.cfg.homophone_scale
        classes = self.unit_classes() if scale != 1.0 else None

        def scorer(lp):
            if classes is None:
                return CtcPrefixScorer(lp, self.ctc.blank_id)
            return CtcPrefixScorer(class_log_probs(lp, classes, scale), self.ctc.blank_id, classes=classes)

        return [ctc_prefix_search(scorer(log_probs[b, :max(1, n)]), beam=k, nbest=k,
                                  lm=fusion() if fusion is not None else None)
                for b, n in enumerate(h_lens.tolist())]

    def _rescore(self, nbests, rows: List[Tensor], images, units) -> List[str]:
        """llm_rescore: each utterance's N-best texts scored by the LLM (the prompt once, the
        hypotheses as one prefix tree: ``FrozenLLM.target_logprobs``), the best under the
        combined score returned. The scored lists are left in ``last_nbest``:
        per utterance [(text, units, CTC log-probability, LLM log-probability)], CTC order."""
        from xasr.decoding.rescore import pick
        from xasr.decoding.speculative import PassCounter, greedy_stats

        texts = [[units.decode(list(y)) for y, _ in nb] for nb in nbests]
        with PassCounter(self.llm.model) as counter:
            llm_scores = self.llm.target_logprobs(rows, texts, images)
        self.last_nbest = [[(x, y, c, l) for x, (y, c), l in zip(t, nb, ls)]
                           for nb, t, ls in zip(nbests, texts, llm_scores)]
        out = [pick(scored, self.cfg.rescore_ctc_weight, self.cfg.rescore_length_bonus) for scored in self.last_nbest]
        # output tokens: the LLM's tokens of each chosen text, without the end of turn
        self.last_decode_stats = greedy_stats(counter, [self.llm.target_ids(t)[:-1] for t in out])
        return out

    def speech_embeddings(self, cf) -> Tensor:
        """The S-Adapter's output for the C-Former's vectors (and, with posterior_mix, its head's
        unit posteriors): (B, N, D_llm)."""
        if self.adapter.unit_table is None:
            return self.adapter(cf.vectors)
        return self.adapter(cf.vectors, cf.logits.float().softmax(-1))

    def length_bound(self, cif_text: str) -> int:
        n = len(self.llm.tokenizer.encode(cif_text, add_special_tokens=False)) if cif_text else 0
        return int(math.ceil(self.cfg.length_bound_factor * n)) + self.cfg.length_bound_margin
