"""Shared fixtures: tiny synthesized corpora, made once per test session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from xasr.corpora.synth import SplitSize, SynthConfig, synthesize_corpus

TINY_SIZES = {"train": SplitSize(0.02, 3), "dev": SplitSize(0.008, 2), "test": SplitSize(0.008, 2)}


def make_tiny_corpus(corpus: str, out_dir: Path, seed: int = 0, jobs: int = 2) -> Path:
    cfg = SynthConfig(corpus=corpus, out_dir=str(out_dir), seed=seed,
                      sizes={k: SplitSize(v.hours, v.speakers) for k, v in TINY_SIZES.items()}, jobs=jobs)
    synthesize_corpus(cfg)
    return out_dir


@pytest.fixture(scope="session")
def tiny_aishell(tmp_path_factory) -> Path:
    """A tiny synthesized Aishell-1 corpus; do not modify (copy it with copy_corpus)."""
    return make_tiny_corpus("aishell", tmp_path_factory.mktemp("corpora") / "aishell")


@pytest.fixture(scope="session")
def tiny_librispeech(tmp_path_factory) -> Path:
    """A tiny synthesized LibriSpeech corpus; do not modify (copy it with copy_corpus)."""
    return make_tiny_corpus("librispeech", tmp_path_factory.mktemp("corpora") / "librispeech")


def copy_corpus(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
