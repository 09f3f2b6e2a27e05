"""LM encoder: pooling, decoders with left padding, clear errors."""

import pytest
import torch
from tiny_models import save_tiny_model

from fastleading.config import ModelConfig
from fastleading.errors import FastleadingError
from fastleading.models.lm import LMEncoder, hidden_size, pool


def test_pool_last_takes_last_real_token_for_either_padding_side():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 6, 3, generator=gen)
    lengths = torch.tensor([6, 1, 3, 4])
    right = (torch.arange(6)[None, :] < lengths[:, None]).long()
    left = right.flip(1)
    r = pool(hidden, right, "last")
    left_pooled = pool(hidden, left, "last")
    for i, n in enumerate(lengths.tolist()):
        assert torch.equal(r[i], hidden[i, n - 1])
        assert torch.equal(left_pooled[i], hidden[i, 5])
    m = pool(hidden, right, "mean")
    for i, n in enumerate(lengths.tolist()):
        assert torch.allclose(m[i], hidden[i, :n].mean(0))


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_decoder_embedding_is_last_real_token_regardless_of_padding(tmp_path, kind):
    path = save_tiny_model(tmp_path / kind, kind)
    enc = LMEncoder(ModelConfig(name=path)).eval()
    assert enc.is_decoder and enc.pooling == "last"
    gen = torch.Generator().manual_seed(1)
    lengths = [7, 3, 5]
    rows = [torch.randint(1000, 2000, (n,), generator=gen) for n in lengths]
    with torch.no_grad():
        alone = torch.cat([enc(r[None], torch.ones(1, len(r), dtype=torch.long)) for r in rows])
        for width in (7, 12):  # the same rows left-padded to different widths
            ids = torch.zeros(3, width, dtype=torch.long)
            mask = torch.zeros(3, width, dtype=torch.long)
            for i, r in enumerate(rows):
                ids[i, width - len(r):] = r
                mask[i, width - len(r):] = 1
            batched = enc(ids, mask)
            assert torch.allclose(batched, alone, atol=1e-5), (kind, width)
            # and it is the hidden state at the last real token
            out = enc.model(input_ids=ids, attention_mask=mask,
                            position_ids=(mask.cumsum(1) - 1).clamp_min(0)).last_hidden_state
            assert torch.allclose(batched, out[:, -1].float())


def test_hidden_size_unreadable_is_one_line_error():
    class Weird:
        model_type = "weird"

    with pytest.raises(FastleadingError, match="cannot read the hidden size"):
        hidden_size(Weird())


def test_missing_model_path_is_clear():
    with pytest.raises(FastleadingError, match="does not exist"):
        LMEncoder(ModelConfig(name="./no/such/model"))


def test_lora_trains_only_adapters_and_checkpointing_keeps_outputs(tmp_path):
    path = save_tiny_model(tmp_path / "bert", "bert")
    lora = LMEncoder(ModelConfig(name=path, lora=True, lora_r=4))
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids = torch.randint(1000, 2000, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    plain = LMEncoder(ModelConfig(name=path)).train()
    ckpt = LMEncoder(ModelConfig(name=path, gradient_checkpointing=True)).train()
    torch.manual_seed(0)
    a = plain(ids, mask)
    torch.manual_seed(0)
    b = ckpt(ids, mask)
    assert torch.allclose(a, b, atol=1e-6)
    a.sum().backward()
    b.sum().backward()
    wa = plain.model.encoder.layer[0].attention.self.query.weight.grad
    wb = ckpt.model.encoder.layer[0].attention.self.query.weight.grad
    assert wa is not None and torch.allclose(wa, wb, atol=1e-6)

    def saved_bytes(encoder) -> int:  # activations autograd keeps outside checkpointed regions
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            encoder(ids, mask)
        return total
    assert saved_bytes(ckpt) < saved_bytes(plain) / 2  # checkpointing really is on


def test_a_new_encoder_trains_with_dropout_from_the_start(tmp_path):
    # from_pretrained leaves a Hugging Face model in eval mode; a fresh nn.Module (and so every
    # training step from the first, resumed or not) must be in train mode, dropout on
    from fastleading.config import ModelConfig

    enc = LMEncoder(ModelConfig(name=save_tiny_model(tmp_path / "m", "bert", hidden=32)))
    assert enc.training and all(m.training for m in enc.modules())
