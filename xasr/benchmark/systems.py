"""Speech recognisers to benchmark, named on the command line by a small spec syntax.

In: a spec string ``[NAME=]KIND:PATH[:OPTION...]``; OUT: a :class:`SystemSpec` (checked
without loading anything) and, from it, a :class:`BenchmarkSystem` that loads the model and
turns lhotse cuts into ``{cut id: text}``.

Kinds (:data:`SYSTEM_KINDS`):

  ``xasr:MODEL_DIR[:METHOD][:max_duration=S][:repeat_ngram=N][:ctc_weight=W][:length_bonus=B][:homophone_scale=H][:llm_vocab=V][:prompt_draft=D]``
      a trained xasr model directory decoded with METHOD, any name in
      :data:`xasr.decoding.methods.METHODS` (default ``llm_greedy``); batches of at most
      S seconds of audio (default 60) through :func:`xasr.decoding.dataset_decode.decode_cuts`;
      W (in [0, 1]) and B override the model's CTC weight and length bonus for ``llm_ctc``
      and ``llm_rescore`` (``DecodingOptions.with_ctc_weights``), H (in [0, 1]) its homophone
      scale in the CTC prefix search of ``ctc_beam`` and ``llm_rescore`` (``DecodingOptions``),
      V (``full`` or ``units``) the tokens the LLM scores in the LLM decodings (:mod:`xasr.decoding.vocab`),
      D (``ctc_greedy``, ``ctc_beam`` or ``none``) the draft in the LLM's prompt for a model trained
      with drafts (``model.prompt_draft``, ``model.rescore_draft`` for ``llm_rescore``).
  ``faster-whisper:CT2_DIR[:COMPUTE_TYPE][:beam=N][:fallback]``
      ``faster_whisper.WhisperModel`` on a CTranslate2 Whisper directory (a directory with
      ``model.bin``, one holding ``ct2/model.bin`` such as an installed ``whisper-base``, or an
      installed model name); COMPUTE_TYPE defaults to ``int8``, N to 5 (faster-whisper's and
      Whisper's own default beam search; ``beam=1`` is greedy); no temperature
      fallback unless ``fallback`` is given (Whisper's default: resample at rising temperatures
      when the output repeats itself; not deterministic); language forced from the test set, no
      timestamps, one utterance at a time.
  ``hf-whisper:WHISPER_DIR[:batch=N]``
      transformers ``WhisperForConditionalGeneration`` + ``WhisperProcessor`` from a local
      directory or an installed model name, greedy, language forced, N utterances per call
      (default 1).

NAME (letters, digits, ``_ . + -``) names the system in tables and file names; without one
the name is the method (xasr), ``faster-whisper-<type>-beam<N>`` (``-greedy`` for N = 1) or
``hf-whisper``.

    parse_system_spec("llm=xasr:exp/stage2/model:llm_greedy")
    parse_system_spec("faster-whisper:whisper-base:int8:beam=5")
"""
from __future__ import annotations

import gc
import logging
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Type

from xasr.errors import XasrError
from xasr.utils.registry import Registry

logger = logging.getLogger(__name__)

NAME_PATTERN = r"[A-Za-z0-9_.+-]+"
_NAMED = re.compile(rf"^({NAME_PATTERN})=(.*)$", re.DOTALL)

FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # Whisper's and faster-whisper's default
CT2_COMPUTE_TYPES = ("int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16",
                     "bfloat16", "float32", "default", "auto")


class SystemSpecError(XasrError):
    """A system spec cannot be understood."""


@dataclass(frozen=True)
class SystemSpec:
    """A parsed system spec: what to load and how to decode with it."""

    name: str
    kind: str
    path: str
    options: Dict[str, object] = field(default_factory=dict)
    text: str = ""  # the spec as given


@dataclass
class RunSettings:
    """Settings shared by every system of a benchmark, so that speeds are comparable."""

    threads: int = 2
    device: str = "cpu"
    models_dir: Optional[str] = None


SYSTEM_KINDS: Registry[Type["BenchmarkSystem"]] = Registry("system kind")


def _split_option(item: str) -> Tuple[Optional[str], str]:
    if "=" in item:
        key, value = item.split("=", 1)
        return key.strip(), value.strip()
    return None, item.strip()


