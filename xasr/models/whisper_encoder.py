"""Pretrained Whisper encoder for variable-length input.

In: ``feats`` (B, T, n_mels) Whisper log-mel features
(:func:`xasr.data.whisper_mel.whisper_log_mel`: 10 ms frames, 80 bins for the base model) and
their lengths ``feat_lens`` (B,); the weights come from a local transformers Whisper directory
(``xasr models install whisper-base`` or the user's own), named by an installed model name or a
path (:func:`xasr.pretrained.install.resolve_model_dir`).
Out: ``h`` (B, T // 2, d_model) and ``h_lens = feat_lens // 2`` (B,); positions beyond
``h_lens`` are zero.

transformers' ``WhisperEncoder.forward`` only accepts 30-s inputs (3000 frames). This module
reuses its parameters (conv front-end, learned positions, layers, final norm) but runs them
itself: conv front-end, plus ``embed_positions[:T // 2]``, then the layers with a key-padding
mask, so any length up to 30 s works and a padded batch gives each item what it gives alone.

Exactness: for an input of T frames (T even, T <= 3000) the output equals transformers'
encoder built with ``max_source_positions = T // 2`` (its positions sliced), and for T = 3000
it equals the stock 30-s encoder. It does NOT equal the 30-s encoder's output on the valid
frames of a shorter utterance padded to 30 s: there every frame also attends to the padding
frames (log-mel of silence), which changes all outputs. A model trained on top of this encoder
must therefore use the same (unpadded) convention at training and test time.

Odd lengths: the stride-2 conv would give ``ceil(T / 2)`` frames, the last one reading the
frame after the utterance (padding inside a batch). That frame is dropped, so
``h_lens = feat_lens // 2`` and outputs never depend on padding.

Adapting the top: with ``train_top: N`` (and ``freeze: true``) the last N transformer layers and
the final LayerNorm start from Whisper's weights and train; the rest stays frozen. The encoder
then runs in two parts, :meth:`forward_frozen` (conv front-end, positions, the frozen layers:
what ``xasr cache-encoder`` stores) and :meth:`forward_trained` (the top layers and the norm), so
training on stored outputs costs one pass of the frozen part, as with N = 0.

Several layers: with ``output_layers: N`` (N > 1) the output is the top N kept layers' outputs,
each through the final norm, side by side: (B, T // 2, N * D). The contextual head's projection
then learns how to weigh and mix them, as the downstream models of the SUPERB benchmark learn a
weighted sum of a frozen model's layers (Yang et al. 2021, arXiv 2105.01051): an intermediate
layer holds more of the phones, the layers above more context. ``output_layers: 1`` is the kept
top layer alone, as before.

Registered as ``"whisper"`` in :data:`xasr.models.encoder_registry.ENCODERS`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xasr.errors import XasrError
from xasr.models.encoder_registry import ENCODERS

logger = logging.getLogger(__name__)

@dataclass
class WhisperEncoderConfig:
    model_dir: str = "whisper-base"  # installed model name or a transformers Whisper directory
    freeze: bool = True  # no gradients, always in eval mode
    num_layers: Optional[int] = None  # keep only the first N transformer layers (None: all)
    train_top: int = 0  # with freeze: the top N kept layers and the final norm train (0: none)
    output_layers: int = 1  # the top N kept layers' outputs (each through the final norm), side by side


@ENCODERS.register("whisper")
class WhisperSpeechEncoder(nn.Module):
    """Whisper encoder; ``forward(feats (B, T, n_mels), feat_lens (B,)) -> (h (B, T // 2, D), h_lens (B,))``."""

    config_class = WhisperEncoderConfig

    def __init__(self, cfg: WhisperEncoderConfig, models_dir: Optional[str] = None) -> None:
        super().__init__()
        from safetensors import safe_open
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        from xasr.pretrained.install import resolve_model_dir

        self.cfg = cfg
        model_dir = resolve_model_dir(cfg.model_dir, models_dir)
        cfg.model_dir = str(model_dir)  # the config names the directory the weights came from
        self.pretrained_dir = model_dir
        config = WhisperConfig.from_pretrained(model_dir)
        total = config.encoder_layers
        if cfg.num_layers is not None:
            if not 1 <= cfg.num_layers <= total:
                raise XasrError(f"num_layers={cfg.num_layers}: {model_dir} has {total} encoder layers")
            config.encoder_layers = cfg.num_layers
        if not 0 <= cfg.train_top <= config.encoder_layers:
            raise XasrError(f"train_top={cfg.train_top}: the encoder keeps {config.encoder_layers} layers")
        if not 1 <= cfg.output_layers <= config.encoder_layers:
            raise XasrError(f"output_layers={cfg.output_layers}: the encoder keeps {config.encoder_layers} layers")
        if cfg.output_layers > 1 and cfg.train_top:
            raise XasrError(f"output_layers={cfg.output_layers} with train_top={cfg.train_top}: "
                            "the top layers train or several layers are read, not both")
        if cfg.train_top and not cfg.freeze:
            raise XasrError("train_top needs freeze: true (with freeze: false every layer trains already)")
        config._attn_implementation = "sdpa"
        self.encoder = WhisperEncoder(config)
        state = {}
        files = sorted(model_dir.glob("*.safetensors"))
        if not files:
            raise XasrError(f"{model_dir} has no *.safetensors weights")
        own = set(self.encoder.state_dict())
        for path in files:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    for prefix in ("model.encoder.", "encoder."):
                        if key.startswith(prefix) and key[len(prefix):] in own:
                            state[key[len(prefix):]] = f.get_tensor(key)
        missing = own - set(state)
        if missing:
            raise XasrError(f"{model_dir}: encoder weights missing: {', '.join(sorted(missing)[:5])}")
        self.encoder.load_state_dict(state, strict=True)
        self.encoder.float()
        self.num_mel_bins = config.num_mel_bins
        self.max_frames = 2 * config.max_source_positions
        self.num_frozen_layers = config.encoder_layers - cfg.train_top
        logger.info("Whisper encoder from %s: %d of %d layers%s, d_model %d, %.1fM parameters%s", model_dir,
                    config.encoder_layers, total,
                    f" (the top {cfg.output_layers} read side by side)" if cfg.output_layers > 1 else "",
                    config.d_model,
                    sum(p.numel() for p in self.encoder.parameters()) / 1e6,
                    (f", the top {cfg.train_top} layers train" if cfg.train_top else ", frozen") if cfg.freeze else "")
        if cfg.freeze:
            self.encoder.requires_grad_(False)
            for part in self._top_modules():
                part.requires_grad_(True)
            self.encoder.eval()

    frame_shift = 0.02  # seconds per output frame: 10-ms mel frames, halved by the second convolution

    @property
    def output_dim(self) -> int:
        return self.encoder.config.d_model * self.cfg.output_layers

    @property
    def frozen(self) -> bool:
        return self.cfg.freeze

    def _top_modules(self) -> List[nn.Module]:
        """The parts that train with ``train_top`` (the top layers and the final norm)."""
        if not self.cfg.train_top:
            return []
        return [*self.encoder.layers[self.num_frozen_layers:], self.encoder.layer_norm]

    def pretrained_param_names(self) -> List[str]:
        """Names (in this module) of the parameters that stay Whisper's own and are never saved."""
        if not self.cfg.freeze:
            return []
        trained = {id(p) for m in self._top_modules() for p in m.parameters()}
        return [n for n, p in self.named_parameters() if id(p) not in trained]

    @classmethod
    def cache_identity(cls, cfg: WhisperEncoderConfig, models_dir: Optional[str] = None) -> dict:
        """Path, weights fingerprint, layer count, trained top and layers read: what makes two
        encoders' frozen parts give the same outputs."""
        from xasr.pretrained.install import resolve_model_dir
        from xasr.utils.fingerprint import fingerprint

        if not cfg.freeze:
            raise XasrError("model.encoder.whisper.freeze is false: a trained encoder cannot be cached")
        d = resolve_model_dir(cfg.model_dir, models_dir)
        return {"encoder": "whisper", "path": str(d), "fingerprint": fingerprint(d), "num_layers": cfg.num_layers,
                "train_top": cfg.train_top, "output_layers": cfg.output_layers}

    @classmethod
    def from_identity(cls, identity: dict) -> "WhisperSpeechEncoder":
        return cls(WhisperEncoderConfig(model_dir=identity["path"], freeze=True, num_layers=identity["num_layers"],
                                        train_top=int(identity.get("train_top", 0)),
                                        output_layers=int(identity.get("output_layers", 1))))

    def output_lengths(self, feat_lens: Tensor) -> Tensor:
        """Encoder output lengths for input lengths (B,) -> (B,)."""
        return feat_lens // 2

    def train(self, mode: bool = True) -> "WhisperSpeechEncoder":
        super().train(mode)
        if self.cfg.freeze:
            self.encoder.eval()
            for part in self._top_modules():
                part.train(mode)
        return self

    def forward(self, feats: Tensor, feat_lens: Tensor) -> Tuple[Tensor, Tensor]:
        return self.forward_trained(*self.forward_frozen(feats, feat_lens))

    def forward_frozen(self, feats: Tensor, feat_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """The frozen part: conv front-end, positions and the frozen layers (with ``train_top: 0``
        also the final norm: the whole encoder). (B, T, n_mels), (B,) -> (B, T // 2, D), (B,)
        (D = d_model x output_layers)."""
        if feats.dim() != 3 or feats.size(-1) != self.num_mel_bins:
            raise XasrError(f"expected feats (B, T, {self.num_mel_bins}), got {tuple(feats.shape)}")
        if feats.size(1) > self.max_frames:
            raise XasrError(f"{feats.size(1)} frames exceed Whisper's {self.max_frames} (30 s): split the audio")
        enc = self.encoder
        T = feats.shape[1]
        feat_lens = feat_lens.to(feats.device)
        in_valid = torch.arange(T, device=feats.device)[None, :] < feat_lens[:, None]  # (B, T)
        x = feats.masked_fill(~in_valid[:, :, None], 0.0).transpose(1, 2)  # (B, n_mels, T)
        x = F.gelu(enc.conv1(x))  # (B, D, T)
        x = F.gelu(enc.conv2(x))  # (B, D, ceil(T / 2))
        T2 = T // 2
        x = x[:, :, :T2].transpose(1, 2)  # (B, T2, D)
        x = x + enc.embed_positions.weight[:T2].to(x.dtype)
        x = F.dropout(x, p=enc.dropout, training=enc.training)
        h_lens = self.output_lengths(feat_lens)  # (B,)
        return self._layers(x, h_lens, enc.layers[:self.num_frozen_layers], final_norm=not self.cfg.train_top,
                            keep=self.cfg.output_layers)

    def forward_trained(self, x: Tensor, h_lens: Tensor) -> Tuple[Tensor, Tensor]:
        """The top layers and the final norm on the frozen part's output (unchanged without ``train_top``)."""
        if not self.cfg.train_top:
            return x, h_lens
        return self._layers(x, h_lens.to(x.device), self.encoder.layers[self.num_frozen_layers:], final_norm=True)

    def _layers(self, x: Tensor, h_lens: Tensor, layers, final_norm: bool, keep: int = 1) -> Tuple[Tensor, Tensor]:
        """``layers`` with a key-padding mask over (B, T2, D), then the final norm if asked; with
        ``keep`` > 1 the outputs of the last ``keep`` layers, each normed, side by side
        (B, T2, keep * D); positions beyond ``h_lens`` are zero."""
        B, T2, _ = x.shape
        valid = torch.arange(T2, device=x.device)[None, :] < h_lens[:, None]  # (B, T2)
        mask = None
        if not bool(valid.all()):
            # additive key-padding mask (B, 1, T2, T2); an empty item attends to everything (no NaN)
            key_ok = valid | (h_lens == 0)[:, None]
            mask = torch.zeros(B, 1, 1, T2, dtype=x.dtype, device=x.device)
            mask = mask.masked_fill(~key_ok[:, None, None, :], torch.finfo(x.dtype).min).expand(B, 1, T2, T2)
        outs = []  # with keep > 1 (only with the final norm): the last keep layers' normed outputs
        for i, layer in enumerate(layers):
            x = layer(x, mask)
            if keep > 1 and i >= len(layers) - keep:
                outs.append(self.encoder.layer_norm(x))
        if outs:
            x = torch.cat(outs, dim=-1)
        elif final_norm:
            x = self.encoder.layer_norm(x)
        return x.masked_fill(~valid[:, :, None], 0.0), h_lens  # (B, T2, keep * D), (B,)
