"""The fine-tuned language model of a run, out as a Hugging Face folder.

``export_lm(run_dir, out_dir)`` loads the run's ``best.pt`` (the NodeClassifier's weights:
``encoder.model.*`` is the Hugging Face model inside :class:`fastleading.models.lm.LMEncoder`),
and writes that model and its tokenizer with ``save_pretrained``:

- a full fine-tune: the model as it was trained (safetensors);
- a LoRA run (``model.lora=true``): the adapters merged into the base weights, a plain
  model folder (default), or with ``lora_adapter=True`` the peft adapter alone
  (``adapter_config.json`` + ``adapter_model.safetensors``; load it onto the base model
  with ``peft.PeftModel.from_pretrained``);
- a sentence-transformers source model (a folder with ``modules.json``, such as the default
  all-MiniLM-L6-v2) also gets its sentence-transformers files (``modules.json``,
  ``sentence_bert_config.json``, the pooling folder...), the pooling mode set to the run's,
  so ``SentenceTransformer(out_dir)`` loads it;
- a GGUF model (SmolLM2 ``.gguf``): the dequantised weights as a plain safetensors folder.

The tokenizer is saved with the run's padding side (left for decoders). ``fastleading.json``
says how the run pooled (``cls`` / ``mean`` / ``last``), its padding side and max length,
the source model and the run.

Nothing is written to ``out_dir`` until the folder is complete: it is built in a temporary
folder beside it and renamed. An existing non-empty ``out_dir`` is refused.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

from fastleading.config import Config
from fastleading.errors import FastleadingError
from fastleading.run import checkpoint
from fastleading.run.folder import best_digest, read_run_config, require_best
from fastleading.run.io import umask

INFO_FILE = "fastleading.json"

# the run's pooling -> sentence-transformers' pooling mode (new single-key and legacy bool-key forms)
ST_POOLING = {"cls": "cls", "mean": "mean", "last": "lasttoken"}
ST_LEGACY_POOLING = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens",
                     "last": "pooling_mode_lasttoken"}
# files of a sentence-transformers folder that describe the pipeline (the model card and
# data_config.json describe the original training and are not copied)
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


def check_target(out_dir: Path) -> None:
    """Refuse an ``out_dir`` that is a file or a non-empty folder (one line)."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise FastleadingError(f"{out_dir}: exists and is not a folder; give a new folder for the model")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise FastleadingError(f"{out_dir}: folder exists and is not empty; refusing to overwrite it "
                               "(give a new or empty folder)")


def _check_lm_run(run_dir: Path, cfg: Config, lora_adapter: bool) -> None:
    """Refuse an LM export of a run that fine-tuned no LM, or of an adapter it does not have."""
    from fastleading.baselines.downstream import FIXED_FEATURE_METHODS

    if cfg.train.method in FIXED_FEATURE_METHODS:
        raise FastleadingError(f"{run_dir}: method '{cfg.train.method}' fine-tunes no language model; "
                               "there is no LM to export (export its features with --out)")
    if lora_adapter and not cfg.model.lora:
        raise FastleadingError(f"{run_dir}: --lora-adapter needs a LoRA run (model.lora=true); this run "
                               "fine-tuned all LM weights")


def check_export(run_dir: Path, embeddings: Path | None, lm_dir: Path | None, lora_adapter: bool = False) -> None:
    """Every check of ``fastleading export`` that needs no model, so that a bad argument stops
    with one line before anything loads: the embeddings path ends in ``.npy``, the LM folder is
    new or empty, the run folder has a config, an LM to export and (LM methods) its ``best.pt``."""
    from fastleading.baselines.downstream import FIXED_FEATURE_METHODS, check_embeddings_path

    if embeddings is not None:
        check_embeddings_path(embeddings)
    if lm_dir is not None:
        check_target(lm_dir)
    cfg = read_run_config(run_dir)
    if lm_dir is not None:
        _check_lm_run(run_dir, cfg, lora_adapter)
    if cfg.train.method not in FIXED_FEATURE_METHODS:
        require_best(run_dir)


