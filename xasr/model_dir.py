"""A trained model as a directory: save it, load it, start a stage from it.

In: an :class:`~xasr.models.model.XLLMSpeechModel` with its experiment config and units (to
save), or a directory path (to load). Out: a directory holding only what xasr trained
(``model.safetensors``), the resolved config (``config.yaml``), the units (``unit.model``), the
path and fingerprint of each frozen pretrained part (``frozen_parts.json``), and when the model
has them its n-gram LM (``lm.arpa``), homophone classes (``unit_classes.json``) and the decoding
a recipe tuned for it (``decoding.json``); or the model rebuilt from such a directory, refused
with a named reason when a frozen part changed or a file is missing.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from xasr.config import experiment_from_yaml
from xasr.errors import XasrError
from xasr.decoding.methods import check_methods
from xasr.models.model import ModelConfig, XLLMSpeechModel, never_saved

logger = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
CONFIG = "config.yaml"
FROZEN = "frozen_parts.json"
UNITS = "unit.model"
NGRAM = "lm.arpa"  # the n-gram LM (model.ngram), kept as lm.arpa or lm.arpa.gz
UNIT_CLASSES = "unit_classes.json"  # the unit heads' homophone classes (model.unit_classes)
DECODING = "decoding.json"  # the decoding a recipe chose for the model, with its dev-tuned weights
DEFAULT_METHOD = "llm_greedy"  # what transcription uses when the model directory names none
TUNED_SETTINGS = ("rescore_ctc_weight", "rescore_length_bonus", "homophone_scale", "llm_vocab", "rescore_draft")  # what decoding.json may set


def save_decoding(model_dir: str, method: str, settings: dict, **provenance) -> Path:
    """Record in a model directory the decoding to use by default (``method``) and the model
    settings it was tuned with (keys of TUNED_SETTINGS), plus where they come from."""
    check_methods([method], "method")
    bad = sorted(set(settings) - set(TUNED_SETTINGS))
    if bad:
        raise XasrError(f"{DECODING}: {bad[0]} is not a tunable decoding setting ({', '.join(TUNED_SETTINGS)})")
    path = Path(model_dir) / DECODING
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps({"method": method, "settings": settings, **provenance}, indent=1) + "\n")
    tmp.replace(path)
    return path


def read_decoding(model_dir: str) -> Optional[dict]:
    """The model directory's decoding.json ({"method", "settings", ...}), or None without one."""
    path = Path(model_dir) / DECODING
    if not path.is_file():
        return None
    try:
        d = json.loads(path.read_text())
        check_methods([d["method"]], f"{path}: method")
        bad = sorted(set(d.get("settings", {})) - set(TUNED_SETTINGS))
        if bad:
            raise XasrError(f"{path}: {bad[0]} is not a tunable decoding setting")
        return d
    except (ValueError, KeyError, TypeError) as e:
        raise XasrError(f"{path}: not a readable decoding file ({e})") from None


