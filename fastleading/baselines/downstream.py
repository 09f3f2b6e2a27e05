"""GNNs on fixed node features: the paper's evaluation protocol (fine-tuned LM -> node
embeddings -> downstream GNN) and the ``pretrained`` / ``shallow`` baselines.

``export_embeddings`` writes a fine-tuned LM's node embeddings as a memory-mapped .npy;
``train_gnn`` trains GCN / GAT / GraphSAGE (torch_geometric layers), APPNP or an MLP on
fixed features full-batch and selects the epoch with the best validation accuracy.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fastleading.config import Config
from fastleading.engine import ops
from fastleading.engine.profiling import peak_memory_bytes
from fastleading.errors import FastleadingError
from fastleading.models.gnn import GNN
from fastleading.run.io import atomic_write, atomic_write_text
from fastleading.run.selection import improves, predict_classes


def train_gnn(graph, features: torch.Tensor, split, kind: str, epochs: int, seed: int = 0,
              device: torch.device | str = "cpu", hidden: int = 256, dropout: float = 0.5, lr: float = 0.01,
              weight_decay: float = 5e-4, alpha: float = 0.1, num_iters: int = 10, layers: int | None = None,
              hops: int | None = None, batch_size: int | None = None) -> dict:
    """Train the GNN ``kind`` (:class:`fastleading.models.gnn.GNN`) on fixed ``features [N, F]``;
    returns accuracies at the epoch with the best valid accuracy (:func:`fit_gnn` without the model)."""
    return fit_gnn(graph, features, split, kind, epochs, seed, device, hidden, dropout, lr, weight_decay, alpha,
                   num_iters, layers, hops, batch_size)[0]


def fit_gnn(graph, features: torch.Tensor, split, kind: str, epochs: int, seed: int = 0,
            device: torch.device | str = "cpu", hidden: int = 256, dropout: float = 0.5, lr: float = 0.01,
            weight_decay: float = 5e-4, alpha: float = 0.1, num_iters: int = 10, layers: int | None = None,
            hops: int | None = None, batch_size: int | None = None, head: str = "mlp",
            on_epoch=None) -> tuple[dict, GNN]:
    """Train the GNN ``kind`` (:class:`fastleading.models.gnn.GNN`, its MLP a ``head``
    :class:`fastleading.models.appnp.Head` for ``appnp`` / ``mlp``) on fixed ``features [N, F]``; returns (accuracies
    at the epoch with the best valid accuracy, the model with that epoch's weights, in eval mode). ``on_epoch(epoch,
    accuracies)`` is called after each epoch's evaluation.

    Full-batch models take one step per epoch on all training nodes; a mini-batched one
    (``gamlp``) takes one per ``batch_size`` training nodes, in a fresh order every epoch,
    and is evaluated in batches. ``layers`` / ``hops`` / ``batch_size`` default to
    ``model.gnn_layers`` / ``model.gnn_hops`` / ``model.gnn_batch_size``.
    """
    defaults = Config().model
    layers = defaults.gnn_layers if layers is None else layers
    hops = defaults.gnn_hops if hops is None else hops
    batch_size = defaults.gnn_batch_size if batch_size is None else batch_size
    if batch_size < 1:
        raise FastleadingError(f"config key 'model.gnn_batch_size': expected a positive integer, got {batch_size}")
    torch.manual_seed(seed)
    device = torch.device(device)
    model = GNN(kind, features.shape[1], graph.num_classes, hidden, dropout, alpha, num_iters, layers, hops,
                head).to(device)
    inputs = model.inputs(graph, features, device)
    labels = graph.labels.to(device)
    train, valid, test = (s.to(device) for s in (split.train, split.valid, split.test))
    evaluated = torch.cat([train, valid, test])
    order = torch.Generator().manual_seed(seed)  # batch order; the global generator drives dropout
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)

    def batches(ids: torch.Tensor, size: int | None) -> tuple[torch.Tensor, ...]:
        # near-equal batches: no batch of 1 node for BatchNorm to trip on
        return (ids,) if size is None else torch.tensor_split(ids, -(-len(ids) // size))

    train_size = batch_size if model.mini_batched else None
    eval_size = 4 * batch_size if model.mini_batched else None
    best = {"valid": -1.0}
    for epoch in range(1, epochs + 1):
        model.train()
        ids = train[torch.randperm(len(train), generator=order).to(device)] if model.mini_batched else train
        total = torch.zeros((), device=device)
        for batch in batches(ids, train_size):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(inputs, batch), labels[batch])
            loss.backward()
            opt.step()
            total += loss.detach() * len(batch)
        model.eval()
        with torch.no_grad():
            pred = torch.cat([predict_classes(model(inputs, batch)) for batch in batches(evaluated, eval_size)])
        correct = (pred == labels[evaluated]).float()
        acc = {name: float(part.mean())
               for name, part in zip(("train", "valid", "test"), correct.split([len(train), len(valid), len(test)]),
                                     strict=True)}
        acc["nonfinite"] = int((pred < 0).sum())
        if on_epoch is not None:
            on_epoch(epoch, acc)
        if improves(acc, best["valid"], "epoch" in best):
            best = {**acc, "epoch": epoch, "loss": float(total) / len(train)}
            best_state = copy.deepcopy(model.state_dict())
    if "epoch" not in best:
        raise FastleadingError(f"{kind} on fixed features: no epoch's evaluation had finite logits "
                               "for every node (the model diverged): lower the learning rate")
    model.load_state_dict(best_state)
    return {"gnn": kind, **best}, model.eval()


def fit_frozen_head(cfg: Config, graph, features: torch.Tensor, split, device: torch.device | str,
                    kind: str = "appnp", epochs: int | None = None, on_epoch=None) -> tuple[dict, GNN]:
    """The ``pretrained`` baseline's model on ``features [N, H]`` (the frozen LM's embeddings):
    ``cfg``'s head (``model.head``, ``model.head_hidden``) followed by ``model.eval_iters`` APPNP steps
    at ``model.alpha`` (``kind='mlp'``: no propagation), trained full batch with dropout 0.5 for
    ``epochs`` (default ``train.downstream_epochs``) and the best validation epoch kept
    (:func:`fit_gnn`). LEADING's head warm-up calls it too (:mod:`fastleading.trainer.warmup`), so
    that its epoch 0 is this baseline by construction."""
    m = cfg.model
    return fit_gnn(graph, features, split, kind, cfg.train.downstream_epochs if epochs is None else epochs,
                   cfg.train.seed, device, m.head_hidden, 0.5, alpha=m.alpha, num_iters=m.eval_iters, head=m.head,
                   on_epoch=on_epoch)


# methods that train no LM: features are fixed before the GNN sees them
FIXED_FEATURE_METHODS = ("pretrained", "shallow")


def train_fixed_features(cfg: Config, out_dir: Path, quiet: bool = False) -> dict:
    """The ``pretrained`` (frozen LM embeddings) and ``shallow`` (BoW / TF-IDF) baselines:
    features -> MLP -> APPNP, the same head and propagation as LEADING's."""
    from fastleading.data import load_dataset
    from fastleading.engine.precision import resolve_device
    from fastleading.run.folder import start_run_folder

    start = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    start_run_folder(out_dir, cfg)
    device = resolve_device(cfg.train.device)
    if cfg.train.method == "shallow":
        graph = load_dataset(cfg.data)
        if graph.features is None:
            raise FastleadingError(f"dataset '{cfg.data.dataset}' has no shallow features; method shallow needs them")
        features = graph.features
    else:
        graph, features = pretrained_embeddings(cfg, quiet)
    m = cfg.model
    if cfg.train.task == "link":  # the same head and propagation, then LEADING's decoder
        result, scores = link_gnn(cfg, graph, torch.as_tensor(np.asarray(features)), "appnp", m.eval_iters)
    else:
        split = graph.split(cfg.data.split)
        result, _ = fit_frozen_head(cfg, graph, torch.as_tensor(np.asarray(features)), split, device)
        scores = {"split": cfg.data.split or graph.default_split, "best_valid_acc": result["valid"],
                  "test_acc": result["test"]}
    summary = {"method": cfg.train.method, "dataset": cfg.data.dataset,
               "model": cfg.model.name if cfg.train.method == "pretrained" else None,
               **scores, "best_epoch": result["epoch"],
               "epochs": cfg.train.downstream_epochs,
               "encodes_per_node_per_epoch": {"grad": 0.0, "nograd": 0.0},
               "peak_memory_bytes": peak_memory_bytes(device), "wall_time_s": round(time.time() - start, 3),
               "phase_time_s": {}, "device": str(device)}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def link_gnn(cfg: Config, graph, features: torch.Tensor, kind: str, num_iters: int) -> tuple[dict, dict]:
    """Link prediction with GNN ``kind`` on fixed ``features`` (:mod:`fastleading.link.baseline`):
    (its result, the link entries of a summary)."""
    from fastleading.data import link_view
    from fastleading.link.baseline import train_link_gnn_cfg
    from fastleading.link.metrics import summary_fields

    view, split = link_view(cfg, graph)
    result = train_link_gnn_cfg(cfg, view, features, split, kind, num_iters)
    return result, summary_fields(result, split.name, split.sizes())


