"""Transcription outputs, written as each input finishes, and resuming an interrupted run.

In: finished :class:`xasr.transcribe.api.Transcription` items (as dictionaries).
Out, in ``out_dir``:

- ``results.jsonl``: one JSON object per input: ``id``, ``path``, ``text``, ``duration``
  (seconds), ``segments`` ([{``start``, ``end``, ``text``}], seconds), ``timing`` (seconds spent
  loading, computing features and decoding it), ``error`` (``null``, or what went wrong);
- ``text``: Kaldi ``<id> <text>`` lines (inputs that failed have none);
- with ``formats`` (``--output-format``), one file per input and format, in a folder per format:
  ``txt/<id>.txt`` (each segment's text on its own line), ``srt/<id>.srt`` and ``vtt/<id>.vtt``
  (a cue per segment with text), ``tsv/<id>.tsv`` (``start``, ``end`` in integer milliseconds,
  ``text``: whisper's columns) and ``json/<id>.json`` (the input's results.jsonl entry);
- ``settings.json``: the model (its path and weights' fingerprint), method, features and VAD
  settings the results were made with; resuming with other ones is refused.

Every line is flushed when its input finishes, so an interrupted run leaves complete lines
(and at most one cut-off last line). Run again with the same ``out_dir``, the inputs already in
``results.jsonl`` without an error are skipped; failed ones are tried again; a cut-off line is
dropped. At the end both files are rewritten in order (``results.jsonl`` in input order,
``text`` sorted by id as Kaldi tools expect), each through a temporary file and a rename.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from xasr.errors import XasrError

logger = logging.getLogger(__name__)

RESULTS = "results.jsonl"
TEXT = "text"
SETTINGS = "settings.json"
OUTPUT_FORMATS = ("txt", "vtt", "srt", "tsv", "json")
NOT_COMPARED = {"model_dir"}  # a moved model is the same model: its weights' fingerprint decides


def one_line(text: str) -> str:
    """Whitespace runs (newlines included) as single spaces: a transcript on one line."""
    return " ".join(text.split())


def kaldi_line(entry: dict) -> str:
    return f"{entry['id']} {one_line(entry['text'])}".rstrip() + "\n"


def srt_time(seconds: float) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d},{ms:03d}"


def vtt_time(seconds: float) -> str:
    return srt_time(seconds).replace(",", ".")


def _spoken(segments: Iterable[dict]) -> List[dict]:
    return [dict(seg, text=one_line(seg.get("text") or "")) for seg in segments if one_line(seg.get("text") or "")]


def srt_text(segments: Iterable[dict]) -> str:
    return "\n".join(f"{k}\n{srt_time(seg['start'])} --> {srt_time(seg['end'])}\n{seg['text']}\n"
                     for k, seg in enumerate(_spoken(segments), 1))


def format_entry(entry: dict, fmt: str) -> str:
    """One input's results.jsonl entry as a file of ``fmt`` (one of :data:`OUTPUT_FORMATS`)."""
    segments = entry.get("segments") or []
    if fmt == "srt":
        return srt_text(segments)
    if fmt == "vtt":
        return "WEBVTT\n\n" + "".join(f"{vtt_time(s['start'])} --> {vtt_time(s['end'])}\n{s['text']}\n\n"
                                      for s in _spoken(segments))
    if fmt == "txt":
        return "".join(s["text"] + "\n" for s in _spoken(segments))
    if fmt == "tsv":
        return "start\tend\ttext\n" + "".join(
            f"{int(round(s['start'] * 1000))}\t{int(round(s['end'] * 1000))}\t{s['text']}\n" for s in _spoken(segments))
    if fmt == "json":
        return json.dumps(entry, ensure_ascii=False, indent=1) + "\n"
    raise XasrError(f"unknown output format {fmt!r}; choose from {', '.join(OUTPUT_FORMATS)} or all")


def output_formats(names: Iterable[str]) -> List[str]:
    """``["all"]`` -> every format; checks the names; keeps the order of OUTPUT_FORMATS."""
    names = set(names)
    if "all" in names:
        return list(OUTPUT_FORMATS)
    unknown = sorted(names - set(OUTPUT_FORMATS))
    if unknown:
        raise XasrError(f"--output-format: unknown format {unknown[0]!r}; choose from {', '.join(OUTPUT_FORMATS)} "
                        "or all")
    return [f for f in OUTPUT_FORMATS if f in names]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_results(path: Path) -> "tuple[List[dict], int]":
    """Entries of a results file, and the number of unreadable (cut-off) lines skipped."""
    entries, bad = [], 0
    if not path.is_file():
        return entries, bad
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):  # the last line of an interrupted write
                bad += 1
                continue
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(e, dict) and "id" in e:
                entries.append(e)
            else:
                bad += 1
    return entries, bad


