"""Link prediction: the edge split, the training graph, no label leakage in a step or in the
training graph, the evaluation against a brute-force reference, and runs end to end."""

import json
import math
import re
from pathlib import Path

import pytest
import torch
from test_train import small_config

from fastleading.config import Config, apply_overrides
from fastleading.data import load_dataset
from fastleading.errors import FastleadingError
from fastleading.link.decoder import LinkDecoder, score_pairs, split_metrics
from fastleading.link.split import drop_edges, random_link_split, training_graph
from fastleading.trainer import evaluate as evaluate_module
from fastleading.trainer.loop import build_trainer, train


def link_config(model: str, cache: Path, *overrides: str) -> Config:
    return small_config(model, cache, "data.synthetic_nodes=150", "data.synthetic_words=10", "data.max_length=12",
                        "train.epochs=1", "model.head_hidden=16", "model.link_dim=8", "train.task=link",
                        "data.link_eval_negatives=20", *overrides)


def edge_set(rowptr, col):
    rows = torch.repeat_interleave(torch.arange(len(rowptr) - 1), rowptr[1:] - rowptr[:-1])
    return set(zip(rows.tolist(), col.long().tolist(), strict=True))


def toy_graph(seed=0, n=60, m=200):
    from fastleading.engine.graph import build_csr

    g = torch.Generator().manual_seed(seed)
    return build_csr(torch.randint(0, n, (m,), generator=g), torch.randint(0, n, (m,), generator=g), n)


# ----------------------------------------------------------------------------- split
@pytest.mark.parametrize("ratios", ["10/30/60", "85/5/10"])
def test_random_split_partitions_the_edges_and_draws_fixed_non_edge_negatives(ratios):
    rowptr, col = toy_graph()
    edges = {(u, v) for u, v in edge_set(rowptr, col) if u < v}
    split = random_link_split(rowptr, col, ratios, seed=3, num_negatives=7)
    parts = [set(zip(*e.tolist(), strict=True)) for e in (split.train, split.valid, split.test)]
    assert sum(len(p) for p in parts) == len(edges) and set().union(*parts) == edges  # a partition
    fr = [float(r) / 100 for r in ratios.split("/")]
    assert abs(len(parts[0]) - fr[0] * len(edges)) <= 1 and abs(len(parts[1]) - fr[1] * len(edges)) <= 1
    both = edges | {(v, u) for u, v in edges}
    for pos, neg in ((split.valid, split.valid_neg), (split.test, split.test_neg)):
        assert neg.shape == (pos.shape[1], 7)
        for s, row in zip(pos[0].tolist(), neg.tolist(), strict=True):
            assert all(t != s and (s, t) not in both for t in row)
    again = random_link_split(rowptr, col, ratios, seed=3, num_negatives=7)
    assert all(torch.equal(getattr(split, k), getattr(again, k)) for k in ("train", "valid", "test", "test_neg"))
    other = random_link_split(rowptr, col, ratios, seed=4, num_negatives=7)
    assert not torch.equal(split.train, other.train)


def test_training_graph_is_the_training_edges_both_ways():
    rowptr, col = toy_graph(1)
    split = random_link_split(rowptr, col, "10/30/60", seed=0, num_negatives=3)
    t_rowptr, t_col = training_graph(rowptr, col, split)
    expect = {(u, v) for u, v in zip(*split.train.tolist(), strict=True)}
    expect |= {(v, u) for u, v in expect}
    assert edge_set(t_rowptr, t_col) == expect
    assert t_col.dtype == col.dtype


def test_drop_edges_matches_a_set_reference():
    rowptr, col = toy_graph(2)
    pairs = torch.tensor([[0, 5, 7, 59], [1, 9, 7, 3]])
    new_rowptr, new_col, keep = drop_edges(rowptr, col, pairs[0], pairs[1])
    drop = {(u, v) for u, v in zip(*pairs.tolist(), strict=True)}
    drop |= {(v, u) for u, v in drop}
    assert edge_set(new_rowptr, new_col) == edge_set(rowptr, col) - drop
    assert int(keep.sum()) == len(new_col)


def test_bad_link_split_is_one_line_naming_the_field():
    for bad in ("1/2", "50/50/10", "a/b/c", "0/50/50"):
        with pytest.raises(FastleadingError, match="data.link_split"):
            apply_overrides(Config(), [f"data.link_split={bad}"])


