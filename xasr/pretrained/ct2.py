"""CTranslate2 models: read and write ``model.bin``, and convert a CTranslate2 Whisper model to a
transformers one.

In: a CTranslate2 model directory or ``model.bin`` (binary format versions 4-6; float32, float16,
bfloat16 or int8/int16 weights with their scales), as faster-whisper loads. Out: a
:class:`Ct2Model` (spec name, revision, variables, aliases), a written ``model.bin``
(:func:`write_ct2_model`), or with :func:`convert_ct2_whisper` a transformers
``WhisperForConditionalGeneration`` directory (config, float32 safetensors, tokenizer, feature
extractor, generation config) whose outputs are checked against the source weights.
"""
from __future__ import annotations

import json
import logging
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np

from xasr.pretrained.errors import ModelInstallError

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# CTranslate2 model.bin reader
# ---------------------------------------------------------------------------------------------
# Layout (little endian; binary versions 4-6): uint32 version, string spec name, uint32 spec
# revision, uint32 variable count, then per variable: string name, uint8 rank, uint32 dims[rank],
# uint8 dtype id, uint32 byte count, raw bytes; then uint32 alias count and (alias, target)
# string pairs. A string is a uint16 length (with the trailing NUL) followed by the bytes.

CT2_DTYPES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
CT2_SUPPORTED_VERSIONS = (4, 5, 6)


@dataclass
class Ct2Model:
    binary_version: int
    spec_name: str
    spec_revision: int
    variables: Dict[str, np.ndarray]
    aliases: Dict[str, str]

    def get(self, name: str) -> np.ndarray:
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise ModelInstallError(f"variable {name!r} is missing from the CTranslate2 model ({self.spec_name})")
        return self.variables[name]

    def has(self, name: str) -> bool:
        return self.aliases.get(name, name) in self.variables

    def scalar(self, name: str) -> Union[int, float]:
        return self.get(name).reshape(-1)[0].item()


