"""The registry of speech encoders: name -> encoder class (each has ``config_class``).

Encoders register themselves on import, e.g. ``"conformer"`` (:mod:`xasr.models.conformer`) and
``"whisper"`` (:mod:`xasr.models.whisper_encoder`); every one maps
``(feats (B, T, F), feat_lens (B,)) -> (h (B, T', D), h_lens (B,))`` and offers what the model
and the encoder-output cache ask of any encoder: ``Encoder(cfg, models_dir=None)``,
``output_dim``, ``pretrained_dir`` (the directory of pretrained weights it loaded, or None),
``frozen`` (its weights never train), and the class methods ``cache_identity(cfg, models_dir)``
(what makes two encoders give the same outputs; refused for an encoder that trains) and
``from_identity(identity)`` (the frozen encoder an identity names).
"""
from xasr.utils.registry import Registry

ENCODERS = Registry("encoder")