def _positive_int(spec: str, key: str, value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise SystemSpecError(f"system {spec!r}: {key} must be a positive integer, got {value!r}")
    return n


def _positive_float(spec: str, key: str, value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        x = 0.0
    if not x > 0:
        raise SystemSpecError(f"system {spec!r}: {key} must be a positive number, got {value!r}")
    return x


def parse_system_spec(text: str) -> SystemSpec:
    """``[NAME=]KIND:PATH[:OPTION...]`` -> :class:`SystemSpec`; raises :class:`SystemSpecError`.

    Only the spec is checked (kind, options, decoding method); paths are checked on load.
    """
    raw = text.strip()
    name: Optional[str] = None
    body = raw
    m = _NAMED.match(raw)
    if m and ":" not in m.group(1):
        name, body = m.group(1), m.group(2)
    elif "=" in raw.split(":", 1)[0]:
        raise SystemSpecError(f"system {text!r}: a system name may only hold letters, digits and _ . + - "
                              "(NAME=KIND:PATH[:OPTION...])")
    parts = body.split(":")
    if len(parts) < 2 or not parts[0]:
        raise SystemSpecError(f"system {text!r} is not KIND:PATH[:OPTION...]; kinds: "
                              f"{', '.join(SYSTEM_KINDS.names())}")
    kind, path, args = parts[0].strip(), parts[1].strip(), parts[2:]
    try:
        cls = SYSTEM_KINDS.get(kind)
    except KeyError as e:
        raise SystemSpecError(f"system {text!r}: {e.args[0]}") from None
    if not path:
        raise SystemSpecError(f"system {text!r}: the path after {kind}: is empty")
    options = cls.parse_options(text, [a for a in args])
    return SystemSpec(name=name or cls.default_name(options), kind=kind, path=path, options=options, text=raw)


def parse_system_specs(texts: List[str]) -> List[SystemSpec]:
    """Parse several specs; names must be unique (a clash asks for NAME=...)."""
    specs = [parse_system_spec(t) for t in texts]
    seen: Dict[str, str] = {}
    for s in specs:
        if s.name in seen:
            raise SystemSpecError(f"systems {seen[s.name]!r} and {s.text!r} are both called {s.name!r}: "
                                  "name them, e.g. ctc1=xasr:...")
        seen[s.name] = s.text
    if not specs:
        raise SystemSpecError("no system to benchmark: give at least one --system")
    return specs


def make_system(spec: SystemSpec, settings: RunSettings) -> "BenchmarkSystem":
    return SYSTEM_KINDS.get(spec.kind)(spec, settings)


# ---------------------------------------------------------------------------------------------
# Systems
# ---------------------------------------------------------------------------------------------

class BenchmarkSystem:
    """A recogniser: :meth:`load` once, :meth:`transcribe` each test set, :meth:`unload`."""

    kind = ""

    def __init__(self, spec: SystemSpec, settings: RunSettings) -> None:
        self.spec = spec
        self.settings = settings

    @classmethod
    def parse_options(cls, spec: str, args: List[str]) -> Dict[str, object]:
        raise NotImplementedError

    @classmethod
    def default_name(cls, options: Dict[str, object]) -> str:
        raise NotImplementedError

    def load(self) -> Dict[str, object]:
        """Load the model; returns facts for the report (resolved paths, sizes)."""
        raise NotImplementedError

    def transcribe(self, cuts, language: str) -> Dict[str, str]:
        """``{cut id: text}`` for every cut; ``language`` is ``en``, ``zh``, ..."""
        raise NotImplementedError

    def decode_work(self) -> Optional[Dict[str, float]]:
        """LLM work of the last transcribe() (passes, output tokens), or None for systems without an LLM."""
        return None

    def unload(self) -> None:
        for k in list(vars(self)):
            if k not in ("spec", "settings"):
                setattr(self, k, None)
        gc.collect()


def _set_torch_threads(n: int) -> None:
    import torch

    if n > 0:
        torch.set_num_threads(n)


@SYSTEM_KINDS.register("xasr")
class XasrSystem(BenchmarkSystem):
    """A trained xasr model directory with one decoding method."""

    kind = "xasr"

    @classmethod
    def parse_options(cls, spec: str, args: List[str]) -> Dict[str, object]:
        from xasr.decoding.methods import method_names

        opts: Dict[str, object] = {"method": "llm_greedy", "max_duration": 60.0}
        methods = 0
        for a in args:
            key, value = _split_option(a)
            if key is None:
                if value not in method_names():
                    raise SystemSpecError(f"system {spec!r}: unknown decoding method {value!r}; choose from "
                                          f"{', '.join(method_names())}")
                methods += 1
                opts["method"] = value
            elif key == "max_duration":
                opts["max_duration"] = _positive_float(spec, key, value)
            elif key == "repeat_ngram":
                if not value.isdigit():
                    raise SystemSpecError(f"system {spec!r}: repeat_ngram must be a whole number >= 0 (0: off), "
                                          f"got {value!r}")
                opts["repeat_ngram"] = int(value)
            elif key == "llm_vocab":
                from xasr.decoding.options import VOCABS

                if value not in VOCABS:
                    raise SystemSpecError(f"system {spec!r}: llm_vocab must be {' or '.join(VOCABS)}, got {value!r}")
                opts["llm_vocab"] = value
            elif key == "prompt_draft":
                from xasr.decoding.options import PROMPT_DRAFTS

                if value not in PROMPT_DRAFTS:
                    raise SystemSpecError(f"system {spec!r}: prompt_draft must be {', '.join(PROMPT_DRAFTS)}, "
                                          f"got {value!r}")
                opts["prompt_draft"] = value
            elif key in ("ctc_weight", "length_bonus", "homophone_scale"):
                try:
                    x = float(value)
                except ValueError:
                    x = float("nan")
                unit_range = key != "length_bonus"
                if not (0.0 <= x <= 1.0 if unit_range else math.isfinite(x)):
                    raise SystemSpecError(f"system {spec!r}: {key} must be a number"
                                          f"{' in [0, 1]' if unit_range else ''}, got {value!r}")
                opts[key] = x
            else:
                raise SystemSpecError(f"system {spec!r}: unknown option {a!r} for xasr (a decoding method, "
                                      "max_duration=SECONDS, repeat_ngram=N, ctc_weight=W, length_bonus=B, "
                                      "homophone_scale=H, llm_vocab=full|units or prompt_draft=ctc_greedy|ctc_beam|none)")
        if methods > 1:
            raise SystemSpecError(f"system {spec!r}: give one decoding method per system")
        return opts

    @classmethod
    def default_name(cls, options: Dict[str, object]) -> str:
        return str(options["method"])

    def load(self) -> Dict[str, object]:
        from xasr.decoding.methods import options_for
        from xasr.model_dir import load_model_dir

        _set_torch_threads(self.settings.threads)
        d = Path(self.spec.path)
        if not d.is_dir():
            raise XasrError(f"system {self.spec.name}: model directory {d} does not exist")
        self.model, self.cfg, self.units = load_model_dir(str(d), models_dir=self.settings.models_dir,
                                                          device=self.settings.device)
        self.features = self.cfg.data.features
        o = self.spec.options
        self.opts = options_for(self.model, homophone_scale=o.get("homophone_scale"), repeat_ngram=o.get("repeat_ngram"),
                                llm_vocab=o.get("llm_vocab"), prompt_draft=o.get("prompt_draft"),
                                rescore_draft=o.get("prompt_draft")).with_ctc_weights(o.get("ctc_weight"),
                                                                                      o.get("length_bonus"))
        method = str(self.spec.options["method"])
        if method.startswith("llm") and not self.cfg.model.use_llm:
            raise XasrError(f"system {self.spec.name}: {method} needs a model trained with the LLM (stage 2), "
                            f"but {d} is a stage-1 model (use ctc_greedy or cif_greedy)")
        n_params = sum(p.numel() for p in self.model.parameters())
        c = self.opts  # the decoding settings in effect: the model's own (decoding.json's) or the spec's
        return {"model_dir": str(d.resolve()), "features": self.features, "encoder": self.cfg.model.encoder.name,
                "use_llm": bool(self.cfg.model.use_llm), "parameters": n_params,
                "decoding": {"rescore_ctc_weight": c.rescore_ctc_weight, "rescore_length_bonus": c.rescore_length_bonus,
                             "homophone_scale": c.homophone_scale, "lm_weight": c.lm_weight,
                             "lm_token_bonus": c.lm_token_bonus, "llm_vocab": c.llm_vocab,
                             "prompt_draft": c.rescore_draft if self.spec.options["method"] == "llm_rescore"
                             else c.prompt_draft}}

    def transcribe(self, cuts, language: str) -> Dict[str, str]:
        from xasr.decoding.dataset_decode import decode_cuts
        from xasr.decoding.speculative import DecodeStats

        method = str(self.spec.options["method"])
        max_duration = float(self.spec.options["max_duration"])
        # decode_cuts gives lhotse's bucketing sampler an eager CutSet on purpose (a test set is small)
        warnings.filterwarnings("ignore", message="You are using DynamicBucketingSampler with an eagerly read")
        self._stats = DecodeStats()
        return decode_cuts(self.model, self.units, cuts, method, self.features, max_duration, self.settings.device,
                           stats=self._stats, opts=self.opts)

    def decode_work(self) -> Optional[Dict[str, float]]:
        st = getattr(self, "_stats", None)
        if st is None or not str(self.spec.options["method"]).startswith("llm"):
            return None
        return {"llm_passes": st.row_passes, "output_tokens": st.output_tokens, "utterances": st.utterances,
                "draft_tokens": st.draft_tokens, "accepted_tokens": st.accepted_tokens, "fast_path": st.fast_path}


def find_ct2_dir(path_or_name: str, models_dir: Optional[str] = None) -> Path:
    """A CTranslate2 Whisper directory: ``PATH`` itself if it holds ``model.bin``, else
    ``PATH/ct2`` (where ``xasr models install whisper-base`` keeps the original faster-whisper
    files); ``PATH`` may be an installed model name."""
    from xasr.pretrained.errors import ModelInstallError
    from xasr.pretrained.install import resolve_model_dir

    candidates = [Path(path_or_name).expanduser()]
    try:
        resolved = resolve_model_dir(path_or_name, models_dir)
        if resolved not in candidates:
            candidates.append(resolved)
    except ModelInstallError:
        pass
    for d in candidates:
        for c in (d, d / "ct2"):
            if (c / "model.bin").is_file():
                return c
    raise XasrError(f"{path_or_name}: no CTranslate2 Whisper model here (neither model.bin nor ct2/model.bin); "
                    "`xasr models install whisper-base` puts one in <models dir>/whisper-base/ct2")


@SYSTEM_KINDS.register("faster-whisper")
class FasterWhisperSystem(BenchmarkSystem):
    """faster-whisper (CTranslate2) on a local directory."""

    kind = "faster-whisper"

    @classmethod
    def parse_options(cls, spec: str, args: List[str]) -> Dict[str, object]:
        opts: Dict[str, object] = {"compute_type": "int8", "beam": 5, "fallback": False}
        for a in args:
            key, value = _split_option(a)
            if key is None and value == "fallback":
                opts["fallback"] = True
            elif key is None or key == "compute_type":
                if value not in CT2_COMPUTE_TYPES:
                    raise SystemSpecError(f"system {spec!r}: unknown compute type {value!r}; choose from "
                                          f"{', '.join(CT2_COMPUTE_TYPES)}")
                opts["compute_type"] = value
            elif key in ("beam", "beam_size"):
                opts["beam"] = _positive_int(spec, key, value)
            else:
                raise SystemSpecError(f"system {spec!r}: unknown option {a!r} for faster-whisper "
                                      f"(a compute type, beam=N or fallback)")
        return opts

    @classmethod
    def default_name(cls, options: Dict[str, object]) -> str:
        beam = int(options["beam"])
        return (f"faster-whisper-{options['compute_type']}" + (f"-beam{beam}" if beam != 1 else "-greedy")
                + ("-fallback" if options["fallback"] else ""))

    def load(self) -> Dict[str, object]:
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:
            raise XasrError(f"system {self.spec.name}: faster-whisper is not installed ({e})") from None
        d = find_ct2_dir(self.spec.path, self.settings.models_dir)
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)  # one INFO line per utterance otherwise
        device = "cuda" if self.settings.device.startswith("cuda") else "cpu"
        self.model = WhisperModel(str(d), device=device, compute_type=str(self.spec.options["compute_type"]),
                                  cpu_threads=self.settings.threads, num_workers=1)
        return {"ct2_dir": str(d.resolve())}

    def transcribe(self, cuts, language: str) -> Dict[str, str]:
        from xasr.utils.progress import progress

        beam = int(self.spec.options["beam"])
        # greedy / beam search alone, or with Whisper's fallback to sampling at rising temperatures
        # when the output repeats itself (compression ratio) or is improbable (not deterministic)
        temperature = FALLBACK_TEMPERATURES if self.spec.options.get("fallback") else 0.0
        hyps: Dict[str, str] = {}
        bar = progress(len(cuts), f"decoding ({self.spec.name})", unit="utt")
        for cut in cuts:
            audio = cut.load_audio()[0]
            segments, _ = self.model.transcribe(
                audio, language=language, task="transcribe", beam_size=beam, best_of=5, temperature=temperature,
                without_timestamps=True, condition_on_previous_text=False, vad_filter=False)
            hyps[cut.id] = "".join(s.text for s in segments).strip()  # the generator decodes here
            bar.update(1)
        bar.close()
        return hyps


@SYSTEM_KINDS.register("hf-whisper")
class HfWhisperSystem(BenchmarkSystem):
    """transformers Whisper, greedy."""

    kind = "hf-whisper"

    @classmethod
    def parse_options(cls, spec: str, args: List[str]) -> Dict[str, object]:
        opts: Dict[str, object] = {"batch": 1}
        for a in args:
            key, value = _split_option(a)
            if key in ("batch", "batch_size"):
                opts["batch"] = _positive_int(spec, key, value)
            else:
                raise SystemSpecError(f"system {spec!r}: unknown option {a!r} for hf-whisper (batch=N)")
        return opts

    @classmethod
    def default_name(cls, options: Dict[str, object]) -> str:
        return "hf-whisper"

    def load(self) -> Dict[str, object]:
        import torch
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        from xasr.pretrained.install import resolve_model_dir

        _set_torch_threads(self.settings.threads)
        d = resolve_model_dir(self.spec.path, self.settings.models_dir)
        if not (d / "config.json").is_file():
            raise XasrError(f"system {self.spec.name}: {d} is not a transformers Whisper directory "
                            "(config.json is missing)")
        self.model = WhisperForConditionalGeneration.from_pretrained(str(d), dtype=torch.float32)
        self.model.to(self.settings.device).eval()
        self.processor = WhisperProcessor.from_pretrained(str(d))
        return {"model_dir": str(Path(d).resolve()), "parameters": sum(p.numel() for p in self.model.parameters())}

    def transcribe(self, cuts, language: str) -> Dict[str, str]:
        import torch

        from xasr.utils.progress import progress

        batch = int(self.spec.options["batch"])
        cut_list = list(cuts)
        hyps: Dict[str, str] = {}
        bar = progress(len(cut_list), f"decoding ({self.spec.name})", unit="utt")
        for i in range(0, len(cut_list), batch):
            chunk = cut_list[i:i + batch]
            audio = [c.load_audio()[0] for c in chunk]
            inputs = self.processor(audio, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
            with torch.inference_mode():
                out = self.model.generate(inputs["input_features"].to(self.settings.device),
                                          attention_mask=inputs["attention_mask"].to(self.settings.device),
                                          language=language, task="transcribe", do_sample=False, num_beams=1)
            texts = self.processor.batch_decode(out, skip_special_tokens=True)
            for c, t in zip(chunk, texts):
                hyps[c.id] = t.strip()
            bar.update(len(chunk))
        bar.close()
        return hyps


def available_kinds() -> List[str]:
    return SYSTEM_KINDS.names()


__all__ = ["SystemSpec", "SystemSpecError", "RunSettings", "BenchmarkSystem", "SYSTEM_KINDS", "parse_system_spec",
           "parse_system_specs", "make_system", "find_ct2_dir", "available_kinds"]
