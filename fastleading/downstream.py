"""GNNs on fixed node features: the paper's evaluation protocol (fine-tuned LM -> node
embeddings -> downstream GNN) and the ``pretrained`` / ``shallow`` baselines.

``export_embeddings`` writes a fine-tuned LM's node embeddings as a memory-mapped .npy;
``train_gnn`` trains GCN / GAT / GraphSAGE (torch_geometric layers), APPNP or an MLP on
fixed features full-batch and selects the epoch with the best validation accuracy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fastleading import checkpoint
from fastleading.config import Config, from_dict
from fastleading.errors import FastleadingError
from fastleading.io import atomic_write, atomic_write_text
from fastleading.nn import Head, propagate
from fastleading.profiling import peak_memory_bytes


class GNN(nn.Module):
    """Two-layer GCN / GAT / GraphSAGE, MLP->APPNP (``appnp``), or a plain ``mlp``."""

    def __init__(self, kind: str, in_dim: int, num_classes: int, hidden: int, dropout: float,
                 alpha: float, num_iters: int):
        super().__init__()
        from torch_geometric.nn import GATConv, GCNConv, SAGEConv

        self.kind, self.dropout, self.alpha, self.num_iters = kind, dropout, alpha, num_iters
        if kind in ("appnp", "mlp"):
            self.head = Head(in_dim, num_classes, hidden, dropout)
        elif kind == "gcn":
            self.convs = nn.ModuleList([GCNConv(in_dim, hidden), GCNConv(hidden, num_classes)])
        elif kind == "sage":
            self.convs = nn.ModuleList([SAGEConv(in_dim, hidden), SAGEConv(hidden, num_classes)])
        elif kind == "gat":
            heads = 8
            self.convs = nn.ModuleList([GATConv(in_dim, hidden // heads, heads=heads, dropout=dropout),
                                        GATConv(hidden, num_classes, heads=1, dropout=dropout)])
        else:
            raise FastleadingError(f"config key 'model.gnn': expected gcn, gat, sage, appnp or mlp, got {kind!r}")

    def forward(self, x, edge_index, rowptr, col):
        if self.kind == "mlp":
            return self.head(x)
        if self.kind == "appnp":
            return propagate(self.head(x), rowptr, col, self.alpha, self.num_iters)
        for i, conv in enumerate(self.convs):
            x = F.dropout(x, self.dropout, self.training)
            x = conv(x, edge_index)
            if i < len(self.convs) - 1:
                x = F.elu(x)
        return x


def edge_index_of(rowptr: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
    """``[2, E]`` (source, target) of a symmetric CSR."""
    row = torch.repeat_interleave(torch.arange(len(rowptr) - 1), rowptr[1:] - rowptr[:-1])
    return torch.stack([col.long(), row])


def train_gnn(graph, features: torch.Tensor, split, kind: str, epochs: int, seed: int = 0,
              device: torch.device | str = "cpu", hidden: int = 256, dropout: float = 0.5, lr: float = 0.01,
              weight_decay: float = 5e-4, alpha: float = 0.1, num_iters: int = 10) -> dict:
    """Full-batch training on fixed ``features [N, F]``; returns accuracies at the best valid epoch."""
    torch.manual_seed(seed)
    device = torch.device(device)
    x = features.to(device=device, dtype=torch.float32)
    rowptr, col = graph.rowptr.to(device), graph.col.to(device)
    edge_index = edge_index_of(graph.rowptr, graph.col).to(device)
    labels = graph.labels.to(device)
    train, valid, test = (s.to(device) for s in (split.train, split.valid, split.test))
    model = GNN(kind, x.shape[1], graph.num_classes, hidden, dropout, alpha, num_iters).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best = {"valid": -1.0}
    for epoch in range(1, epochs + 1):
        model.train()
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x, edge_index, rowptr, col)[train], labels[train])
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            pred = model(x, edge_index, rowptr, col).argmax(-1)
        acc = {name: float((pred[idx] == labels[idx]).float().mean())
               for name, idx in (("train", train), ("valid", valid), ("test", test))}
        if acc["valid"] > best["valid"]:
            best = {**acc, "epoch": epoch, "loss": float(loss.detach())}
    return {"gnn": kind, **best}


# methods that train no LM: features are fixed before the GNN sees them
FIXED_FEATURE_METHODS = ("pretrained", "shallow")


def train_fixed_features(cfg: Config, out_dir: Path, quiet: bool = False) -> dict:
    """The ``pretrained`` (frozen LM embeddings) and ``shallow`` (BoW / TF-IDF) baselines:
    features -> MLP -> APPNP, the same head and propagation as LEADING's."""
    from fastleading.data import load_dataset
    from fastleading.precision import resolve_device

    start = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(out_dir / "config.json")
    device = resolve_device(cfg.train.device)
    if cfg.train.method == "shallow":
        graph = load_dataset(cfg.data)
        if graph.features is None:
            raise FastleadingError(f"dataset '{cfg.data.dataset}' has no shallow features; method shallow needs them")
        features = graph.features
    else:
        graph, features = pretrained_embeddings(cfg, quiet)
    split = graph.split(cfg.data.split)
    m = cfg.model
    result = train_gnn(graph, torch.as_tensor(np.asarray(features)), split, "appnp", cfg.train.downstream_epochs,
                       cfg.train.seed, device, m.head_hidden, 0.5, alpha=m.alpha, num_iters=m.eval_iters)
    summary = {"method": cfg.train.method, "dataset": cfg.data.dataset,
               "model": cfg.model.name if cfg.train.method == "pretrained" else None,
               "split": cfg.data.split or graph.default_split,
               "best_valid_acc": result["valid"], "test_acc": result["test"], "best_epoch": result["epoch"],
               "epochs": cfg.train.downstream_epochs,
               "encodes_per_node_per_epoch": {"grad": 0.0, "nograd": 0.0},
               "peak_memory_bytes": peak_memory_bytes(device), "wall_time_s": round(time.time() - start, 3),
               "phase_time_s": {}, "device": str(device)}
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def pretrained_embeddings(cfg: Config, quiet: bool = True):
    """(graph, ``[N, H]`` embeddings of the LM without any fine-tuning)."""
    from fastleading.data import prepare
    from fastleading.encode import encode_all
    from fastleading.lm import LMEncoder
    from fastleading.precision import resolve_device, resolve_precision

    graph, tokens = prepare(cfg)
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, cfg.train.bank_dtype, device)
    encoder = LMEncoder(cfg.model).to(device)
    emb = encode_all(encoder, tokens, graph.num_nodes, device, precision, cfg.train.eval_batch_size, quiet)
    return graph, emb.float().cpu()


