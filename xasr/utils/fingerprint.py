"""A content fingerprint of a pretrained model's files.

In: a directory (its weight and config files: ``*.safetensors``, ``*.gguf``, ``*.bin``,
``config.json``, ``tokenizer.json``) or one weights file. Out: a sha256 hex digest over their
relative names and contents. A trained model directory records the fingerprint of each frozen
part it was trained with, and stored encoder outputs that of the encoder that made them, so that
a different model behind the same path is noticed.
"""
from __future__ import annotations

import hashlib
from pathlib import Path


def fingerprint(path: Path) -> str:
    """sha256 over the names, sizes and contents of a pretrained directory's weight/config files
    (or over the contents of one weights file)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        files, path = [path], path.parent
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and (
            p.suffix in (".safetensors", ".gguf", ".bin") or p.name in ("config.json", "tokenizer.json")))
    for p in files:
        h.update(str(p.relative_to(path)).encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()