def save_model_dir(model: XLLMSpeechModel, cfg, units_model: str, out_dir: str) -> Path:
    """Write the trained weights (safetensors, no frozen pretrained parameter), the resolved
    experiment config, the units and the frozen parts' paths and fingerprints."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    skip = set(model.pretrained_param_names())
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if k not in skip and not never_saved(k)}
    save_file(state, str(tmp / WEIGHTS))
    OmegaConf.save(cfg, tmp / CONFIG)
    shutil.copy(units_model, tmp / UNITS)
    lm_path = model.cfg.ngram.path
    if lm_path:
        if not Path(lm_path).is_file():
            raise XasrError(f"model.ngram.path: {lm_path} does not exist (an ARPA language model file)")
        shutil.copy(lm_path, tmp / (NGRAM + (".gz" if str(lm_path).endswith(".gz") else "")))
    if model.cfg.unit_classes:
        shutil.copy(model.cfg.unit_classes, tmp / UNIT_CLASSES)
    (tmp / FROZEN).write_text(json.dumps(model.frozen_parts(), indent=1))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def init_from_dir(model: XLLMSpeechModel, model_dir: str) -> Tuple[List[str], List[str]]:
    """Load an earlier stage's weights into ``model``: the tensors it has with the same shapes
    (others are listed in a warning). The frozen parts both use must have the same fingerprints.
    Returns (names loaded, trained parts not in the directory, which keep their initialisation)."""
    from safetensors.torch import load_file

    d = Path(model_dir)
    if not (d / WEIGHTS).is_file():
        raise XasrError(f"train.init_from: {d / WEIGHTS} does not exist (not a trained model directory)")
    if (d / FROZEN).is_file():
        _check_frozen(model, json.loads((d / FROZEN).read_text()), f"train.init_from: {d}", require_all=False)
    if (d / CONFIG).is_file():
        check_same_interface(model.cfg, d)
    state = load_file(str(d / WEIGHTS))
    own = model.state_dict()
    loaded = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    mismatched = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    if mismatched:
        logger.warning("init_from %s: %d tensors have other shapes here and are not loaded: %s", d,
                       len(mismatched), ", ".join(mismatched[:8]))
    model.load_state_dict(loaded, strict=False)
    skip = set(model.pretrained_param_names())
    fresh = sorted({"lora" if "lora_" in k else k.split(".", 1)[0] for k in own
                    if k not in loaded and k not in skip and not never_saved(k)})
    return sorted(loaded), fresh


def _check_frozen(model: XLLMSpeechModel, recorded: Dict[str, dict], where: str, require_all: bool) -> None:
    """Raise unless each frozen part recorded in a model directory (``frozen_parts.json``) has
    the same fingerprint in ``model``; with ``require_all`` the model must load every one."""
    now = model.frozen_parts()
    for part, rec in sorted(recorded.items()):
        if part not in now:
            if require_all:
                raise XasrError(f"{where}: trained with a frozen {part} ({rec['path']}) that the config no longer loads")
            continue
        if now[part]["fingerprint"] != rec["fingerprint"]:
            raise XasrError(
                f"{where} was trained with the frozen {part} at {rec['path']} (fingerprint "
                f"{rec['fingerprint'][:12]}), but {now[part]['path']} differs (fingerprint "
                f"{now[part]['fingerprint'][:12]}); use the same pretrained model")


def check_same_interface(cfg: ModelConfig, model_dir: Path) -> None:
    """Refuse to start from a model directory whose C-Former (or contextual head, or adapted
    encoder top) was trained with other settings: its weights would load, but compute something
    else (e.g. CIF weights from the CTC head there, from the untrained predictor here)."""
    from omegaconf import OmegaConf

    then = OmegaConf.to_container(OmegaConf.load(model_dir / CONFIG).get("model", {}), resolve=True)
    now = {"cif_alphas": cfg.cif_alphas, "cformer": OmegaConf.to_container(OmegaConf.structured(cfg.cformer)),
           "context": OmegaConf.to_container(OmegaConf.structured(cfg.context))}
    then.setdefault("context", {"enabled": False})  # saved before the contextual head existed
    diffs = []
    if "cif_alphas" in then and then["cif_alphas"] != now["cif_alphas"]:
        diffs.append(f"model.cif_alphas={then['cif_alphas']} there, {now['cif_alphas']} here")
    if bool(then.get("unit_classes")) != bool(cfg.unit_classes):
        diffs.append(f"model.unit_classes={then.get('unit_classes')} there, {cfg.unit_classes} here")
    if bool(then.get("cformer_classes")) != bool(cfg.cformer_classes):
        diffs.append(f"model.cformer_classes={then.get('cformer_classes')} there, {cfg.cformer_classes} here")
    def compare(name: str, there: dict, here: dict) -> None:
        for k, v in there.items():
            if k in ("dropout", "input_dim", "groups", "vocab_size"):  # training-only, or set when the model is built
                continue
            if k not in here:
                continue
            if isinstance(v, dict) and isinstance(here[k], dict):  # e.g. model.cformer.cif
                compare(f"{name}.{k}", v, here[k])
            elif here[k] != v:
                diffs.append(f"{name}.{k}={v} there, {here[k]} here")

    for part in ("context", "cformer"):
        compare(f"model.{part}", then.get(part) or {}, now[part])
    # the encoder's trained top: its adapted layers would load, and then be neither trained nor saved
    enc = then.get("encoder") or {}
    top_then = int(((enc.get("whisper") or {}).get("train_top") or 0) if enc.get("name") == "whisper" else 0)
    top_now = int(cfg.encoder.whisper.train_top if cfg.encoder.name == "whisper" else 0)
    if top_then != top_now:
        diffs.append(f"model.encoder.whisper.train_top={top_then} there, {top_now} here")
    if diffs:
        raise XasrError(f"train.init_from: {model_dir} has another encoder top, C-Former, contextual head or CTC head: "
                        f"{'; '.join(diffs)}. "
                        "Use the same settings as the model it starts from")


def check_model_dir(model_dir: str, option: str = "") -> Path:
    """Refuse a path that is not a model directory (without loading anything); returns it."""
    d = Path(model_dir)
    where = f"{option} {d}" if option else str(d)
    if not d.is_dir():
        raise XasrError(f"{where}: no such model directory")
    for f in (WEIGHTS, CONFIG, UNITS, FROZEN):
        if not (d / f).is_file():
            raise XasrError(f"{where} is not an xasr model directory: {f} is missing")
    return d


def load_model_dir(model_dir: str, models_dir: Optional[str] = None, device: str = "cpu",
                   check_frozen: bool = True):
    """Rebuild a trained model from its directory; returns (model, cfg, sentencepiece processor).

    The frozen parts it names must be found (by path, or by installed name in ``models_dir``)
    and match their recorded fingerprints, else a clear error says which and why. The settings
    of a ``decoding.json`` (:func:`save_decoding`) are applied to the model's config.
    """
    import sentencepiece as spm
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    d = check_model_dir(model_dir)

    cfg = experiment_from_yaml(d / CONFIG)
    # the n-gram LM the model was saved with is its own copy, wherever the original was
    own_lm = [d / n for n in (NGRAM, NGRAM + ".gz") if (d / n).is_file()]
    if own_lm:
        cfg.model.ngram.path = str(own_lm[0])
    elif cfg.model.ngram.path:
        raise XasrError(f"{d}: its config names the n-gram LM {cfg.model.ngram.path} but {d / NGRAM} is missing")
    if cfg.model.unit_classes:  # likewise the unit heads' homophone classes
        if not (d / UNIT_CLASSES).is_file():
            raise XasrError(f"{d}: its config names unit classes (model.unit_classes) but {d / UNIT_CLASSES} is missing")
        cfg.model.unit_classes = str(d / UNIT_CLASSES)
    decoding = read_decoding(str(d))
    if decoding:  # the weights the recipe tuned on dev become the model's own
        for k, v in decoding.get("settings", {}).items():
            setattr(cfg.model, k, v)
    frozen = json.loads((d / FROZEN).read_text())
    model = XLLMSpeechModel(OmegaConf.to_object(cfg.model), models_dir=models_dir)
    if check_frozen:
        _check_frozen(model, frozen, str(d), require_all=True)
    state = load_file(str(d / WEIGHTS))
    missing, unexpected = model.load_state_dict(state, strict=False)
    pretrained = set(model.pretrained_param_names())
    missing = [k for k in missing if k not in pretrained and not never_saved(k)]
    if missing or unexpected:
        raise XasrError(f"{d / WEIGHTS} does not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.to(device).eval()
    units = spm.SentencePieceProcessor(model_file=str(d / UNITS))
    model.set_units(units)
    return model, cfg, units