def run_embeddings(run_dir: Path, quiet: bool = True):
    """(config, graph, ``[N, H]`` embeddings) of a finished run's best fine-tuned LM."""
    from fastleading.data import prepare
    from fastleading.encode import encode_all
    from fastleading.precision import resolve_device, resolve_precision
    from fastleading.trainer.model import NodeClassifier

    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise FastleadingError(f"{cfg_path}: not a run folder (expected config.json written by `fastleading train`)")
    cfg = from_dict(json.loads(cfg_path.read_text()), source=str(cfg_path))
    if cfg.train.method in FIXED_FEATURE_METHODS:
        return cfg, *pretrained_or_shallow(cfg, quiet)
    graph, tokens = prepare(cfg)
    device = resolve_device(cfg.train.device)
    precision = resolve_precision(cfg.train.precision, cfg.train.bank_dtype, device)
    model = NodeClassifier(cfg, graph.num_nodes, graph.num_classes, precision.bank_dtype)
    model.load_state_dict(checkpoint.load(run_dir / checkpoint.BEST)["model"])
    model.to(device)
    emb = encode_all(model.encoder, tokens, graph.num_nodes, device, precision, cfg.train.eval_batch_size, quiet)
    return cfg, graph, emb.float().cpu()


def pretrained_or_shallow(cfg: Config, quiet: bool):
    if cfg.train.method == "shallow":
        from fastleading.data import load_dataset

        graph = load_dataset(cfg.data)
        return graph, torch.as_tensor(np.asarray(graph.features))
    return pretrained_embeddings(cfg, quiet)


def export_embeddings(run_dir: str | Path, out_path: str | Path, quiet: bool = True) -> Path:
    """Write the run's node embeddings ``[N, H]`` float32 to ``out_path`` (.npy, memory-mappable)."""
    _, _, emb = run_embeddings(Path(run_dir), quiet)
    out_path = Path(out_path)
    if out_path.suffix != ".npy":
        raise FastleadingError(f"{out_path}: embeddings are written as .npy; give a path ending in .npy")
    return atomic_write(out_path, lambda f: np.save(f, emb.numpy().astype(np.float32)))


def downstream(cfg: Config, embeddings: str | Path, out_dir: str | Path | None = None, quiet: bool = True) -> dict:
    """Train ``cfg.model.gnn`` on exported embeddings; writes ``out_dir/downstream-<gnn>.json``."""
    from fastleading.data import load_dataset
    from fastleading.precision import resolve_device

    path = Path(embeddings)
    if not path.is_file():
        raise FastleadingError(f"{path}: embeddings file not found (write one with `fastleading export`)")
    features = np.load(path, mmap_mode="r")
    graph = load_dataset(cfg.data)
    if features.ndim != 2 or features.shape[0] != graph.num_nodes:
        raise FastleadingError(f"{path}: expected embeddings of shape [{graph.num_nodes}, dim] for dataset "
                               f"'{cfg.data.dataset}', got {list(features.shape)}")
    split = graph.split(cfg.data.split)
    # full-batch training reads every row anyway: one writable fp32 copy in memory
    result = train_gnn(graph, torch.from_numpy(np.array(features, dtype=np.float32)), split, cfg.model.gnn,
                       cfg.train.downstream_epochs, cfg.train.seed, resolve_device(cfg.train.device),
                       cfg.model.head_hidden, alpha=cfg.model.alpha, num_iters=cfg.model.eval_iters)
    result.update({"dataset": cfg.data.dataset, "split": cfg.data.split or graph.default_split,
                   "embeddings": str(path)})
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / f"downstream-{cfg.model.gnn}.json", json.dumps(result, indent=2) + "\n")
    return result