def load_trained_encoder(run_dir: Path, cfg: Config):
    """``(encoder, epoch)``: the run's :class:`fastleading.models.lm.LMEncoder` with its ``best.pt``
    weights, on the CPU, in eval mode, and the epoch they are from."""
    from fastleading.models.lm import LMEncoder

    state = checkpoint.load(require_best(run_dir))
    weights = state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, dict):
        raise FastleadingError(f"{run_dir / checkpoint.BEST}: expected a dict with the model's weights under 'model'")
    encoder_state = {k[len("encoder."):]: v for k, v in weights.items() if k.startswith("encoder.")}
    if not encoder_state:
        raise FastleadingError(f"{run_dir / checkpoint.BEST}: holds no LM weights (no 'encoder.*' keys)")
    # gradient checkpointing only matters for training; the rest builds the model the run trained
    encoder = LMEncoder(dataclasses.replace(cfg.model, gradient_checkpointing=False))
    try:
        encoder.load_state_dict(encoder_state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise FastleadingError(f"{run_dir / checkpoint.BEST}: does not match model '{cfg.model.name}' "
                               f"(model.lora={str(cfg.model.lora).lower()}): {first}") from None
    return encoder.eval(), state.get("epoch")


def export_lm(run_dir: str | Path, out_dir: str | Path, lora_adapter: bool = False, quiet: bool = False) -> Path:
    """Write the run's best fine-tuned LM and its tokenizer to ``out_dir`` as a Hugging Face
    folder (see the module docstring); returns ``out_dir``. ``quiet``: nothing on the terminal
    but errors (:func:`fastleading.run.console.output`)."""
    from fastleading.run import console

    with console.output(quiet):
        return _export_lm(Path(run_dir), Path(out_dir), lora_adapter)


def _export_lm(run_dir: Path, out_dir: Path, lora_adapter: bool) -> Path:
    from fastleading.data.tokens import load_tokenizer
    from fastleading.models.hub import load_args

    check_target(out_dir)
    cfg = read_run_config(run_dir)
    _check_lm_run(run_dir, cfg, lora_adapter)
    encoder, epoch = load_trained_encoder(run_dir, cfg)
    tok, decoder = load_tokenizer(cfg.model.name)
    tok.padding_side = "left" if decoder else "right"  # as prepare_tokens chose for the run
    source, kwargs = load_args(cfg.model.name)
    st_source = Path(source) if not kwargs and (Path(source) / "modules.json").is_file() else None

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        model = encoder.model
        if cfg.model.lora and not lora_adapter:
            model = model.merge_and_unload()
        if not lora_adapter:
            drop_dequantized_gguf(model, cfg.model.name)
        model.save_pretrained(tmp)
        save_tokenizer(tok, tmp)
        if st_source is not None:
            write_sentence_transformers_files(st_source, tmp, encoder.pooling)
        info = {"run": str(run_dir.resolve()), "best_sha256": best_digest(run_dir), "model": cfg.model.name,
                "method": cfg.train.method, "epoch": epoch,
                "format": "peft-adapter" if lora_adapter else ("lora-merged" if cfg.model.lora else "full"),
                "pooling": encoder.pooling, "padding_side": tok.padding_side, "max_length": cfg.data.max_length,
                "decoder": encoder.is_decoder, "hidden_size": encoder.hidden_size,
                "sentence_transformers": st_source is not None}
        if lora_adapter:
            info["base_model"] = model.peft_config["default"].base_model_name_or_path
            if kwargs.get("gguf_file"):
                info["base_model_gguf_file"] = kwargs["gguf_file"]
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        publish(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def save_tokenizer(tok, out: Path) -> None:
    """``save_pretrained``, with the padding side written into ``tokenizer_config.json``:
    transformers saves only the tokenizer's init arguments, so a side set after loading
    (left for decoders) would otherwise be lost."""
    tok.save_pretrained(out)
    path = out / "tokenizer_config.json"
    conf = json.loads(path.read_text()) if path.is_file() else {}
    conf["padding_side"] = tok.padding_side
    path.write_text(json.dumps(conf, indent=2, ensure_ascii=False) + "\n")


def drop_dequantized_gguf(model, name: str) -> None:
    """A model loaded from a ``.gguf`` file keeps transformers' GGUF quantizer attached even
    when every weight was dequantised into a plain tensor, and ``save_pretrained`` refuses
    it. Detach it then (a plain float model is what was trained); refuse packed weights."""
    quantizer = getattr(model, "hf_quantizer", None)
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if quantizer is None or str(getattr(method, "value", method)) != "gguf":
        return  # not GGUF: save_pretrained decides
    if getattr(quantizer, "packed_modules", None) or any(not p.is_floating_point() for p in model.parameters()):
        raise FastleadingError(f"model '{name}': its GGUF weights are packed (still quantised) and cannot be "
                               "written as safetensors")
    quantizer.remove_quantization_config(model)


def publish(tmp: Path, out_dir: Path) -> None:
    """Rename the finished ``tmp`` to ``out_dir`` (which may be missing or an empty folder),
    its folders and files given the modes of the umask (mkdtemp makes 0700, safetensors 0600)."""
    mask = umask()
    for path in [tmp, *tmp.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
    try:
        os.replace(tmp, out_dir)
    except OSError as e:  # out_dir filled (or made a file) since the check
        raise FastleadingError(f"{out_dir}: cannot put the model there ({e.strerror}); nothing was written") from None


def write_sentence_transformers_files(source: Path, out: Path, pooling: str) -> None:
    """Copy the sentence-transformers pipeline of ``source`` into ``out`` (which holds the
    model and tokenizer at its root), its Pooling module set to the run's ``pooling``."""
    modules = json.loads((source / "modules.json").read_text())
    for name in ST_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, out / name)
    for module in modules:
        path, kind = module.get("path", ""), module.get("type", "")
        if kind.endswith("Transformer"):
            # the model is saved at the root: point the Transformer module there
            if path and not (out / "sentence_bert_config.json").exists() \
                    and (source / path / "sentence_bert_config.json").is_file():
                shutil.copy2(source / path / "sentence_bert_config.json", out / "sentence_bert_config.json")
            module["path"] = ""
            continue
        if path and (source / path).is_dir():
            shutil.copytree(source / path, out / path)
        if kind.endswith("Pooling") and (out / path / "config.json").is_file():
            _set_pooling(out / path / "config.json", pooling)
    (out / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")


def _set_pooling(path: Path, pooling: str) -> None:
    conf = json.loads(path.read_text())
    if "pooling_mode" in conf:
        conf["pooling_mode"] = ST_POOLING[pooling]
    else:
        for key in list(conf):
            if key.startswith("pooling_mode_"):
                conf[key] = False
        conf[ST_LEGACY_POOLING[pooling]] = True
    path.write_text(json.dumps(conf, indent=2) + "\n")