def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_ct2_model(path: Union[str, Path]) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` into numpy arrays (bfloat16 is widened to float32)."""
    path = Path(path)
    data = memoryview(path.read_bytes())
    pos = 0

    def take(fmt: str):
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise ModelInstallError(f"{path} is truncated (at byte {pos})")
        value = struct.unpack_from("<" + fmt, data, pos)
        pos += size
        return value[0] if len(value) == 1 else value

    def take_string() -> str:
        nonlocal pos
        n = take("H")
        raw = bytes(data[pos:pos + n])
        pos += n
        return raw.rstrip(b"\x00").decode("utf-8")

    version = take("I")
    if version not in CT2_SUPPORTED_VERSIONS:
        raise ModelInstallError(f"{path}: CTranslate2 binary version {version} is not supported "
                                f"(this reader knows {CT2_SUPPORTED_VERSIONS})")
    spec_name = take_string()
    revision = take("I")
    count = take("I")
    variables: Dict[str, np.ndarray] = {}
    for _ in range(count):
        name = take_string()
        rank = take("B")
        shape = tuple(take("I") for _ in range(rank))
        dtype_id = take("B")
        nbytes = take("I")
        if dtype_id not in CT2_DTYPES:
            raise ModelInstallError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
        dtype = CT2_DTYPES[dtype_id]
        if pos + nbytes > len(data):
            raise ModelInstallError(f"{path} is truncated inside variable {name!r}")
        raw = data[pos:pos + nbytes]
        pos += nbytes
        if dtype == "bfloat16":
            arr = _bfloat16_to_float32(np.frombuffer(raw, dtype="<u2"))
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).copy()
        expected = int(np.prod(shape)) if shape else 1
        if arr.size != expected:
            raise ModelInstallError(f"{path}: variable {name!r} has {arr.size} values for shape {shape}")
        variables[name] = arr.reshape(shape)
    aliases: Dict[str, str] = {}
    if pos < len(data):
        for _ in range(take("I")):
            alias = take_string()
            aliases[alias] = take_string()
    return Ct2Model(version, spec_name, revision, variables, aliases)


def write_ct2_model(path: Union[str, Path], spec_name: str, variables: Dict[str, np.ndarray],
                    aliases: Optional[Dict[str, str]] = None, revision: int = 3, version: int = 6) -> None:
    """Write variables in the CTranslate2 binary layout (used to make small test models)."""
    ids = {v: k for k, v in CT2_DTYPES.items()}

    def string(s: str) -> bytes:
        raw = s.encode("utf-8") + b"\x00"
        return struct.pack("<H", len(raw)) + raw

    with open(path, "wb") as f:
        f.write(struct.pack("<I", version) + string(spec_name) + struct.pack("<II", revision, len(variables)))
        for name, arr in variables.items():
            arr = np.asarray(arr)  # (not ascontiguousarray: it turns scalars into 1-d arrays)
            raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes(order="C")
            f.write(string(name) + struct.pack("<B", arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape))
            f.write(struct.pack("<BI", ids[arr.dtype.name], len(raw)) + raw)
        aliases = aliases or {}
        f.write(struct.pack("<I", len(aliases)))
        for alias, target in aliases.items():
            f.write(string(alias) + string(target))


# ---------------------------------------------------------------------------------------------
# CTranslate2 Whisper -> transformers WhisperForConditionalGeneration
# ---------------------------------------------------------------------------------------------

def _float_weight(ct2: Ct2Model, name: str) -> np.ndarray:
    """A float32 copy of a weight; int8/int16 weights are dequantised with their row scales."""
    w = ct2.get(name)
    if w.dtype in (np.int8, np.int16):
        scale = ct2.get(name + "_scale").astype(np.float32)  # "<layer>/weight_scale", one per row
        return w.astype(np.float32) / scale.reshape(-1, *([1] * (w.ndim - 1)))
    return w.astype(np.float32)


def _count_layers(ct2: Ct2Model, prefix: str) -> int:
    n = 0
    while any(k.startswith(f"{prefix}/layer_{n}/") for k in ct2.variables):
        n += 1
    return n


def _special_token_ids(tokenizer_json: Optional[Path], vocab_size: int) -> Dict[str, int]:
    ids: Dict[str, int] = {}
    if tokenizer_json is not None and tokenizer_json.is_file():
        added = json.loads(tokenizer_json.read_text(encoding="utf-8")).get("added_tokens", [])
        ids = {a["content"]: a["id"] for a in added}
    multilingual = vocab_size >= 51865
    eot = ids.get("<|endoftext|>", 50257 if multilingual else 50256)
    return {
        "eot": eot,
        "sot": ids.get("<|startoftranscript|>", eot + 1),
        "translate": ids.get("<|translate|>", 50358 if multilingual else 50357),
        "transcribe": ids.get("<|transcribe|>", 50359 if multilingual else 50358),
        "notimestamps": ids.get("<|notimestamps|>", 50363 if multilingual else 50362),
        "languages": {k[2:-2]: v for k, v in ids.items()
                      if k.startswith("<|") and k.endswith("|>") and 2 <= len(k) - 4 <= 3 and k[2:-2].isalpha()
                      and k[2:-2].islower()},
    }


def convert_ct2_whisper(ct2_dir: Union[str, Path], out_dir: Union[str, Path], encoder_only: bool = False) -> dict:
    """A CTranslate2 Whisper directory (``model.bin`` and optionally ``config.json``,
    ``tokenizer.json``) -> a transformers Whisper directory in ``out_dir``.

    Fused self-attention QKV (``linear_0``) is split into q/k/v projections and fused
    cross-attention KV (``linear_1``) into k/v; the key projections have no bias in transformers
    (CTranslate2 stores zeros there). Returns facts about the conversion.
    """
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperConfig

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    ct2 = read_ct2_model(ct2_dir / "model.bin")
    if not ct2.spec_name.startswith("Whisper"):
        raise ModelInstallError(f"{ct2_dir / 'model.bin'} holds a {ct2.spec_name}, not a Whisper model")
    has_decoder = not encoder_only and ct2.has("decoder/embeddings/weight")
    tensors: Dict[str, np.ndarray] = {}
    max_nonzero_k_bias = 0.0

    def linear(dst: str, src: str, bias: bool = True) -> None:
        tensors[f"{dst}.weight"] = _float_weight(ct2, f"{src}/weight")
        if bias:
            tensors[f"{dst}.bias"] = ct2.get(f"{src}/bias").astype(np.float32)

    def norm(dst: str, src: str) -> None:
        tensors[f"{dst}.weight"] = ct2.get(f"{src}/gamma").astype(np.float32)
        tensors[f"{dst}.bias"] = ct2.get(f"{src}/beta").astype(np.float32)

    def split(dst_names: Sequence[str], src: str, no_bias: Sequence[str]) -> None:
        nonlocal max_nonzero_k_bias
        w = _float_weight(ct2, f"{src}/weight")
        b = ct2.get(f"{src}/bias").astype(np.float32)
        n = len(dst_names)
        if w.shape[0] % n:
            raise ModelInstallError(f"{src}/weight has {w.shape[0]} rows, not a multiple of {n}")
        for dst, wi, bi in zip(dst_names, np.split(w, n), np.split(b, n)):
            tensors[f"{dst}.weight"] = wi
            if dst.rsplit(".", 1)[-1] in no_bias:
                max_nonzero_k_bias = max(max_nonzero_k_bias, float(np.abs(bi).max()))
            else:
                tensors[f"{dst}.bias"] = bi

    def self_attention(dst: str, src: str) -> None:
        split([f"{dst}.self_attn.q_proj", f"{dst}.self_attn.k_proj", f"{dst}.self_attn.v_proj"],
              f"{src}/self_attention/linear_0", no_bias=("k_proj",))
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")

    def ffn(dst: str, src: str) -> None:
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")

    enc_layers = _count_layers(ct2, "encoder")
    for conv in ("conv1", "conv2"):
        tensors[f"model.encoder.{conv}.weight"] = _float_weight(ct2, f"encoder/{conv}/weight")
        tensors[f"model.encoder.{conv}.bias"] = ct2.get(f"encoder/{conv}/bias").astype(np.float32)
    tensors["model.encoder.embed_positions.weight"] = ct2.get("encoder/position_encodings/encodings").astype(np.float32)
    for i in range(enc_layers):
        self_attention(f"model.encoder.layers.{i}", f"encoder/layer_{i}")
        ffn(f"model.encoder.layers.{i}", f"encoder/layer_{i}")
    norm("model.encoder.layer_norm", "encoder/layer_norm")

    d_model = tensors["model.encoder.conv1.weight"].shape[0]
    num_mel_bins = tensors["model.encoder.conv1.weight"].shape[1]
    enc_ffn = tensors["model.encoder.layers.0.fc1.weight"].shape[0] if enc_layers else 4 * d_model
    enc_heads = int(ct2.scalar("encoder/num_heads")) if ct2.has("encoder/num_heads") else max(1, d_model // 64)
    max_source_positions = tensors["model.encoder.embed_positions.weight"].shape[0]

    dec_layers, dec_heads, dec_ffn, vocab_size, max_target_positions = 0, enc_heads, enc_ffn, 51865, 448
    if has_decoder:
        dec_layers = _count_layers(ct2, "decoder")
        tensors["model.decoder.embed_tokens.weight"] = _float_weight(ct2, "decoder/embeddings/weight")
        tensors["model.decoder.embed_positions.weight"] = ct2.get("decoder/position_encodings/encodings").astype(np.float32)
        for i in range(dec_layers):
            dst, src = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
            self_attention(dst, src)
            linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
            split([f"{dst}.encoder_attn.k_proj", f"{dst}.encoder_attn.v_proj"], f"{src}/attention/linear_1",
                  no_bias=("k_proj",))
            linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
            norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
            ffn(dst, src)
        norm("model.decoder.layer_norm", "decoder/layer_norm")
        vocab_size = tensors["model.decoder.embed_tokens.weight"].shape[0]
        max_target_positions = tensors["model.decoder.embed_positions.weight"].shape[0]
        dec_heads = int(ct2.scalar("decoder/num_heads")) if ct2.has("decoder/num_heads") else enc_heads
        dec_ffn = tensors["model.decoder.layers.0.fc1.weight"].shape[0] if dec_layers else enc_ffn
    if max_nonzero_k_bias > 0:
        logger.warning("the fused key biases are not zero (max |b| = %.3g): transformers' k_proj has no bias, "
                       "so they are dropped", max_nonzero_k_bias)

    tok_json = ct2_dir / "tokenizer.json"
    special = _special_token_ids(tok_json if tok_json.is_file() else None, vocab_size)
    ct2_config = {}
    if (ct2_dir / "config.json").is_file():
        ct2_config = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))

    def in_vocab(token_id: int) -> Optional[int]:  # a non-standard vocabulary may not hold them
        return token_id if token_id < vocab_size else None

    config = WhisperConfig(
        vocab_size=vocab_size, num_mel_bins=num_mel_bins, d_model=d_model,
        encoder_layers=enc_layers, encoder_attention_heads=enc_heads, encoder_ffn_dim=enc_ffn,
        decoder_layers=dec_layers, decoder_attention_heads=dec_heads,
        decoder_ffn_dim=dec_ffn, max_source_positions=max_source_positions,
        max_target_positions=max_target_positions, activation_function="gelu", scale_embedding=False,
        pad_token_id=in_vocab(special["eot"]), bos_token_id=in_vocab(special["eot"]),
        eos_token_id=in_vocab(special["eot"]), decoder_start_token_id=in_vocab(special["sot"]) or 0,
        tie_word_embeddings=True,
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", [220, special["eot"]]),
        suppress_tokens=ct2_config.get("suppress_ids", []),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    # an encoder-only directory (no decoder weights) is meant for xasr's WhisperSpeechEncoder
    config.architectures = ["WhisperForConditionalGeneration"] if has_decoder else ["WhisperEncoder"]
    config.save_pretrained(out_dir)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})

    from transformers import WhisperFeatureExtractor
    WhisperFeatureExtractor(feature_size=num_mel_bins).save_pretrained(out_dir)
    if has_decoder:
        from transformers import GenerationConfig
        gen = GenerationConfig(
            decoder_start_token_id=special["sot"], eos_token_id=special["eot"], pad_token_id=special["eot"],
            bos_token_id=special["eot"], max_length=max_target_positions,
            begin_suppress_tokens=config.begin_suppress_tokens, suppress_tokens=config.suppress_tokens,
            no_timestamps_token_id=special["notimestamps"], is_multilingual=vocab_size >= 51865,
            task_to_id={"translate": special["translate"], "transcribe": special["transcribe"]},
            lang_to_id={f"<|{k}|>": v for k, v in special["languages"].items()},
            alignment_heads=ct2_config.get("alignment_heads"),
            task="transcribe",  # default task for generate(); the language is detected unless given
        )
        gen.save_pretrained(out_dir)
    if tok_json.is_file():
        shutil.copyfile(tok_json, out_dir / "tokenizer.json")
        (out_dir / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "WhisperTokenizer", "model_max_length": 1024, "errors": "replace",
            "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
            "unk_token": "<|endoftext|>", "add_prefix_space": False,
        }, indent=2) + "\n", encoding="utf-8")
    n_enc = sum(v.size for k, v in tensors.items() if k.startswith("model.encoder."))
    return {"ct2_spec": f"{ct2.spec_name} rev {ct2.spec_revision} (binary v{ct2.binary_version})",
            "encoder_layers": enc_layers, "decoder_layers": dec_layers, "d_model": d_model,
            "vocab_size": vocab_size, "encoder_params": int(n_enc),
            "params": int(sum(v.size for v in tensors.values())),
            "source_dtype": str(ct2.get("encoder/conv1/weight").dtype)}
