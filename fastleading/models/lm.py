"""The language-model encoder: text tokens -> one embedding per node.

Wraps any Hugging Face model. Encoder-only models pool the CLS token (or the masked
mean; sentence-transformers models use mean), decoder-only models (GPT-2, Llama family)
pool the last real token, which is the last position under left padding.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from fastleading.config import ModelConfig
from fastleading.errors import FastleadingError
from fastleading.models.hub import is_sentence_transformer, load_args

DECODER_TYPES = {"gpt2", "gpt_neo", "gptj", "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "phi", "phi3",
                 "gemma", "gemma2", "opt", "bloom", "falcon", "smollm"}


def attn_implementation(requested: str) -> str:
    """``auto`` -> flash_attention_2 when flash-attn imports, else PyTorch's fused SDPA."""
    if requested != "auto":
        if requested == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            raise FastleadingError("model.attn_implementation: flash_attention_2 needs the flash-attn package, "
                                   "which is not installed (use sdpa)")
        return requested
    return "flash_attention_2" if importlib.util.find_spec("flash_attn") is not None else "sdpa"


def hidden_size(config) -> int:
    for key in ("hidden_size", "n_embd", "d_model", "dim"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise FastleadingError(f"model config ({type(config).__name__}): cannot read the hidden size "
                           "(expected one of hidden_size, n_embd, d_model, dim)")


def is_decoder(config) -> bool:
    archs = getattr(config, "architectures", None) or []
    return (config.model_type in DECODER_TYPES or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
            or bool(getattr(config, "is_decoder", False)))


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool ``hidden [B, L, H]`` under ``attention_mask [B, L]`` (1 = real token) to ``[B, H]``.

    ``last`` takes each row's last real token, whatever the padding side.
    """
    if how == "cls":
        return hidden[:, 0]
    if how == "mean":
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)
    if how == "last":
        positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
        last = (attention_mask.to(torch.long) * positions).argmax(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    raise FastleadingError(f"model.pooling: expected cls, mean or last, got {how!r}")


class LMEncoder(nn.Module):
    """``forward(input_ids [B, L], attention_mask [B, L]) -> [B, hidden]`` (fp32 output)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        path, kwargs = load_args(cfg.name)
        try:
            config = AutoConfig.from_pretrained(path, **kwargs)
        except (OSError, ValueError) as e:
            raise FastleadingError(f"model.name '{cfg.name}': cannot load its config "
                                   f"({str(e).splitlines()[0]})") from None
        self.hidden_size = hidden_size(config)
        self.is_decoder = is_decoder(config)
        if cfg.pooling != "auto":
            self.pooling = cfg.pooling
        elif self.is_decoder:
            self.pooling = "last"
        else:
            self.pooling = "mean" if is_sentence_transformer(cfg.name) else "cls"
        attn = attn_implementation(cfg.attn_implementation)
        self.attn_implementation = attn
        if cfg.random_init:
            model = AutoModel.from_config(config, attn_implementation=attn)
        else:
            model = AutoModel.from_pretrained(path, attn_implementation=attn, **kwargs)
        if self.is_decoder and getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = getattr(model.config, "eos_token_id", 0) or 0
        if cfg.gradient_checkpointing:
            kwargs = {"use_reentrant": False}
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if cfg.lora:
            model = _with_lora(model, cfg)
        # from_pretrained returns the model in eval mode; a new module trains (dropout on), as
        # every nn.Module does: the trainer's first step must not depend on what ran before it
        self.model = model.train()
        self.name = cfg.name

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        kwargs = {}
        if self.is_decoder:
            # Left padding: positions count real tokens only, so a row's embedding does not
            # depend on how much padding the batch needed.
            kwargs["position_ids"] = (attention_mask.long().cumsum(1) - 1).clamp_min(0)
        out = self.model(input_ids=input_ids, attention_mask=self._model_mask(attention_mask), **kwargs)
        return pool(out.last_hidden_state, attention_mask, self.pooling).float()

    def _model_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """The mask handed to the model. For SDPA a boolean ``[B, 1, Lq, L]`` mask built on the
        device, which transformers uses as it is: from a 2D mask it would first read
        ``mask.all()`` back to the host to decide whether the mask can be dropped, a
        synchronisation in every forward on a GPU. Decoders get the causal mask with the
        diagonal always kept, so a left-padding query row is never fully masked (SDPA would give
        NaN there). Other attention implementations get the 2D mask."""
        if self.attn_implementation != "sdpa":
            return attention_mask
        keep = attention_mask.bool()[:, None, None, :]
        if self.is_decoder:
            # comparisons of positions rather than tril/eye: the same masks, and ONNX Runtime
            # (fastleading.models.encode_backend) has kernels for them where it has none for a bool EyeLike
            positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
            causal = positions[None, :] <= positions[:, None]
            keep = (keep & causal) | (positions[None, :] == positions[:, None])
        return keep


def _with_lora(model: nn.Module, cfg: ModelConfig) -> nn.Module:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise FastleadingError("model.lora: LoRA needs the peft package (pip install 'fastleading[peft]')") from None
    names = {n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    names |= {n.split(".")[-1] for n, m in model.named_modules() if type(m).__name__ == "Conv1D"}  # GPT-2
    preferred = [n for n in ("query", "key", "value", "q_proj", "k_proj", "v_proj", "o_proj", "c_attn", "c_proj",
                             "dense") if n in names]
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=preferred or sorted(names))
    return get_peft_model(model, lora)
