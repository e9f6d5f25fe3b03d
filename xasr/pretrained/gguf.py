"""A GGUF causal LM as a transformers directory.

In: a ``.gguf`` file (any quantisation transformers' GGUF loader reads). Out: a transformers
safetensors directory (weights dequantised to float32) with its tokenizer and chat template;
the rebuilt model's greedy continuation of a short prompt is checked against the GGUF one.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Union

from xasr.pretrained.errors import ModelInstallError

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# GGUF LLM -> transformers safetensors directory
# ---------------------------------------------------------------------------------------------

def convert_gguf_llm(gguf_path: Union[str, Path], out_dir: Union[str, Path], check_tokens: int = 4) -> dict:
    """A GGUF causal LM -> a float32 transformers safetensors directory with its tokenizer.

    Loading the GGUF dequantises it; the model is then rebuilt from its config (without the
    quantization config) so that it saves and reloads as a plain model. The saved directory
    is reloaded and greedily generates ``check_tokens`` tokens as a check.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    t0 = time.time()
    src = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    t_load = time.time() - t0
    config = src.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise ModelInstallError(f"{gguf_path.name}: the rebuilt model does not match the GGUF weights "
                                f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    del src
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    has_template = bool(getattr(tokenizer, "chat_template", None))
    del model

    t1 = time.time()
    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    t_reload = time.time() - t1
    if has_template:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                               tokenize=False, add_generation_prompt=True)
    else:
        prompt = "The capital of France is"
    ids = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=check_tokens, do_sample=False)
    sample = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    logger.info("%s: %.1fM parameters; GGUF load %.1f s, reload %.1f s; greedy continuation %r",
                gguf_path.name, n_params / 1e6, t_load, t_reload, sample)
    return {"params": int(n_params), "architecture": type(model).__name__, "chat_template": has_template,
            "gguf_load_s": round(t_load, 1), "reload_s": round(t_reload, 1), "check_prompt": prompt,
            "check_output": sample}