# ----------------------------------------------------------------------------- no leakage
def capture_propagations(tr, monkeypatch):
    """Every (node_ids, rowptr, col, dinv) the model propagates over in training steps."""
    seen = []
    real = type(tr.run.model).classify

    def spy(self, x_in, rowptr, col, node_ids, implicit, num_iters, dinv=None, num_targets=None):
        seen.append((node_ids.cpu(), rowptr.cpu(), col.cpu(), None if dinv is None else dinv.cpu()))
        return real(self, x_in, rowptr, col, node_ids, implicit, num_iters, dinv, num_targets)

    monkeypatch.setattr(type(tr.run.model), "classify", spy)
    return seen


def global_edges(node_ids, rowptr, col):
    return {(int(node_ids[u]), int(node_ids[v])) for u, v in edge_set(rowptr, col)}


@pytest.mark.parametrize("method", ["leading", "coupled"])
def test_a_step_never_sees_its_own_training_edges(tiny_bert, tmp_path, monkeypatch, method):
    # fanout above every degree: the sampled subgraph holds every training-graph edge among the
    # targets, so without the drop each positive edge of the batch WOULD be in it (checked below)
    cfg = link_config(tiny_bert, tmp_path / "c", f"train.method={method}", "train.fanouts=1000",
                      "train.link_negatives=2")
    tr = build_trainer(cfg, tmp_path / "run")
    seen = capture_propagations(tr, monkeypatch)
    run, task = tr.run, tr.task
    edge_ids = torch.arange(10)
    targets = run.begin_batch(edge_ids)
    batch = {(int(u), int(v)) for u, v in zip(*task.split.train[:, edge_ids].tolist(), strict=True)}
    undropped = run.sampler.inner.sample(targets, seed=cfg.train.seed * 1_000_003 + run.step)
    before = global_edges(undropped.node_ids, undropped.rowptr, undropped.col)
    assert all((u, v) in before and (v, u) in before for u, v in batch)  # the test can fail
    loss = task.step(run, edge_ids, None)
    assert torch.isfinite(loss)
    node_ids, rowptr, col, dinv = seen[-1]
    after = global_edges(node_ids, rowptr, col)
    assert after == before - batch - {(v, u) for u, v in batch}
    assert set(node_ids[:len(targets)].tolist()) == set(targets.tolist())
    # the normalisation: training-graph degree less this batch's edges, as if they did not exist
    deg = (tr.graph.rowptr[1:] - tr.graph.rowptr[:-1])[node_ids].double()
    lost = torch.zeros(len(node_ids), dtype=torch.float64)
    for u, v in batch:
        lost[(node_ids == u).nonzero()] += 1
        lost[(node_ids == v).nonzero()] += 1
    torch.testing.assert_close(dinv.double(), (deg - lost + 1).rsqrt(), rtol=1e-6, atol=0)


def test_the_degree_never_counts_the_batchs_own_edge_between_hubs(tiny_bert, tmp_path, monkeypatch):
    """Hubs of degree 61, fanouts [10, 5]: most of the time neither endpoint of a hub-hub edge
    draws the other, so the sampled CSR never held the edge; the normalisation must still leave
    it out of both degrees (the full-graph degree counts it whether drawn or not)."""
    import fastleading as fl

    hubs, leaves = 6, 56  # 6 hubs joined to each other (5) and to 56 leaves each: degree 61
    edges = [(a, b) for a in range(hubs) for b in range(a + 1, hubs)]
    edges += [(h, hubs + h * leaves + j) for h in range(hubs) for j in range(leaves)]
    n = hubs + hubs * leaves
    graph = fl.graph_from_arrays(torch.tensor(edges).T, [f"node {i} text" for i in range(n)])
    graph.save(tmp_path / "g")
    cfg = link_config(tiny_bert, tmp_path / "c", "data.dataset=saved", f"data.root={tmp_path / 'g'}",
                      "train.fanouts=10,5", "train.link_negatives=1", "data.link_split=85/5/10")
    tr = build_trainer(cfg, tmp_path / "run")
    seen = capture_propagations(tr, monkeypatch)
    run, task = tr.run, tr.task
    deg_all = tr.graph.rowptr[1:] - tr.graph.rowptr[:-1]
    train_edges = task.split.train
    hub_hub = [e for e in range(train_edges.shape[1]) if int(train_edges[:, e].max()) < hubs]
    assert len(hub_hub) >= 5 and all(int(deg_all[u]) > 10 for u in range(hubs))
    undrawn = 0
    for e in hub_hub * 5:
        u, v = (int(x) for x in train_edges[:, e])
        targets = run.begin_batch(torch.tensor([e]))
        sub = run.sampler.inner.sample(targets, seed=cfg.train.seed * 1_000_003 + run.step)
        undrawn += (u, v) not in global_edges(sub.node_ids, sub.rowptr, sub.col)
        task.step(run, torch.tensor([e]), None)
        node_ids, _, _, dinv = seen[-1]
        lost = ((node_ids == u) | (node_ids == v)).double()
        expected = (deg_all[node_ids].double() - lost + 1).rsqrt()
        torch.testing.assert_close(dinv.double(), expected, rtol=1e-6, atol=0, msg=f"edge ({u}, {v}) step {run.step}")
        run.step += 1
    assert undrawn > 0  # the test can fail: some steps never sampled their own edge


