"""The one typed configuration shared by the CLI, config files and the Python API.

A :class:`Config` has three sections (``data``, ``model``, ``train``), each a dataclass
whose fields carry a default and a help string. Config files are YAML or TOML with the
same sections; command-line overrides are ``section.field=value``. Unknown keys and
values of the wrong type are rejected with one line naming the key.

    >>> cfg = Config()
    >>> cfg = apply_overrides(cfg, ["train.epochs=2", "model.alpha=0.2"])
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastleading.errors import FastleadingError


def _f(default: Any, help: str, choices: tuple | None = None):
    """A dataclass field with a help string (and optional allowed values)."""
    meta: dict[str, Any] = {"help": help}
    if choices is not None:
        meta["choices"] = choices
    if isinstance(default, (list, dict)):
        return field(default_factory=functools.partial(type(default), default), metadata=meta)  # a copy per instance
    return field(default=default, metadata=meta)


def default_cache_dir() -> str:
    return os.environ.get("FASTLEADING_CACHE", str(Path("~/.cache/fastleading").expanduser()))


def default_data_root() -> str:
    """$FASTLEADING_DATA, else ../shared/data beside the current directory."""
    return os.environ.get("FASTLEADING_DATA", str(Path("../shared/data").resolve()))


@dataclass
class DataConfig:
    dataset: str = _f("synthetic", "Dataset name (see `fastleading info --list`).")
    root: str | None = _f(None, "Folder with the raw dataset; default $FASTLEADING_DATA or ../shared/data.")
    cache_dir: str = _f(default_cache_dir(), "Where prepared graphs and token caches are stored.")
    split: str = _f("", "Named split to train on; '' = the dataset's default split.")
    max_length: int = _f(64, "Tokens per node text (truncate/pad).")
    synthetic_nodes: int = _f(1000, "synthetic: number of nodes.")
    synthetic_classes: int = _f(5, "synthetic: number of classes.")
    synthetic_avg_degree: float = _f(4.0, "synthetic: average (undirected) degree.")
    synthetic_words: int = _f(24, "synthetic: words per node text.")
    synthetic_homophily: float = _f(0.8, "synthetic: fraction of edges that join nodes of the same class.")
    synthetic_signal: float = _f(0.5, "synthetic: fraction of text words drawn from the class's topic words.")
    synthetic_seed: int = _f(0, "synthetic: generator seed.")
    synthetic_tokens: bool = _f(False, "synthetic: write token ids straight into the token cache, no strings "
                                "(scale mode for benchmarks up to ogbn-products size).")
    link_split: str = _f("", "train.task=link: train/valid/test percentages of the edges (10/30/60, 85/5/10), or "
                         "'official' (ogbl-citation2); '' = the dataset's official split, else 85/5/10.")
    link_seed: int = _f(0, "train.task=link: seed of a generated edge split and of its fixed evaluation negatives.")
    link_eval_negatives: int = _f(100, "train.task=link: fixed negatives per validation / test edge of a generated "
                                  "split (MRR / Hits@K rank each edge against its own).")


@dataclass
class ModelConfig:
    name: str = _f("sentence-transformers/all-MiniLM-L6-v2", "Hugging Face model id or local path.")
    pooling: str = _f("auto", "Text pooling: auto (mean for sentence-transformers, cls for encoders, last for "
                      "decoders).", ("auto", "cls", "mean", "last"))
    attn_implementation: str = _f("auto", "auto: flash_attention_2 if flash-attn imports, else sdpa.",
                                  ("auto", "sdpa", "eager", "flash_attention_2"))
    random_init: bool = _f(False, "Build the model from its config with random weights (benchmarks).")
    gradient_checkpointing: bool = _f(False, "Recompute LM activations in backward to save memory.")
    lora: bool = _f(False, "Fine-tune LoRA adapters (peft) instead of all LM weights.")
    lora_r: int = _f(8, "LoRA rank.")
    lora_alpha: int = _f(16, "LoRA scaling.")
    lora_dropout: float = _f(0.05, "LoRA dropout.")
    head: str = _f("mlp", "Head on top of the LM embedding.", ("mlp", "linear"))
    head_hidden: int = _f(256, "Hidden width of the MLP head.")
    head_dropout: float = _f(0.1, "Dropout in the head.")
    order: str = _f("predict-then-propagate", "Apply the head before (logits propagated) or after propagation.",
                    ("predict-then-propagate", "propagate-then-predict"))
    alpha: float = _f(0.1, "APPNP teleport probability a in X = (1-a) Â X + a X_in.")
    num_iters: int = _f(2, "Propagation iterations per training step (warm-started).")
    warm_start: str = _f("auto", "Initial point of the implicit forward on a node: 'history' (paper eq. 4: its last "
                         "output), 'delta' (its last output plus the change of its input since then: no stale "
                         "overshoot when the head or LM moved), 'input' (X_0 = X_in, no forward history); auto: "
                         "delta, input for train.task=link (a history would carry a batch's own edges).",
                         ("auto", "delta", "history", "input"))
    warm_backward: bool = _f(True, "Start the implicit backward from the previous visit's gradient (paper eq. 6) "
                             "rather than from zero.")
    eval_iters: int = _f(50, "Full-graph evaluation: at most this many propagation iterations (LEADING: "
                         "conjugate-gradient iterations towards model.eval_tol).")
    eval_tol: float = _f(1e-4, "Full-graph evaluation of LEADING: solve the fixed point by conjugate gradient "
                         "until each column's relative residual is below this (warm-started from the last evaluation).")
    subgraph_norm: str = _f("auto", "Normalisation of Â on a sampled subgraph: 'weighted' (the full graph's "
                            "degrees and each drawn message weighted by degree / draws: an unbiased estimate of the "
                            "full-graph row; non-symmetric, the backward applies the transpose), 'full-graph' (the "
                            "full graph's degrees: a row keeps only its sampled share of neighbours) or the subgraph's "
                            "own degrees; auto: weighted, full-graph for train.task=link (which does not support "
                            "weighted).",
                            ("auto", "full-graph", "weighted", "subgraph"))
    gnn: str = _f("gcn", "Downstream / shallow GNN (revgat, gamlp: the paper's ogbn-arxiv / ogbn-products models).",
                  ("gcn", "gat", "sage", "appnp", "mlp", "revgat", "gamlp"))
    gnn_layers: int = _f(3, "revgat: reversible GAT blocks; gamlp: layers of each of its MLPs.")
    gnn_hops: int = _f(5, "gamlp: propagation hops K (features X, ÂX, ..., Â^K X, computed once before training).")
    gnn_batch_size: int = _f(10000, "gamlp: training nodes per mini-batch.")
    link_decoder: str = _f("dot", "train.task=link: pair score from the two node representations.", ("dot", "mlp"))
    link_dim: int = _f(128, "train.task=link: width of a node's representation (the head's output).")


@dataclass
class TrainConfig:
    task: str = _f("node", "node: node classification; link: link prediction.", ("node", "link"))
    method: str = _f("leading", "Training method.", ("leading", "supervised", "pretrained", "coupled", "shallow"))
    epochs: int = _f(3, "Training epochs (over the training targets).")
    batch_size: int = _f(32, "Target nodes per step (pipeline 1).")
    refresh_batch_size: int = _f(0, "Nodes re-encoded without gradient per step (pipeline 2); 0 = enough to "
                                 "re-encode every node of train.refresh_scope once per epoch.")
    refresh_scope: str = _f("reachable", "Nodes pipeline 2 re-encodes: 'reachable' (those a training subgraph can "
                            "look up: within len(train.fanouts) hops of a training target; every node for "
                            "train.task=link) or 'all' (the paper).", ("reachable", "all"))
    fanouts: list = _f([10, 5], "Neighbours sampled per hop.")
    fill_bank: bool = _f(True, "Encode every node once (no gradient) before training; LEADING's head warm-up "
                         "trains on what it writes (false needs train.head_warmup_epochs=0).")
    align_to_bank: bool = _f(True, "LEADING: shift each batch of fresh encodings (the targets, pipeline 2's rows) so "
                             "that its mean is that of the bank rows it replaces: the stale neighbours and the "
                             "fresh targets stay in one frame, and the LM gets no gradient to translate every "
                             "embedding at once; every evaluation moves its fresh rows back into the bank's "
                             "frame and the model keeps that shift for inference (docs/training.md). For "
                             "pretrained LMs; off for a randomly initialised one.")
    lr_lm: float = _f(1e-5, "Learning rate of the LM.")
    lr_head: float = _f(1e-4, "Learning rate of the head while the LM is fine-tuned (after the head warm-up, which "
                        "trains it at train.head_warmup_lr); raise it (e.g. 1e-3) when there is no warm-up.")
    lr_layer_decay: float = _f(1.0, "Layer-wise LR decay of the LM: layer i of L (counted from the input) trains at "
                               "lr_lm x decay^(L-i), the embeddings at lr_lm x decay^L (1 = one rate).")
    weight_decay: float = _f(0.01, "AdamW weight decay.")
    head_warmup_epochs: int = _f(-1, "Before the LM is fine-tuned, train the head (and the implicit layer's "
                                 "histories) this many epochs on the frozen LM's embeddings (LP-FT; leading and "
                                 "supervised; pretrained and shallow ignore it), evaluating every epoch without an "
                                 "encode, and start from the best epoch's head. -1 = auto: as the frozen baseline's "
                                 "head is trained, 200 epochs, fewer where that is more than about 2,000 head steps "
                                 "(at least one; 0 for coupled and under DeepSpeed); 0 = none.")
    select_warmup: bool = _f(True, "Whether the warm-up's epoch 0 (the frozen LM with its best head) may be the run's "
                             "best: false keeps the best fine-tuned evaluation in best.pt. Epoch 0's validation "
                             "accuracy is the best of up to 200 head epochs, optimistic against a few fine-tuning "
                             "evaluations (docs/training.md).")
    head_warmup_lr: float = _f(1e-3, "Learning rate of the head in the warm-up (0 = train.lr_head); train.lr_head is "
                               "then the head's rate while the LM is fine-tuned.")
    warmup_ratio: float = _f(0.1, "Fraction of steps with linear warm-up.")
    schedule: str = _f("linear", "Decay after warm-up.", ("linear", "cosine", "constant"))
    grad_clip: float = _f(1.0, "Max gradient norm (0 = off).")
    grad_accum: int = _f(1, "Steps of gradient accumulation per optimizer step.")
    eval_every: int = _f(0, "Evaluate every this many epochs; 0 = auto: after the first epoch whose LM encodes since "
                         "the last evaluation cost at least one evaluation (every node encoded once; an encode "
                         "with gradient counts 3), so that evaluation is at most about half of the LM's work.")
    eval_batch_size: int = _f(256, "At most this many nodes per no-gradient forward in evaluation and bank filling "
                              "(see train.encode_token_budget).")
    encode_token_budget: int = _f(16384, "Token positions (rows x padded width) per no-gradient forward: evaluation, "
                                  "bank fill and pipeline 2 encode their nodes longest first in micro-batches "
                                  "of at most this many (and at most eval_batch_size nodes in evaluation and "
                                  "the fill); a longer single text goes alone. 0 = off: id / refresh order, "
                                  "padded to each batch's longest text.")
    encode_backend: str = _f("auto", "What runs the LM in no-gradient encodes whose weights stay fixed while they run "
                             "(bank fill, evaluation, predict, export, downstream features; not pipeline 2's "
                             "refresh): auto (for fp32 runs on the CPU of a single process: OpenVINO if "
                             "installed, else ONNX Runtime if installed, else eager; "
                             "benchmarks/results/cpu-encode-2026-12-07.json), eager (PyTorch, under "
                             "train.precision), openvino, onnx (fp32; extras openvino / onnx).",
                             ("auto", "eager", "onnx", "openvino"))
    patience: int = _f(0, "Stop after this many evaluations without a better valid accuracy (0 = never).")
    seed: int = _f(0, "Random seed.")
    device: str = _f("auto", "auto, cpu, cuda, cuda:N.")
    precision: str = _f("auto", "auto (bf16 on GPUs that have it and on CPUs with native bf16 instructions: "
                        "AVX512-BF16, AMX or Arm BF16; else fp32), bf16, fp16, fp32.",
                        ("auto", "bf16", "fp16", "fp32"))
    bank_dtype: str = _f("auto", "Memory-bank dtype: auto (bf16 on GPU, fp32 on CPU), bf16, fp16, fp32.",
                         ("auto", "bf16", "fp16", "fp32"))
    overlap: bool = _f(True, "Run pipeline 2 on its own CUDA stream (GPU only).")
    kernels: str = _f("auto", "auto (Triton on CUDA, the native C++ step on CPU), triton, native, torch (the PyTorch "
                      "reference).", ("auto", "triton", "native", "torch"))
    checkpoint_every: int = _f(0, "Steps between checkpoints besides the epoch ends and train.checkpoint_minutes "
                               "(0 = none).")
    checkpoint_minutes: float = _f(30.0, "Wall-clock minutes between checkpoints besides the epoch ends (0 = none); "
                                   "checked at the logging points.")
    log_every: int = _f(10, "Steps between metrics lines.")
    profile: bool = _f(False, "Write a torch.profiler trace and a per-phase time table.")
    report_to: str = _f("none", "Experiment tracking besides metrics.jsonl: none, tensorboard (event files in "
                        "OUT/tensorboard), wandb (offline unless WANDB_MODE is set).", ("none", "tensorboard", "wandb"))
    deepspeed: str | None = _f(None, "DeepSpeed preset (zero1, zero2, zero3, zero2-offload, zero3-offload) or JSON "
                               "file.")
    downstream_epochs: int = _f(200, "Epochs of the downstream / shallow GNN.")
    max_steps: int = _f(0, "Stop after this many steps (0 = no limit).")
    link_negatives: int = _f(1, "train.task=link: random negative pairs per training edge in a step.")
    link_hits: list = _f([10, 50, 100], "train.task=link: K of the reported Hits@K.")
    link_select: str = _f("mrr", "train.task=link: validation metric that picks the best epoch.", ("mrr", "auc"))
    max_bad_steps: int = _f(10, "Stop after this many consecutive optimizer steps whose loss or gradients were "
                            "non-finite (each is skipped); 0 = never stop.")
    keep: str = _f("all", "What stays in the run folder when the run finishes: all (checkpoint.pt too: the run can be "
                   "resumed and extended) or best (best.pt, metrics and summary; checkpoint.pt, about 3x best.pt "
                   "with its optimizer state, is removed).", ("all", "best"))
    keep_optimizer_state: bool = _f(False, "Keep the optimizer state (AdamW's two moments per weight, about 2/3 of "
                                    "checkpoint.pt) in checkpoint.pt once the run has finished (its epochs, or "
                                    "patience; a run stopped by train.max_steps keeps it always). Without it a "
                                    "resume that extends the run starts the moments afresh; every other part of "
                                    "the state is kept.")
    max_bad_evals: int = _f(2, "Stop after this many consecutive evaluations with non-finite logits or link "
                            "scores (such an evaluation is never selected as best); 0 = never stop.")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """The config as the text of a run folder's ``config.json`` (read back by :func:`load_config`)."""
        return json.dumps(self.to_dict(), indent=2) + "\n"


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp`` or raise naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, args[0], where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise FastleadingError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise FastleadingError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise FastleadingError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise FastleadingError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise FastleadingError(f"{where}: expected a string, got {value!r}")
    if tp is list or origin is list:
        if isinstance(value, str):
            text = value.strip().strip("[]")
            value = [v for v in text.replace(",", " ").split() if v]
        if isinstance(value, (list, tuple)):
            return [_coerce(v, int, f"{where}[{i}]") for i, v in enumerate(value)]
        raise FastleadingError(f"{where}: expected a list of integers, got {value!r}")
    return value