def pretrained_embeddings(cfg: Config, quiet: bool = True):
    """(graph, ``[N, H]`` embeddings of the LM without any fine-tuning)."""
    from fastleading.data import prepare
    from fastleading.engine.precision import resolve_device, resolve_precision
    from fastleading.models.encode import encode_all
    from fastleading.models.lm import LMEncoder

    graph, tokens = prepare(cfg)
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, cfg.train.bank_dtype, device)
    encoder = LMEncoder(cfg.model).to(device)
    emb = encode_all(encoder, tokens, graph.num_nodes, device, precision, cfg.train.eval_batch_size, quiet,
                     token_budget=cfg.train.encode_token_budget, backend=cfg.train.encode_backend)
    return graph, emb.float().cpu()


def run_embeddings(run_dir: Path, quiet: bool = True, overrides: Sequence[str] = ()):
    """(config, graph, ``[N, H]`` embeddings) of a finished run's best fine-tuned LM
    (``overrides``: see :func:`fastleading.run.folder.read_run_config`)."""
    from fastleading.data import prepare
    from fastleading.engine.precision import resolve_device, resolve_precision
    from fastleading.models.encode import encode_all
    from fastleading.run.folder import read_run_config, require_best, require_run_device
    from fastleading.trainer.model import load_best

    cfg = read_run_config(run_dir, overrides=overrides)
    require_run_device(run_dir, cfg)  # before anything is loaded
    device = resolve_device(cfg.train.device)
    if cfg.train.method in FIXED_FEATURE_METHODS:
        return cfg, *pretrained_or_shallow(cfg, quiet)
    require_best(run_dir)  # before the dataset and the model are loaded
    graph, tokens = prepare(cfg)
    precision = resolve_precision(cfg.train.precision, cfg.train.bank_dtype, device)
    model = load_best(run_dir, cfg, graph.num_nodes, graph.num_classes, precision.bank_dtype).to(device)
    emb = encode_all(model.encoder, tokens, graph.num_nodes, device, precision, cfg.train.eval_batch_size, quiet,
                     token_budget=cfg.train.encode_token_budget, backend=cfg.train.encode_backend)
    return cfg, graph, emb.float().cpu()