@pytest.mark.parametrize("warm_start", ["auto", "history"])
def test_a_pairs_training_score_does_not_depend_on_its_edge_in_earlier_steps(tiny_bert, tmp_path, monkeypatch,
                                                                            warm_start):
    """The batch's own positive edges must not reach its scores through any path. Two runs take
    the same earlier steps (batches of the edges around a pair (s, t)), one on the training
    graph, one on the training graph without (s, t); then both score the batch holding (s, t).
    No weights move (no optimizer step, no dropout), so only what the earlier steps left behind
    can differ: with the paper's forward history (warm_start=history) the edge leaks through the
    implicit layer's warm start; the default keeps no forward history for link prediction."""
    from fastleading.engine import ops
    from fastleading.engine.sampler import NeighborSampler
    from fastleading.link.split import drop_edges

    cfg = link_config(tiny_bert, tmp_path / "c", "train.fanouts=1000", "model.head_dropout=0",
                      "train.link_negatives=1", "model.num_iters=2")
    cfg.model.warm_start = warm_start  # set past validation: 'history' is refused for link runs
    scores = []
    for without in (False, True):
        tr = build_trainer(cfg, tmp_path / f"run{without}")
        run, task = tr.run, tr.task
        run.model.encoder.eval()  # no dropout: the two runs draw nothing at random
        train_edges = task.split.train
        s, t = (int(v) for v in train_edges[:, 0])
        around = [e for e in range(1, train_edges.shape[1])
                  if {int(train_edges[0, e]), int(train_edges[1, e])} & {s, t}]
        earlier = torch.tensor((around + list(range(1, 40)))[:24])
        inner, dinv = run.sampler.inner, run.graph_dinv
        if without:  # the earlier steps see a training graph without (s, t)
            rowptr, col, _ = drop_edges(tr.graph.rowptr, tr.graph.col, torch.tensor([s]), torch.tensor([t]))
            run.sampler.inner = NeighborSampler(rowptr, col, list(cfg.train.fanouts))
            run.graph_dinv = ops.gcn_dinv(rowptr)
        for batch in earlier.split(8):
            task.step(run, batch, None)
            run.step += 1
        run.sampler.inner, run.graph_dinv = inner, dinv
        captured = []
        real = type(run.model.decoder).forward

        def spy(self, a, b, real=real, captured=captured):
            out = real(self, a, b)
            captured.append(out.detach())
            return out
        monkeypatch.setattr(type(run.model.decoder), "forward", spy)
        task.step(run, torch.tensor([0, 30, 31]), None)  # the batch holding (s, t), and two others
        monkeypatch.undo()
        scores.append(captured[0][0])  # the positive score of (s, t)
    if warm_start == "history":  # the test can fail: the forward history carries the edge
        assert abs(float(scores[0] - scores[1])) > 1e-4, scores
    else:
        torch.testing.assert_close(scores[0], scores[1], rtol=1e-5, atol=1e-6)