def _set(section_obj: Any, section: str, key: str, value: Any) -> None:
    types_ = _field_types(type(section_obj))
    if key not in types_:
        known = ", ".join(sorted(types_))
        raise FastleadingError(f"unknown config key '{section}.{key}' (known keys of [{section}]: {known})")
    where = f"config key '{section}.{key}'"
    value = _coerce(value, types_[key], where)
    choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(section_obj)}[key]
    if choices and value not in choices:
        raise FastleadingError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
    setattr(section_obj, key, value)


def from_dict(d: dict, base: Config | None = None, source: str = "config") -> Config:
    """Build a Config from nested ``{section: {key: value}}``, checking every key and type."""
    cfg = base if base is not None else Config()
    if not isinstance(d, dict):
        raise FastleadingError(f"{source}: expected a mapping of sections (data, model, train)")
    for section, values in d.items():
        if section not in SECTIONS:
            raise FastleadingError(f"{source}: unknown section '{section}' (expected data, model or train)")
        if not isinstance(values, dict):
            raise FastleadingError(f"{source}: section '{section}' must be a mapping of keys to values")
        try:
            for key, value in values.items():
                _set(getattr(cfg, section), section, key, value)
        except FastleadingError as e:
            raise _in_file(e, source) from None
    try:
        validate(cfg)
    except FastleadingError as e:
        raise _in_file(e, source) from None
    return cfg