def pretrained_or_shallow(cfg: Config, quiet: bool):
    if cfg.train.method == "shallow":
        from fastleading.data import load_dataset

        graph = load_dataset(cfg.data)
        return graph, torch.as_tensor(np.asarray(graph.features))
    return pretrained_embeddings(cfg, quiet)


def check_embeddings_path(out_path: str | Path) -> Path:
    """``out_path`` as a Path, or one line when it does not end in ``.npy``."""
    out_path = Path(out_path)
    if out_path.suffix != ".npy":
        raise FastleadingError(f"{out_path}: embeddings are written as .npy; give a path ending in .npy")
    return out_path


def node_ids_path(embeddings: Path) -> Path:
    """Where the node ids of an embeddings file are written: ``emb.npy`` -> ``emb.node_ids.csv``."""
    return embeddings.with_suffix(".node_ids.csv")


def export_embeddings(run_dir: str | Path, out_path: str | Path, quiet: bool = True,
                      overrides: Sequence[str] = ()) -> Path:
    """Write the run's node embeddings ``[N, H]`` float32 to ``out_path`` (.npy, memory-mappable):
    row ``i`` is node ``i``, in the order of the dataset's nodes (a custom dataset's nodes file).
    A dataset whose nodes have ids of their own (``custom``) also gets them beside the file,
    :func:`node_ids_path` (a CSV with the header ``id``, one id per row of the embeddings). The
    run and its ``best.pt`` are recorded beside it (:func:`fastleading.run.folder.provenance_path`):
    ``predict --embeddings`` takes only embeddings of the run's current best weights."""
    from fastleading.run import console
    from fastleading.run.folder import provenance, provenance_path

    out_path = check_embeddings_path(out_path)  # before anything loads
    with console.output(quiet):
        _, graph, emb = run_embeddings(Path(run_dir), quiet, overrides)
    ids, ids_path = graph.metadata.get("node_ids"), node_ids_path(out_path)
    if ids is not None:
        atomic_write_text(ids_path, _csv_column("id", ids))
    else:
        ids_path.unlink(missing_ok=True)  # a previous export's ids would not be these rows'
    made = provenance_path(out_path)
    made.unlink(missing_ok=True)  # an old record must never vouch for the new file, even half-written
    atomic_write(out_path, lambda f: np.save(f, emb.numpy().astype(np.float32)))
    atomic_write_text(made, provenance(Path(run_dir)))
    return out_path


