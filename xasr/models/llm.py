"""The frozen LLM and the one prompt code shared by training and decoding.

In: a local Hugging Face causal-LM directory (or a GGUF file), speech (and image) vectors
already in the LLM's embedding size, and transcripts for training.
Out: the LLM loss on the transcript tokens only, the embedded prompts the decoding methods
generate from or score with (:mod:`xasr.decoding.generate`, :mod:`xasr.decoding.llm_scoring`),
and the text of generated token ids.

The prompt is the LLM's chat template (when it has one) around a user turn that holds the
placeholders ``<speech>`` (and ``<image>``) and an instruction. Each placeholder is expanded to
as many placeholder tokens as the utterance has vectors; the embedded prompt then gets the
vectors scattered into those positions (``masked_scatter``, after checking the counts match).
Placeholder tokens are added to the tokenizer only: their ids are never looked up in the
frozen embedding table, so the LLM itself is untouched. ``build_inputs`` is the single place
where prompts become token ids, for training (right padding, transcript + end-of-turn as
labels, -100 elsewhere) and for generation (left padding, ending at the assistant's turn).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from xasr.errors import XasrError

logger = logging.getLogger(__name__)

SPEECH_TOKEN = "<speech>"
IMAGE_TOKEN = "<image>"
IGNORE_ID = -100


def base_model(model: nn.Module) -> nn.Module:
    """The causal LM under an optional peft wrapper."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def cache_kwarg(model: nn.Module) -> str:
    """Name of the KV-cache argument of the model's forward (``cache`` in recent transformers)."""
    params = inspect.signature(base_model(model).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def has_sliding_window(model: nn.Module) -> bool:
    """Whether the causal LM attends within a sliding window (its KV cache must not be compacted)."""
    cfg = getattr(base_model(model), "config", None)
    return bool(getattr(cfg, "sliding_window", None)) and getattr(cfg, "use_sliding_window", True) is not False


class SubsetHead(nn.Module):
    """An LLM output layer that scores only the tokens ``ids``: the rows of the full layer's
    weight for them; every other token gets -inf, so logits keep the full vocabulary's shape and
    token ids (:meth:`FrozenLLM.output_vocab`)."""

    def __init__(self, full: nn.Module, ids: torch.Tensor) -> None:
        super().__init__()
        w = full.weight.detach()
        self.vocab = int(w.shape[0])
        self.ids = ids.to(w.device)
        self.rows = w.index_select(0, self.ids)  # (K, D)
        bias = getattr(full, "bias", None)
        self.bias = None if bias is None else bias.detach().index_select(0, self.ids)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = h.new_full((*h.shape[:-1], self.vocab), float("-inf"))
        out[..., self.ids] = nn.functional.linear(h, self.rows.to(h.dtype),
                                                  None if self.bias is None else self.bias.to(h.dtype))
        return out


@dataclass
class LoraSettings:
    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class LLMConfig:
    path: str = "smollm2-135m-instruct"  # installed model name or a local transformers directory
    gguf_file: Optional[str] = None  # a GGUF file inside ``path`` (slow to load: install converts it)
    trust_remote_code: bool = False  # needed by some models (e.g. ChatGLM); explicit opt-in
    dtype: str = "float32"  # "bfloat16" on GPUs
    instruction: str = "Transcribe the speech."
    system_prompt: Optional[str] = None  # None: the chat template's own default
    use_chat_template: bool = True
    target_case: str = "keep"  # "lower": transcripts lower-cased for the LLM (English upper-case corpora)
    lora: LoraSettings = field(default_factory=LoraSettings)


class FrozenLLM(nn.Module):
    """A causal LM with frozen weights (optionally LoRA adapters) and the prompt logic."""

    def __init__(self, cfg: LLMConfig, model_dir: Optional[Path] = None) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.cfg = cfg
        path = Path(model_dir) if model_dir is not None else Path(cfg.path)
        if not path.exists():
            raise XasrError(f"LLM directory {path} does not exist (install it with: xasr models install NAME, "
                            "or set llm.path to a local transformers directory)")
        kw = dict(trust_remote_code=cfg.trust_remote_code)
        if cfg.gguf_file:
            kw["gguf_file"] = cfg.gguf_file
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), **kw)
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, cfg.dtype), **kw)
        self.model.requires_grad_(False)
        self.model.eval()
        if cfg.lora.enabled:
            from peft import LoraConfig as PeftLoraConfig, get_peft_model

            self.model = get_peft_model(self.model, PeftLoraConfig(
                r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                target_modules=list(cfg.lora.target_modules), bias="none"))
        self.tokenizer.add_special_tokens({"additional_special_tokens": [SPEECH_TOKEN, IMAGE_TOKEN]})
        self.speech_id = self.tokenizer.convert_tokens_to_ids(SPEECH_TOKEN)
        self.image_id = self.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.embed_dim = self.model.get_input_embeddings().weight.shape[1]
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._prompt_cache: Dict[bool, List[int]] = {}
        self._subset_heads: List[SubsetHead] = []  # the last output_vocab's layer, kept for reuse (not a submodule)
        self.end_text = self._end_of_turn_text()
        end_ids = self.tokenizer.encode(self.end_text, add_special_tokens=False)
        if not end_ids:
            raise XasrError(f"{path}: the tokenizer has no end-of-sequence token to stop generation")
        self.stop_id = end_ids[0]
        logger.info("LLM %s: %.1fM parameters (frozen%s), embedding size %d, stop token %r",
                    path, sum(p.numel() for p in self.model.parameters()) / 1e6,
                    ", LoRA" if cfg.lora.enabled else "", self.embed_dim, self.tokenizer.decode([self.stop_id]))

    # ------------------------------------------------------------------ prompt construction
    def _has_template(self) -> bool:
        return self.cfg.use_chat_template and bool(getattr(self.tokenizer, "chat_template", None))

    def _messages(self, user: str, answer: Optional[str] = None) -> List[dict]:
        msgs = []
        if self.cfg.system_prompt is not None:
            msgs.append({"role": "system", "content": self.cfg.system_prompt})
        msgs.append({"role": "user", "content": user})
        if answer is not None:
            msgs.append({"role": "assistant", "content": answer})
        return msgs

    def _end_of_turn_text(self) -> str:
        """What follows an assistant answer in the template, up to its first special token."""
        if self._has_template():
            marker = "XASRANSWERMARKER"
            full = self.tokenizer.apply_chat_template(self._messages("hi", marker), tokenize=False)
            tail = full.split(marker, 1)[1]
            ids = self.tokenizer.encode(tail, add_special_tokens=False)
            special = set(self.tokenizer.all_special_ids)
            for i in ids:
                if i in special:
                    return self.tokenizer.decode([i])
        if self.tokenizer.eos_token is None:
            raise XasrError("the tokenizer has neither a chat template end-of-turn token nor an eos token")
        return self.tokenizer.eos_token

    def prompt_text(self, with_image: bool = False) -> str:
        user = (f"{IMAGE_TOKEN}\n" if with_image else "") + f"{SPEECH_TOKEN}\n{self.cfg.instruction}"
        if self._has_template():
            return self.tokenizer.apply_chat_template(self._messages(user), tokenize=False,
                                                      add_generation_prompt=True)
        bos = self.tokenizer.bos_token or ""
        return f"{bos}{user}\nTranscript:"

    def prompt_ids(self, with_image: bool = False) -> List[int]:
        if with_image not in self._prompt_cache:
            ids = self.tokenizer.encode(self.prompt_text(with_image), add_special_tokens=False)
            if ids.count(self.speech_id) != 1 or ids.count(self.image_id) != int(with_image):
                raise XasrError("the prompt template must contain each placeholder exactly once")
            self._prompt_cache[with_image] = ids
        return self._prompt_cache[with_image]

    def cased(self, text: str) -> str:
        """A text as the LLM reads and writes transcripts (``target_case``)."""
        return text.lower() if self.cfg.target_case == "lower" else text

    def target_ids(self, text: str) -> List[int]:
        lead = "" if self._has_template() else " "
        return self.tokenizer.encode(lead + self.cased(text) + self.end_text, add_special_tokens=False)

    def build_inputs(self, n_speech: Sequence[int], targets: Optional[Sequence[str]] = None,
                     n_image: Optional[Sequence[int]] = None) -> Dict[str, torch.Tensor]:
        """Token ids for a batch: placeholders expanded to each utterance's vector counts.

        With targets (training): right padding, labels = target ids, -100 elsewhere.
        Without (generation): left padding, the prompt ends where the answer starts.
        Returns input_ids (B, L), attention_mask (B, L), labels (B, L) or None.
        """
        rows, labels = [], []
        for b, n in enumerate(n_speech):
            ni = 0 if n_image is None else int(n_image[b])
            ids: List[int] = []
            for t in self.prompt_ids(with_image=ni > 0):
                if t == self.speech_id:
                    ids.extend([self.speech_id] * int(n))
                elif t == self.image_id:
                    ids.extend([self.image_id] * ni)
                else:
                    ids.append(t)
            lab = [IGNORE_ID] * len(ids)
            if targets is not None:
                tgt = self.target_ids(targets[b])
                ids = ids + tgt
                lab = lab + tgt
            rows.append(ids)
            labels.append(lab)
        L = max(len(r) for r in rows)
        B = len(rows)
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        attention = torch.zeros((B, L), dtype=torch.long)
        label_t = torch.full((B, L), IGNORE_ID, dtype=torch.long)
        for b, (ids, lab) in enumerate(zip(rows, labels)):
            n = len(ids)
            sl = slice(0, n) if targets is not None else slice(L - n, L)  # right / left padding
            input_ids[b, sl] = torch.tensor(ids)
            attention[b, sl] = 1
            label_t[b, sl] = torch.tensor(lab)
        return {"input_ids": input_ids, "attention_mask": attention,
                "labels": label_t if targets is not None else None}

    def generation_inputs(self, speech: Sequence[torch.Tensor],
                          image: Optional[Sequence[Optional[torch.Tensor]]] = None) -> tuple:
        """Embedded generation prompts for utterances with speech vectors (n_b, D) each (and
        image vectors (m_b, D), or None for a row without a picture): inputs_embeds (B, L, D)
        and attention_mask (B, L), left-padded (:meth:`build_inputs`)."""
        n_image = None if image is None else [0 if v is None else int(v.shape[0]) for v in image]
        inputs = self.build_inputs([int(s.shape[0]) for s in speech], n_image=n_image)
        dev = speech[0].device
        pictures = [v for v in (image or []) if v is not None]
        emb = self.embed(inputs["input_ids"].to(dev), torch.cat(list(speech)),
                         torch.cat(pictures) if pictures else None)
        return emb, inputs["attention_mask"].to(dev)

    def text_embeddings(self, text: str) -> torch.Tensor:
        """The frozen table's embeddings (n, D) of a text inside the prompt (cased as the targets)."""
        ids = self.tokenizer.encode(self.cased(text), add_special_tokens=False)
        emb = self.model.get_input_embeddings()
        return emb(torch.tensor(ids, dtype=torch.long, device=emb.weight.device))

    # ------------------------------------------------------------------ embedding and loss
    def embed(self, input_ids: torch.Tensor, speech: torch.Tensor,
              image: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Embedded prompt with the vectors in place of the placeholders.

        input_ids (B, L); speech (S, D): the speech vectors of the whole batch in order,
        S = number of speech placeholders; image (I, D) likewise. Returns (B, L, D).
        """
        is_speech = input_ids == self.speech_id
        is_image = input_ids == self.image_id
        safe = input_ids.masked_fill(is_speech | is_image, 0)
        emb = self.model.get_input_embeddings()(safe)  # (B, L, D)
        for mask, vec, name in ((is_speech, speech, "speech"), (is_image, image, "image")):
            n = int(mask.sum())
            got = 0 if vec is None else vec.shape[0]
            if n != got:
                raise ValueError(f"{name} placeholders ({n}) and {name} vectors ({got}) do not match")
            if n:
                emb = emb.masked_scatter(mask.unsqueeze(-1), vec.to(emb.dtype))
        return emb

    def loss(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor
             ) -> tuple:
        """Summed token cross-entropy over the labelled positions, and their count.

        Logits are computed only at positions that predict a label (``logits_to_keep``), which
        matters for large vocabularies.
        """
        targets = labels[:, 1:]  # position t predicts token t+1
        keep = (targets != IGNORE_ID).any(dim=0).nonzero(as_tuple=True)[0]  # (K,)
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, logits_to_keep=keep,
                         use_cache=False)
        logits = out.logits  # (B, K, V)
        tgt = targets[:, keep]  # (B, K)
        loss = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                           ignore_index=IGNORE_ID, reduction="sum")
        n = int((tgt != IGNORE_ID).sum())
        with torch.no_grad():
            correct = int(((logits.argmax(-1) == tgt) & (tgt != IGNORE_ID)).sum())
        return loss, n, correct

    # ------------------------------------------------------------------ output layer
    def output_layer(self) -> nn.Module:
        """The causal LM's output layer (its logits over the whole vocabulary)."""
        return base_model(self.model).get_output_embeddings()

    @contextlib.contextmanager
    def output_vocab(self, ids: Optional[torch.Tensor]):
        """Within the block the LLM scores only the tokens ``ids`` (the rest get -inf), at a
        fraction of the output layer's cost (:mod:`xasr.decoding.vocab`); None: all tokens.
        The layer is swapped in place for the block, so one model decodes one search at a time."""
        if ids is None:
            yield
            return
        base = base_model(self.model)
        full = base.get_output_embeddings()
        if isinstance(full, SubsetHead):
            raise XasrError("the LLM's output vocabulary is restricted already (output_vocab blocks do not nest)")
        head = self._subset_heads[0] if self._subset_heads else None
        if head is None or head.rows.device != full.weight.device or not (
                head.ids.shape == ids.shape and torch.equal(head.ids.cpu(), ids.cpu())):
            head = SubsetHead(full, ids)
            self._subset_heads[:] = [head]
        base.set_output_embeddings(head)
        try:
            yield
        finally:
            base.set_output_embeddings(full)

    # ------------------------------------------------------------------ output text
    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()
