"""A fake recogniser kind for benchmark tests: it answers each cut's reference, changed as asked."""
from __future__ import annotations

from typing import Dict, List

import pytest

from xasr.benchmark.systems import SYSTEM_KINDS, BenchmarkSystem, SystemSpecError

SIMPLIFIED_TO_TRADITIONAL = {"这": "這", "个": "個", "们": "們", "来": "來", "说": "說"}


class EchoSystem(BenchmarkSystem):
    """``echo:ANY[:MODE]``: MODE ``same`` (the reference), ``drop`` (its last word dropped),
    ``empty`` (nothing) or ``traditional`` (some characters in traditional forms)."""

    kind = "echo"

    @classmethod
    def parse_options(cls, spec: str, args: List[str]) -> Dict[str, object]:
        mode = args[0] if args else "same"
        if mode not in ("same", "drop", "empty", "traditional"):
            raise SystemSpecError(f"system {spec!r}: unknown echo mode {mode!r}")
        return {"mode": mode}

    @classmethod
    def default_name(cls, options: Dict[str, object]) -> str:
        return f"echo-{options['mode']}"

    def load(self) -> Dict[str, object]:
        self.loaded = True
        return {"mode": self.spec.options["mode"]}

    def transcribe(self, cuts, language: str) -> Dict[str, str]:
        assert self.loaded
        self.languages = getattr(self, "languages", []) + [language]
        out = {}
        for c in cuts:
            text = " ".join(s.text for s in c.supervisions)
            mode = self.spec.options["mode"]
            if mode == "drop":
                text = " ".join(text.split()[:-1])
            elif mode == "empty":
                text = ""
            elif mode == "traditional":
                text = "".join(SIMPLIFIED_TO_TRADITIONAL.get(ch, ch) for ch in text)
            out[c.id] = text
        return out


@pytest.fixture
def echo_kind(monkeypatch):
    monkeypatch.setitem(SYSTEM_KINDS._items, "echo", EchoSystem)
    return EchoSystem