def _csv_column(name: str, values: list[str]) -> str:
    """One CSV column with its header, quoted where a value needs it."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([name])
    writer.writerows([v] for v in values)
    return buf.getvalue()


def downstream(cfg: Config, embeddings: str | Path, out_dir: str | Path | None = None, quiet: bool = True) -> dict:
    """Train ``cfg.model.gnn`` on exported embeddings; writes ``out_dir/downstream-<gnn>.json``.
    The kernel backend is ``train.kernels`` for the call (the previous one is given back)."""
    with ops.use_backend(cfg.train.kernels):
        return _downstream(cfg, embeddings, out_dir)


def _downstream(cfg: Config, embeddings: str | Path, out_dir: str | Path | None) -> dict:
    from fastleading.data import load_dataset
    from fastleading.engine.precision import resolve_device

    path = Path(embeddings)
    if not path.is_file():
        raise FastleadingError(f"{path}: embeddings file not found (write one with `fastleading export`)")
    features = np.load(path, mmap_mode="r")
    graph = load_dataset(cfg.data)
    if features.ndim != 2 or features.shape[0] != graph.num_nodes:
        raise FastleadingError(f"{path}: expected embeddings of shape [{graph.num_nodes}, dim] for dataset "
                               f"'{cfg.data.dataset}', got {list(features.shape)}")
    if cfg.train.task == "link":
        result, scores = link_gnn(cfg, graph, torch.from_numpy(np.array(features, dtype=np.float32)), cfg.model.gnn,
                                  cfg.model.eval_iters)
        result = {**result, **scores, "dataset": cfg.data.dataset, "embeddings": str(path)}
        if out_dir is not None:
            atomic_write_text(Path(out_dir) / f"downstream-link-{cfg.model.gnn}.json",
                              json.dumps(result, indent=2) + "\n")
        return result
    split = graph.split(cfg.data.split)
    # full-batch training reads every row anyway: one writable fp32 copy in memory
    result = train_gnn(graph, torch.from_numpy(np.array(features, dtype=np.float32)), split, cfg.model.gnn,
                       cfg.train.downstream_epochs, cfg.train.seed, resolve_device(cfg.train.device),
                       cfg.model.head_hidden, alpha=cfg.model.alpha, num_iters=cfg.model.eval_iters,
                       layers=cfg.model.gnn_layers, hops=cfg.model.gnn_hops, batch_size=cfg.model.gnn_batch_size)
    result.update({"dataset": cfg.data.dataset, "split": cfg.data.split or graph.default_split,
                   "embeddings": str(path)})
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / f"downstream-{cfg.model.gnn}.json", json.dumps(result, indent=2) + "\n")
    return result