def test_validation_and_test_edges_are_never_in_the_training_graph(tiny_bert, tmp_path, monkeypatch):
    cfg = link_config(tiny_bert, tmp_path / "c", "train.fanouts=1000")
    tr = build_trainer(cfg, tmp_path / "run")
    split = tr.task.split
    held_out = {(u, v) for u, v in zip(*torch.cat([split.valid, split.test], 1).tolist(), strict=True)}
    held_out |= {(v, u) for u, v in held_out}
    full = load_dataset(cfg.data)
    assert held_out <= edge_set(full.rowptr, full.col)  # they are edges of the dataset
    train_graph = edge_set(tr.graph.rowptr, tr.graph.col)
    assert not held_out & train_graph and len(train_graph) == 2 * split.train.shape[1]
    assert tr.run.sampler.inner.rowptr is tr.graph.rowptr  # sampling reads the training graph
    seen = capture_propagations(tr, monkeypatch)
    eval_graphs = []
    real = evaluate_module.solve_appnp

    def spy_solve(x, rowptr, col, *a, **k):
        eval_graphs.append(edge_set(rowptr.cpu(), col.cpu()))
        return real(x, rowptr, col, *a, **k)

    monkeypatch.setattr(evaluate_module, "solve_appnp", spy_solve)
    train(cfg, tmp_path / "run", quiet=True)
    assert len(seen) >= 7 and eval_graphs
    for node_ids, rowptr, col, _ in seen:
        assert not global_edges(node_ids, rowptr, col) & held_out
    assert all(g == train_graph for g in eval_graphs)


# ----------------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("kind", ["dot", "mlp"])
def test_split_metrics_match_a_brute_force_reference(kind, monkeypatch):
    import fastleading.link.decoder as linkdecoder

    monkeypatch.setattr(linkdecoder, "SCORE_CHUNK", 7)  # several chunks
    torch.manual_seed(0)
    z = torch.randn(30, 4)
    split = random_link_split(*toy_graph(3, n=30, m=80), "60/20/20", seed=0, num_negatives=5)

    model = torch.nn.Module()
    model.decoder = LinkDecoder(kind, 4, hidden=8)
    got = split_metrics(model.decoder, z, split, (1, 3), "auc")
    model.eval()
    for name, pos, neg in (("valid", split.valid, split.valid_neg), ("test", split.test, split.test_neg)):
        with torch.no_grad():
            p = [float(model.decoder(z[s], z[t])) for s, t in zip(*pos.tolist(), strict=True)]
            n = [[float(model.decoder(z[s], z[t])) for t in row]
                 for s, row in zip(pos[0].tolist(), neg.tolist(), strict=True)]
        ranks = [1 + 0.5 * (sum(x > a for x in row) + sum(x >= a for x in row)) for a, row in zip(p, n, strict=True)]
        flat = [x for row in n for x in row]
        auc = sum(1.0 if a > x else 0.5 if a == x else 0.0 for a in p for x in flat) / (len(p) * len(flat))
        assert got[f"{name}_auc"] == pytest.approx(auc, abs=1e-6)
        assert got[f"{name}_mrr"] == pytest.approx(sum(1 / r for r in ranks) / len(ranks), abs=1e-6)
        for k in (1, 3):
            assert got[f"{name}_hits@{k}"] == pytest.approx(sum(r <= k for r in ranks) / len(ranks))
    assert got["valid"] == got["valid_auc"] and got["test"] == got["test_auc"]
    # score_pairs in chunks equals one decoder call
    torch.testing.assert_close(score_pairs(model.decoder, z, split.test[0], split.test_neg),
                               model.decoder(z[split.test[0]][:, None], z[split.test_neg]).detach())