class OutputDir:
    """Appends results as they come; on opening, keeps what an earlier run finished."""

    def __init__(self, out_dir: str, settings: dict, formats: Iterable[str] = (), overwrite: bool = False) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.formats = output_formats(formats)
        self.results_path, self.text_path = self.dir / RESULTS, self.dir / TEXT
        settings_path = self.dir / SETTINGS
        if overwrite:
            for p in (self.results_path, self.text_path):
                if p.exists():
                    p.unlink()
            for fmt in OUTPUT_FORMATS:
                if (self.dir / fmt).is_dir():
                    shutil.rmtree(self.dir / fmt)
        elif settings_path.is_file() and self.results_path.is_file():
            try:
                old = json.loads(settings_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise XasrError(f"{settings_path}: unreadable ({e}); pass --overwrite to start afresh") from None
            diff = [k for k in sorted(set(old) | set(settings))
                    if k not in NOT_COMPARED and old.get(k) != settings.get(k)]
            if diff:
                raise XasrError(
                    f"{self.results_path} holds results made with other settings ({', '.join(diff)}: "
                    + "; ".join(f"{k} was {old.get(k)!r}, now {settings.get(k)!r}" for k in diff)
                    + "); choose another output directory or pass --overwrite")
        _write_atomic(settings_path, json.dumps(settings, indent=1, ensure_ascii=False) + "\n")
        entries, bad = read_results(self.results_path)
        self.done: Dict[str, dict] = {}
        failed = 0
        for e in entries:
            if e.get("error"):
                failed += 1
                self.done.pop(e["id"], None)
            else:
                self.done[e["id"]] = e
        if entries or bad:
            logger.info("%s: %d inputs already transcribed are kept%s%s", self.results_path, len(self.done),
                        f"; {failed} that failed will be tried again" if failed else "",
                        f"; {bad} cut-off line(s) dropped" if bad else "")
        # Start from a consistent state: exactly the finished entries, in both files.
        kept = list(self.done.values())
        _write_atomic(self.results_path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in kept))
        _write_atomic(self.text_path, "".join(kaldi_line(e) for e in kept))
        for fmt in self.formats:  # results kept from a run without this format
            for e in kept:
                if not self.format_path(e["id"], fmt).is_file():
                    self._write_format(e, fmt)
        self.new: Dict[str, dict] = {}
        self._results = open(self.results_path, "a", encoding="utf-8")
        self._text = open(self.text_path, "a", encoding="utf-8")

    def write(self, entry: dict) -> None:
        """Append one finished input (flushed at once)."""
        self._results.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._results.flush()
        if not entry.get("error"):
            self._text.write(kaldi_line(entry))
            self._text.flush()
            for fmt in self.formats:
                self._write_format(entry, fmt)
        self.new[entry["id"]] = entry

    def format_path(self, uid: str, fmt: str) -> Path:
        """<fmt>/<id>.<fmt>; an id with '/' makes sub-folders, unless a part would leave <fmt>/."""
        parts = uid.split("/")
        if any(p in ("", ".", "..") for p in parts):
            parts = [uid.replace("/", "_")]
        return self.dir.joinpath(fmt, *parts[:-1], parts[-1] + "." + fmt)

    def _write_format(self, entry: dict, fmt: str) -> None:
        path = self.format_path(entry["id"], fmt)
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, format_entry(entry, fmt))

    def finish(self, order: Optional[List[str]] = None) -> List[dict]:
        """Close, then rewrite the files in order; returns every entry (old and new)."""
        self.close()
        merged = dict(self.done)
        merged.update(self.new)
        rank = {i: k for k, i in enumerate(order or [])}
        entries = sorted(merged.values(), key=lambda e: (rank.get(e["id"], len(rank)), e["id"]))
        _write_atomic(self.results_path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
        _write_atomic(self.text_path, "".join(kaldi_line(e) for e in sorted(entries, key=lambda e: e["id"])
                                              if not e.get("error")))
        return entries

    def close(self) -> None:
        for f in (self._results, self._text):
            if not f.closed:
                f.close()
