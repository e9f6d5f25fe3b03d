"""The registry of speech encoders: name -> encoder class (each has ``config_class``).

Encoders register themselves on import, e.g. ``"conformer"`` (:mod:`xasr.models.conformer`) and
``"whisper"`` (:mod:`xasr.models.whisper_encoder`); every one maps
``(feats (B, T, F), feat_lens (B,)) -> (h (B, T', D), h_lens (B,))``.
"""
from xasr.utils.registry import Registry

ENCODERS = Registry("encoder")