# ----------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("method", ["leading", "supervised"])
def test_link_runs_report_the_metrics_of_their_best_pt(tiny_bert, tmp_path, method):
    """The summary's test AUC / MRR / Hits@10 are those of the model in best.pt: recomputed from
    it (every node encoded, the propagation solved cold to a tight tolerance, the test pairs
    scored) and counted by brute force, with every score finite. A NaN-scoring model (which the
    old ranking counted as perfect) or a best.pt of another epoch fails here."""
    from fastleading.run import checkpoint
    from fastleading.trainer.evaluate import full_graph_logits
    from fastleading.trainer.loop import encode_graph

    cfg = link_config(tiny_bert, tmp_path / "c", f"train.method={method}", "data.link_split=10/30/60",
                      "model.link_decoder=mlp", "train.epochs=2", "model.eval_tol=1e-9", "model.eval_iters=500")
    summary = train(cfg, tmp_path / "run", quiet=True)
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["task"] == "link" and on_disk["split"] == "10/30/60-seed0"
    assert summary["best_valid"] == summary["best_valid_mrr"]
    evals = [json.loads(text)["eval"] for text in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in text]
    assert len(evals) == 2 and all(e["nonfinite"] == 0 for e in evals)
    best_pt = checkpoint.load(tmp_path / "run" / checkpoint.BEST)
    assert best_pt["epoch"] == summary["best_epoch"]
    tr = build_trainer(cfg, tmp_path / "again")
    tr.run.model.load_state_dict(best_pt["model"])
    emb = tr.run.model.to_head_frame_(encode_graph(tr, "recompute", "eval"))  # as predict does
    z, _, _ = full_graph_logits(tr.run.model, emb, tr.graph.rowptr, tr.graph.col, cfg, tr.run.precision)
    test, test_neg = tr.task.split.test, tr.task.split.test_neg
    pos = score_pairs(tr.run.model.decoder, z, test[0], test[1]).tolist()
    neg = score_pairs(tr.run.model.decoder, z, test[0], test_neg).tolist()
    assert all(map(math.isfinite, pos)) and all(math.isfinite(x) for row in neg for x in row)
    ranks = [1 + 0.5 * (sum(x > p for x in row) + sum(x >= p for x in row)) for p, row in zip(pos, neg, strict=True)]
    pooled = [x for row in neg for x in row]
    auc = sum(1.0 if p > x else 0.5 if p == x else 0.0 for p in pos for x in pooled) / (len(pos) * len(pooled))
    # equal (measured: to 1e-12); the tolerances allow one pair to swap places in a near tie
    assert summary["test_auc"] == pytest.approx(auc, abs=1.0 / len(pooled) / len(pos) + 1e-12)
    assert summary["test_mrr"] == pytest.approx(sum(1 / r for r in ranks) / len(ranks), abs=0.5 / len(pos) + 1e-12)
    assert summary["test_hits@10"] == pytest.approx(sum(r <= 10 for r in ranks) / len(ranks), abs=1.0 / len(pos))
    sizes = summary["link_split"]
    assert sizes["negatives_per_positive"] == 20 and sizes["train"] < sizes["valid"] < sizes["test"]
    assert summary["steps"] == 2 * -(-sizes["train"] // 16)


def test_cli_train_task_link(tiny_bert, tmp_path, capsys):
    from fastleading.cli import main

    rc = main(["train", "--task", "link", "--out", str(tmp_path / "run"), f"model.name={tiny_bert}",
               f"data.cache_dir={tmp_path / 'c'}", "data.synthetic_nodes=120", "data.max_length=12",
               "train.batch_size=32", "train.epochs=1", "model.head_hidden=16", "model.link_dim=8",
               "data.link_eval_negatives=10"])
    assert rc == 0
    out, err = capsys.readouterr()
    assert "link prediction on synthetic: best valid AUC" in out and "MRR" in out
    # the progress names its metric (a bare 'valid 0.1539' read as accuracy) and the split counts edges
    assert re.search(r"epoch 1/1 evaluated: valid MRR \d\.\d{4}$", err, re.M), err
    assert re.search(r"^leading on synthetic: 120 nodes, split 85/5/10-seed0: \d+ train / \d+ valid / \d+ test "
                     r"edges; run folder ", err, re.M), err


def test_resumed_link_run_matches_an_uninterrupted_one(tiny_bert, tmp_path):
    common = ("train.epochs=2", "train.fill_bank=false")
    straight = train(link_config(tiny_bert, tmp_path / "c", *common), tmp_path / "a", quiet=True)
    train(link_config(tiny_bert, tmp_path / "c", *common, "train.max_steps=5"), tmp_path / "b", quiet=True)
    cfg_path = tmp_path / "b" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["train"]["max_steps"] = 0
    cfg_path.write_text(json.dumps(cfg))
    from fastleading.cli import main

    assert main(["train", "--quiet", "--resume", str(tmp_path / "b")]) == 0
    resumed = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert resumed["steps"] == straight["steps"]
    for key in ("best_valid_auc", "best_valid_mrr", "test_auc", "test_mrr", "test_hits@10"):
        assert resumed[key] == pytest.approx(straight[key], abs=1e-5), key


def test_link_prediction_on_a_custom_dataset_without_labels(tiny_bert, tmp_path):
    """A label-free custom folder whose edges join papers of the same topic (the texts name it):
    both methods split exactly the folder's undirected edges 10/30/60 and report the evaluation
    their metrics.jsonl holds at the best epoch, and TF-IDF features (shallow) rank the held-out
    edges far above chance; a wrong split, a lost edge or a broken text path fails one of these."""
    import csv

    from fastleading.commands.methods import train_method

    folder = tmp_path / "mine"
    folder.mkdir()
    topics, n = ["graphs", "proteins", "planets", "poems"], 80
    g = torch.Generator().manual_seed(0)
    with open(folder / "nodes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        for i in range(n):
            w.writerow([f"n{i}", f"paper about {topics[i % 4]} and {['lemmas', 'cells', 'orbits'][i % 3]}"])
    src = torch.randint(0, n, (240,), generator=g)
    dst = (torch.randint(0, n // 4, (240,), generator=g) * 4 + src % 4)  # same topic
    with open(folder / "edges.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["src", "dst"])
        for u, v in zip(src.tolist(), dst.tolist(), strict=True):
            w.writerow([f"n{u}", f"n{v}"])
    m = len({(min(u, v), max(u, v)) for u, v in zip(src.tolist(), dst.tolist(), strict=True) if u != v})
    n_train = round(0.1 * m)
    n_valid = round(0.3 * m)
    for method in ("leading", "shallow"):
        cfg = link_config(tiny_bert, tmp_path / "c", "data.dataset=custom", f"data.root={folder}",
                          f"train.method={method}", "train.downstream_epochs=30", "data.link_split=10/30/60")
        summary = train_method(cfg, tmp_path / method, quiet=True)
        assert summary["task"] == "link" and summary["split"] == "10/30/60-seed0"
        sizes = summary["link_split"]
        assert (sizes["train"], sizes["valid"], sizes["test"]) == (n_train, n_valid, m - n_train - n_valid)
        if method == "leading":
            evals = [json.loads(text) for text in (tmp_path / method / "metrics.jsonl").read_text().splitlines()
                     if '"eval"' in text]
            best = next(e["eval"] for e in evals if e["epoch"] == summary["best_epoch"])
            assert (summary["test_auc"], summary["test_mrr"]) == (best["test_auc"], best["test_mrr"])
            assert best["nonfinite"] == 0
        else:
            # topic words decide the edges: measured 0.822 test AUC (chance 0.5)
            assert summary["test_auc"] > 0.75, summary


def test_dropping_edges_keeps_every_node_when_a_subgraph_has_as_many_edges_as_nodes():
    """A sampled subgraph of 4 nodes and 4 (directed) edges: the edge drop must filter the edges
    only (it took any array as long as the edges for a per-edge one, node ids included)."""
    from fastleading.engine.sampler import SampledSubgraph
    from fastleading.link.task import EdgeDroppingSampler

    # the path 0-1-2 plus an isolated node 3: directed edges 0-1, 1-0, 1-2, 2-1
    sub = SampledSubgraph(node_ids=torch.tensor([10, 11, 12, 13]), rowptr=torch.tensor([0, 1, 3, 4, 4]),
                          col=torch.tensor([1, 0, 2, 1]), num_targets=2, nodes_per_hop=[2, 1, 1])

    class Inner:
        def sample(self, targets, seed):
            return sub

    sampler = EdgeDroppingSampler(Inner())
    sampler.drop = (torch.tensor([0]), torch.tensor([1]))
    out = sampler.sample(torch.tensor([10, 11]), seed=0)
    assert out.node_ids.tolist() == [10, 11, 12, 13]
    assert out.rowptr.tolist() == [0, 0, 1, 2, 2] and out.col.tolist() == [2, 1]


def test_edges_per_node_counts_each_undirected_edge_once_and_no_self_loop():
    from fastleading.link.task import edges_per_node

    # (0, 1) twice (once each way), a self loop on 2, (3, 0)
    counts = edges_per_node(torch.tensor([0, 1, 2, 3]), torch.tensor([1, 0, 2, 0]), 5)
    assert counts.tolist() == [2, 1, 0, 1, 0]
