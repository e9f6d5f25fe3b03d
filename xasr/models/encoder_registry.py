"""The registry of speech encoders: name -> encoder class (each has ``config_class``).

Encoders register themselves on import, e.g. ``"conformer"`` (:mod:`xasr.models.conformer`) and
``"whisper"`` (:mod:`xasr.models.whisper_encoder`); every one maps
``(feats (B, T, F), feat_lens (B,)) -> (h (B, T', D), h_lens (B,))`` and offers what the model
and the encoder-output cache ask of any encoder: ``Encoder(cfg, models_dir=None)``,
``output_dim``, ``pretrained_dir`` (the directory of pretrained weights it loaded, or None),
``frozen`` (its pretrained part never trains: its outputs may be stored),
``pretrained_param_names()`` (the parameters that stay the pretrained model's and are never
saved), and the class methods ``cache_identity(cfg, models_dir)`` (what makes two encoders'
frozen parts give the same outputs; refused for an encoder that trains) and
``from_identity(identity)`` (the encoder an identity names). A frozen encoder also splits its
forward into ``forward_frozen(feats, feat_lens)`` (what is stored) and ``forward_trained(h, h_lens)``
(layers on top of it that may train; the identity when none do).
"""
from xasr.utils.registry import Registry

ENCODERS = Registry("encoder")
