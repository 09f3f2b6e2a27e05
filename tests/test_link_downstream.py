"""Link prediction on fixed features: the shallow / pretrained baselines and downstream GCN /
SAGE on exported embeddings, on the training graph only."""

import json

import pytest
import torch
from test_link_train import edge_set, link_config

from fastleading.cli import main
from fastleading.commands.methods import train_method
from fastleading.config import Config, apply_overrides
from fastleading.data import load_dataset
from fastleading.models import gnn as gnn_module


def held_out_edges(cfg):
    from fastleading.data import load_link_split

    split = load_link_split(cfg, load_dataset(cfg.data))
    pairs = {(u, v) for u, v in zip(*torch.cat([split.valid, split.test], 1).tolist(), strict=True)}
    return pairs | {(v, u) for u, v in pairs}


def spy_graphs(monkeypatch):
    graphs = []
    real = gnn_module.GNN.inputs

    def inputs(self, graph, features, device):
        graphs.append(edge_set(graph.rowptr, graph.col))
        return real(self, graph, features, device)

    monkeypatch.setattr(gnn_module.GNN, "inputs", inputs)
    return graphs


def test_shallow_link_learns_on_the_training_graph_only(tmp_path, monkeypatch):
    cfg = apply_overrides(Config(), [f"data.cache_dir={tmp_path / 'c'}", "data.synthetic_nodes=1000",
                                     "train.task=link", "train.method=shallow", "train.downstream_epochs=60",
                                     "model.link_dim=16", "model.head_hidden=32", "data.link_eval_negatives=20",
                                     "train.link_select=auc"])
    graphs = spy_graphs(monkeypatch)
    summary = train_method(cfg, tmp_path / "run")
    assert graphs and not graphs[0] & held_out_edges(cfg)
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["task"] == "link" and on_disk["split"] == "85/5/10-seed0"
    # homophilous synthetic graph, class-conditional features: far better than chance
    assert summary["test_auc"] > 0.7 and summary["best_valid"] == summary["best_valid_auc"]
    assert 0 < summary["test_mrr"] <= 1 and "test_hits@10" in summary


def test_pretrained_link_and_downstream_on_exported_link_embeddings(tiny_bert, tmp_path, monkeypatch, capsys):
    # frozen (random tiny) LM features of texts that share class words, on a homophilous graph:
    # above chance (measured 0.636 and 0.633 test AUC for seeds 0 and 1; chance 0.5)
    pre = link_config(tiny_bert, tmp_path / "c", "train.method=pretrained", "train.downstream_epochs=20",
                      "data.synthetic_nodes=400", "data.synthetic_signal=0.8", "model.pooling=mean")
    summary = train_method(pre, tmp_path / "pre")
    assert summary["task"] == "link" and summary["test_auc"] > 0.58
    # a LEADING link run, its LM's embeddings exported, then GCN / SAGE + decoder on them
    cfg = link_config(tiny_bert, tmp_path / "c")
    train_method(cfg, tmp_path / "run")
    emb = tmp_path / "emb.npy"
    assert main(["export", "--quiet", "--run", str(tmp_path / "run"), "--out", str(emb)]) == 0
    graphs = spy_graphs(monkeypatch)
    for gnn in ("gcn", "sage"):
        rc = main(["downstream", "--quiet", "--task", "link", "--gnn", gnn, "--embeddings", str(emb),
                   "--out", str(tmp_path / "run"), f"data.cache_dir={tmp_path / 'c'}", "data.synthetic_nodes=150",
                   "data.synthetic_classes=3",
                   "data.synthetic_words=10", "train.downstream_epochs=5", "model.link_dim=8",
                   "data.link_eval_negatives=20", "model.link_decoder=mlp"])
        assert rc == 0
        result = json.loads((tmp_path / "run" / f"downstream-link-{gnn}.json").read_text())
        # the CLI's plumbing (that this GNN + decoder learns is test_shallow_link_learns_...)
        assert result["gnn"] == gnn and result["task"] == "link"
        assert set(result) >= {"best_valid_auc", "test_auc", "test_mrr", "test_hits@50", "epoch"}
    assert len(graphs) == 2 and not any(g & held_out_edges(cfg) for g in graphs)


def test_gamlp_and_empty_features_are_refused_for_links(tmp_path):
    from fastleading.data import link_view
    from fastleading.errors import FastleadingError
    from fastleading.link.baseline import train_link_gnn

    cfg = apply_overrides(Config(), [f"data.cache_dir={tmp_path / 'c'}", "data.synthetic_nodes=100", "train.task=link"])
    graph = load_dataset(cfg.data)
    view, split = link_view(cfg, graph)
    with pytest.raises(FastleadingError, match="model.gnn"):
        train_link_gnn(view, graph.features, split, "gamlp", 1)
    with pytest.raises(FastleadingError, match="node features of shape"):
        train_link_gnn(view, graph.features[:, :0], split, "gcn", 1)
