"""The frozen LLM and the one prompt code shared by training and decoding.

In: a local Hugging Face causal-LM directory (or a GGUF file), speech (and image) vectors
already in the LLM's embedding size, and transcripts for training.
Out: the LLM loss on the transcript tokens only, or generated transcripts.

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

    def target_ids(self, text: str) -> List[int]:
        if self.cfg.target_case == "lower":
            text = text.lower()
        lead = "" if self._has_template() else " "
        return self.tokenizer.encode(lead + text + self.end_text, add_special_tokens=False)

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

    @torch.no_grad()
    def target_logprobs(self, speech: Sequence[torch.Tensor], texts: Sequence[Sequence[str]],
                        image: Optional[Sequence[Optional[torch.Tensor]]] = None,
                        tree: Optional[bool] = None, max_nodes: Optional[int] = None) -> List[List[float]]:
        """log P(target ids of each text | prompt with the utterance's speech (and picture)),
        end-of-turn token included: how likely the LLM is to write the text as its whole answer.

        speech: per utterance (n_b, D); texts: per utterance its hypotheses; returns the same
        nesting. Per utterance the prompt runs once and its KV cache serves every hypothesis.
        The hypotheses' tokens form a prefix tree (N-best lists share most of their prefixes),
        and each node runs once: in one pass whose attention mask lets a node see the prompt and
        its ancestors (``tree``, the default; ``max_nodes`` nodes per pass, see
        :meth:`_tree_logits`), or, for an LLM with sliding-window attention whose window the
        longest hypothesis would pass, one row per hypothesis with the output layer computed once
        per node (``logits_to_keep`` as a boolean mask).
        """
        from transformers import DynamicCache

        cache_kw = cache_kwarg(self.model)
        window = getattr(base_model(self.model).config, "sliding_window", None) \
            if has_sliding_window(self.model) else None
        out: List[List[float]] = []
        for b, hyps in enumerate(texts):
            if not hyps:
                out.append([])
                continue
            emb, mask = self.generation_inputs([speech[b]], None if image is None else [image[b]])  # (1, P, D)
            cache = DynamicCache()
            first = self.model(inputs_embeds=emb, attention_mask=mask, use_cache=True, logits_to_keep=1,
                               **{cache_kw: cache}).logits[0, -1].float().log_softmax(-1)  # (V,)
            ids = [self.target_ids(t) for t in hyps]
            scores = [float(first[i[0]]) for i in ids]
            nodes: Dict[tuple, int] = {}  # token prefix (an input position) -> node
            parent: List[int] = []
            by_node: Dict[int, list] = {}  # node -> (hypothesis, the token the node predicts for it)
            for r, i in enumerate(ids):
                for j in range(len(i) - 1):
                    key = tuple(i[:j + 1])
                    if key not in nodes:
                        nodes[key] = len(parent)
                        parent.append(nodes[key[:-1]] if j else -1)
                    by_node.setdefault(nodes[key], []).append((r, i[j + 1]))
            if nodes:
                P = emb.shape[1]
                use_tree = tree if tree is not None else window is None or P + max(map(len, ids)) <= window
                if use_tree:
                    chunks = self._tree_logits(cache, cache_kw, P, list(nodes), parent, max_nodes)
                else:
                    chunks = [(0, self._row_logits(cache, cache_kw, P, nodes, ids))]
                for start, logits in chunks:  # (C, V): the nodes start, start + 1, ...
                    norm = logits.logsumexp(dim=-1)
                    for c in range(logits.shape[0]):
                        for r, t in by_node.get(start + c, ()):
                            scores[r] += float(logits[c, t] - norm[c])
            out.append(scores)
        return out

    def _tree_logits(self, cache, cache_kw: str, P: int, keys: List[tuple], parent: List[int],
                     max_nodes: Optional[int] = None):
        """Yields (first node, logits (C, V)) for the prefix-tree nodes ``keys`` after the cached
        prompt of P positions, ``max_nodes`` nodes per pass (default: as many as keep the logits
        near 256 MB): node k sits at position P + depth and attends to the prompt, its ancestors
        and itself; each pass's nodes join the cache, so later passes see their ancestors."""
        U = len(keys)
        table = self.model.get_input_embeddings()
        dev, dtype = table.weight.device, table.weight.dtype
        step = max_nodes or max(16, (1 << 26) // table.weight.shape[0])
        see = torch.zeros((U, P + U), dtype=torch.bool)
        see[:, :P] = True
        for k, a in enumerate(parent):  # parents come before their children
            if a >= 0:
                see[k, P:] = see[a, P:]
            see[k, P + k] = True
        tok = torch.tensor([k[-1] for k in keys], dtype=torch.long, device=dev)
        pos = torch.tensor([P + len(k) - 1 for k in keys], dtype=torch.long, device=dev)
        for s in range(0, U, step):
            e = min(U, s + step)
            mask = torch.zeros((1, 1, e - s, P + e), dtype=dtype).masked_fill(~see[s:e, :P + e], torch.finfo(dtype).min)
            yield s, self.model(inputs_embeds=table(tok[s:e])[None], attention_mask=mask.to(dev),
                                position_ids=pos[None, s:e], use_cache=True, **{cache_kw: cache}).logits[0].float()

    def _row_logits(self, cache, cache_kw: str, P: int, node: Dict[tuple, int], ids) -> torch.Tensor:
        """The logits (U, V) of :meth:`_tree_logits` (``node``: token prefix -> node) with one row
        per hypothesis (right-padded, the prompt's cache repeated), an ordinary padding mask, and
        the output layer kept at the first row and position of each node."""
        rows, width = len(ids), max(map(len, ids)) - 1
        dev = self.model.get_input_embeddings().weight.device
        tok = torch.full((rows, width), self.pad_id, dtype=torch.long)
        tmask = torch.zeros((rows, width), dtype=torch.long)
        keep = torch.zeros((rows, width), dtype=torch.bool)
        at = {}  # node -> (row, position) that computes it
        for r, i in enumerate(ids):
            tok[r, :len(i) - 1] = torch.tensor(i[:-1])
            tmask[r, :len(i) - 1] = 1
            for j in range(len(i) - 1):
                n = node[tuple(i[:j + 1])]
                if n not in at:
                    at[n] = (r, j)
                    keep[r, j] = True
        order = sorted(at, key=lambda n: at[n])  # keep's row-major order
        cache.batch_select_indices(torch.zeros(rows, dtype=torch.long, device=dev))
        logits = self.model(
            inputs_embeds=self.model.get_input_embeddings()(tok.to(dev)),
            attention_mask=torch.cat([torch.ones((rows, P), dtype=torch.long), tmask], dim=1).to(dev),
            position_ids=torch.arange(P, P + width, device=dev).expand(rows, -1),
            use_cache=True, logits_to_keep=keep.to(dev), **{cache_kw: cache}).logits.float()  # (U, V)
        out = torch.empty_like(logits)
        out[torch.tensor(order)] = logits
        return out

    # ------------------------------------------------------------------ generation
    @torch.no_grad()
    def generate(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                 max_new_tokens: Sequence[int], num_beams: int = 1, repeat_ngram: int = 0) -> List[str]:
        """Transcripts by greedy (num_beams=1) or beam search, see :meth:`generate_ids`."""
        return [self.decode(ids) for ids in self.generate_ids(inputs_embeds, attention_mask, max_new_tokens,
                                                               num_beams, repeat_ngram)]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True).strip()

    @torch.no_grad()
    def generate_ids(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                     max_new_tokens: Sequence[int], num_beams: int = 1,
                     repeat_ngram: int = 0) -> List[List[int]]:
        """Generated token ids (without the stop token) per row. Each row stops at the
        end-of-turn token or at its own bound ``max_new_tokens[b]``, whichever comes first.
        ``repeat_ngram`` > 0: a row is cut where a run of that many tokens starts a second
        time (:mod:`xasr.decoding.loops`); greedy rows stop as soon as one appears."""
        from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        from xasr.decoding.loops import cut_repeat, has_repeat

        limits = torch.tensor(list(max_new_tokens), device=inputs_embeds.device)
        stop_id = self.stop_id

        class RowLimit(LogitsProcessor):
            start: Optional[int] = None

            def __call__(self, input_ids, scores):
                # the first call sees no generated token yet: its length is the offset to subtract
                # (0 when generating from embeddings, the prompt length otherwise); with beams,
                # rows are batch * num_beams in batch-major order
                if self.start is None:
                    self.start = input_ids.shape[1]
                step = input_ids.shape[1] - self.start
                lim = limits.repeat_interleave(scores.shape[0] // limits.shape[0])
                done = step >= lim
                if done.any():
                    scores[done] = float("-inf")
                    scores[done, stop_id] = 0.0
                return scores

        class Loop(StoppingCriteria):  # greedy only: beams are cut at the end
            start: Optional[int] = None

            def __call__(self, input_ids, scores, **kwargs):
                if self.start is None:  # called after the first token: one generated so far
                    self.start = input_ids.shape[1] - 1
                gen = input_ids[:, self.start:].tolist()
                return torch.tensor([has_repeat(g, repeat_ngram) for g in gen], device=input_ids.device)

        stopping = StoppingCriteriaList([Loop()] if repeat_ngram > 0 and num_beams == 1 else [])
        out = self.model.generate(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask,
            max_new_tokens=int(limits.max()) + 1, num_beams=num_beams, do_sample=False,
            eos_token_id=stop_id, pad_token_id=self.pad_id,
            logits_processor=LogitsProcessorList([RowLimit()]), stopping_criteria=stopping,
        )
        rows = []
        for row in out.tolist():
            if stop_id in row:
                row = row[:row.index(stop_id)]
            rows.append(cut_repeat(row, repeat_ngram))
        return rows