def _in_file(error: FastleadingError, source: str) -> FastleadingError:
    """``error`` naming the file it comes from (``source``; left as it is for ``"config"``)."""
    return error if source == "config" else FastleadingError(f"{source}: {error}")


def load_config(path: str | Path) -> Config:
    """Read a YAML (.yaml/.yml), TOML (.toml) or JSON (.json) config file."""
    path = Path(path)
    if not path.is_file():
        raise FastleadingError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (some editors write one) is not content
    try:
        if path.suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # Python 3.10: the same parser, as the package it came from
                import tomli as tomllib

            d = tomllib.loads(text)
        elif path.suffix == ".json":
            d = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            d = yaml.safe_load(text) or {}
        else:
            raise FastleadingError(f"{path}: unknown config format (expected .yaml, .yml, .toml or .json)")
    except FastleadingError:
        raise
    except Exception as e:  # parse errors of any of the three formats
        raise FastleadingError(f"{path}: cannot parse config: {e}") from None
    return from_dict(d, source=str(path))


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``section.key=value`` strings (``value`` parsed by the field's type)."""
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise FastleadingError(f"override '{item}': expected section.key=value, e.g. train.epochs=3")
        dotted, value = item.split("=", 1)
        section, key = dotted.split(".", 1)
        if section not in SECTIONS:
            raise FastleadingError(f"override '{item}': unknown section '{section}' (expected data, model or train)")
        _set(getattr(cfg, section), section, key, value)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Cross-field checks that a type alone cannot express."""
    t, m, d = cfg.train, cfg.model, cfg.data
    if t.head_warmup_lr < 0:
        raise FastleadingError(f"config key 'train.head_warmup_lr': expected >= 0, got {t.head_warmup_lr}")
    if t.eval_every < 0 or t.patience < 0:
        raise FastleadingError("config keys 'train.eval_every' / 'train.patience': "
                               f"expected >= 0, got {t.eval_every} / {t.patience}")
    if t.head_warmup_epochs < -1:
        raise FastleadingError(f"config key 'train.head_warmup_epochs': expected -1 (auto), 0 or more, got "
                               f"{t.head_warmup_epochs}")
    if not 0.0 < t.lr_layer_decay <= 1.0:
        raise FastleadingError(f"config key 'train.lr_layer_decay': expected 0 < decay <= 1, got {t.lr_layer_decay}")
    # the fixed-feature methods (pretrained, shallow) train their head to the end anyway: a study's
    # one override for every method stays valid for them
    if t.head_warmup_epochs > 0 and t.method not in ("leading", "supervised", "pretrained", "shallow"):
        raise FastleadingError(f"config key 'train.head_warmup_epochs': applies to train.method leading or "
                               f"supervised, not {t.method}")
    if not t.fill_bank and t.head_warmup_epochs != 0 and t.method == "leading" and not t.deepspeed:
        # the warm-up trains and evaluates the head on the bank, which only the fill writes
        raise FastleadingError(f"config keys 'train.fill_bank' / 'train.head_warmup_epochs': train.fill_bank=false "
                               f"leaves the bank the head warm-up trains on all zeros; set "
                               f"train.head_warmup_epochs=0 (no warm-up) or keep the fill "
                               f"(train.head_warmup_epochs is {t.head_warmup_epochs})")
    if t.head_warmup_epochs > 0 and t.deepspeed:
        raise FastleadingError("config key 'train.head_warmup_epochs': not supported with train.deepspeed "
                               "(the engine owns the head's optimizer)")
    if t.task == "link" and m.warm_start in ("history", "delta"):
        raise FastleadingError(f"config key 'model.warm_start': {m.warm_start!r} would carry a link batch's own "
                               "edges into its scores through the forward history; use input (or auto)")
    positive = {"train.epochs": t.epochs, "train.batch_size": t.batch_size, "train.grad_accum": t.grad_accum,
                "train.eval_batch_size": t.eval_batch_size, "model.num_iters": m.num_iters,
                "model.eval_iters": m.eval_iters, "data.max_length": d.max_length,
                "model.gnn_layers": m.gnn_layers, "model.gnn_hops": m.gnn_hops,
                "model.gnn_batch_size": m.gnn_batch_size, "model.link_dim": m.link_dim,
                "train.link_negatives": t.link_negatives, "data.link_eval_negatives": d.link_eval_negatives}
    for name, v in positive.items():
        if v < 1:
            raise FastleadingError(f"config key '{name}': expected a positive integer, got {v}")
    if not 0.0 < m.alpha <= 1.0:
        raise FastleadingError(f"config key 'model.alpha': expected 0 < alpha <= 1, got {m.alpha}")
    if not t.fanouts or any(f < 1 for f in t.fanouts):
        raise FastleadingError(f"config key 'train.fanouts': expected a non-empty list of positive integers, "
                               f"got {t.fanouts}")
    if t.checkpoint_minutes < 0 or t.checkpoint_every < 0:
        raise FastleadingError("config keys 'train.checkpoint_every' / 'train.checkpoint_minutes': expected >= 0, got "
                               f"{t.checkpoint_every} / {t.checkpoint_minutes}")
    if not 0.0 < m.eval_tol < 1.0:
        raise FastleadingError(f"config key 'model.eval_tol': expected 0 < eval_tol < 1, got {m.eval_tol}")
    for name, v in (("train.max_bad_steps", t.max_bad_steps), ("train.max_bad_evals", t.max_bad_evals)):
        if v < 0:
            raise FastleadingError(f"config key '{name}': expected >= 0, got {v}")
    if t.refresh_batch_size < 0:
        raise FastleadingError(f"config key 'train.refresh_batch_size': expected >= 0, got {t.refresh_batch_size}")
    if not t.link_hits or any(k < 1 for k in t.link_hits):
        raise FastleadingError(f"config key 'train.link_hits': expected a non-empty list of positive integers, "
                               f"got {t.link_hits}")
    if d.link_split and d.link_split != "official":
        parse_ratios(d.link_split)
    if t.encode_token_budget < 0:
        raise FastleadingError(f"config key 'train.encode_token_budget': expected >= 0, got {t.encode_token_budget}")
    if m.subgraph_norm == "weighted" and t.task == "link":
        # the link step drops its batch's edges from the symmetric sampled CSR, not from the draws
        raise FastleadingError("config key 'model.subgraph_norm': 'weighted' is not supported with train.task=link "
                               "(use full-graph)")


def parse_ratios(text: str) -> tuple[float, float, float]:
    """``data.link_split`` percentages: ``"10/30/60"`` -> ``(0.1, 0.3, 0.6)``; the three must sum
    to 100 and the training share must be positive."""
    parts = text.split("/")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or any(v < 0 for v in values) or abs(sum(values) - 100.0) > 1e-6 or values[0] <= 0:
        raise FastleadingError(f"config key 'data.link_split': expected train/valid/test percentages summing to "
                               f"100 such as 85/5/10 or 10/30/60, or 'official', got {text!r}")
    return values[0] / 100.0, values[1] / 100.0, values[2] / 100.0


def field_help(cls) -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cls)}
