"""A tiny random causal LM with a real tokenizer and a chat template, built offline for tests."""
from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEXT = [
    "transcribe the speech", "the cat sat on the mat", "hello world", "a b c d e f g h i j k l m n o p",
    "one two three four five six seven eight nine ten", "今天天气很好", "我们去公园",
]


def make_tiny_llm(out_dir: Path, chat_template: bool = True, hidden: int = 32, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "<s>"]
    tok.train_from_iterator(TEXT * 5, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                                   eos_token="<|im_end|>" if chat_template else "<s>", bos_token="<s>")
    if chat_template:
        fast.chat_template = CHATML
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      pad_token_id=fast.pad_token_id, eos_token_id=fast.eos_token_id, bos_token_id=fast.bos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(out_dir)
    return out_dir
