"""`fastleading predict` and :class:`fastleading.commands.predict.TrainedRun`: existing nodes get the
evaluation's outputs of best.pt, a new node that copies an existing one gets that node's
prediction, link runs score pairs as their evaluation does, and bad files get one line."""

import csv
import json

import numpy as np
import pytest
import torch
from test_train import small_config

from fastleading.baselines.downstream import export_embeddings
from fastleading.cli import main
from fastleading.commands.methods import train_method
from fastleading.commands.predict import TrainedRun
from fastleading.data import load_dataset
from fastleading.errors import FastleadingError
from fastleading.link.metrics import link_metrics
from fastleading.trainer import evaluate as evaluate_module

N = 240
# a tight CG tolerance: the run's evaluations warm-start the solve, predict starts cold; both
# are then the same fixed point to ~1e-9 relative residual
TIGHT = ("model.eval_tol=1e-9", "model.eval_iters=500")


def capture_evaluations(monkeypatch) -> list[torch.Tensor]:
    """The logits of every evaluation of the next run, in order (the loop's own call)."""
    seen = []

    def recording(*args, **kwargs):
        out = real(*args, **kwargs)
        seen.append(out[0].clone())
        return out

    real = evaluate_module.full_graph_logits
    monkeypatch.setattr(evaluate_module, "full_graph_logits", recording)
    return seen


@pytest.fixture(scope="module")
def node_run(tiny_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    with pytest.MonkeyPatch.context() as mp:
        evaluations = capture_evaluations(mp)
        cfg = small_config(tiny_bert, root / "cache", "train.epochs=2", *TIGHT)
        summary = train_method(cfg, root / "run", quiet=True)
    best = [h["epoch"] for h in summary["history"]].index(summary["best_epoch"])
    return root, cfg, summary, evaluations[best]


def test_existing_nodes_get_the_evaluation_outputs_of_best_pt(node_run):
    root, cfg, summary, eval_logits = node_run
    preds = TrainedRun(root / "run").predict()
    assert preds.ids == [str(i) for i in range(N)]
    assert preds.logits == pytest.approx(eval_logits.numpy(), abs=1e-5)
    assert np.array_equal(preds.pred, eval_logits.argmax(-1).numpy())
    assert preds.probs == pytest.approx(torch.softmax(eval_logits, -1).numpy(), abs=1e-6)
    graph = load_dataset(cfg.data)
    split = graph.split(cfg.data.split)
    for name, key in (("valid", "best_valid_acc"), ("test", "test_acc")):
        ids = getattr(split, name).numpy()
        assert float((preds.pred[ids] == graph.labels.numpy()[ids]).mean()) == pytest.approx(summary[key], rel=1e-6)


def test_cli_writes_every_node_or_a_subset_as_csv(node_run, tmp_path, capsys):
    root, _, _, eval_logits = node_run
    assert main(["predict", "--run", str(root / "run"), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == f"predictions: {root / 'run' / 'predictions.csv'}"
    with open(root / "run" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    classes = load_dataset(small_config("x", root / "cache").data).class_names
    assert list(rows[0]) == ["id", "pred", "pred_class", *(f"prob_{c}" for c in classes)]
    assert [r["id"] for r in rows] == [str(i) for i in range(N)]
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])
    assert probs == pytest.approx(torch.softmax(eval_logits, -1).numpy(), abs=1e-6)
    assert [int(r["pred"]) for r in rows] == eval_logits.argmax(-1).tolist()
    assert [r["pred_class"] for r in rows] == [classes[int(r["pred"])] for r in rows]

    (tmp_path / "ids.txt").write_text("id\n17\n3\n")
    out = tmp_path / "sub.csv"
    assert main(["predict", "--run", str(root / "run"), "--nodes", str(tmp_path / "ids.txt"), "--out", str(out),
                 "--quiet"]) == 0
    with open(out, newline="") as f:
        sub = list(csv.DictReader(f))
    assert [r["id"] for r in sub] == ["17", "3"] and sub == [rows[17], rows[3]]


def write_copy_of(graph, v: int, folder, name: str = "copy") -> tuple:
    """A new node with node ``v``'s text and edges to every neighbour of ``v``."""
    neighbours = graph.col[graph.rowptr[v]:graph.rowptr[v + 1]].tolist()
    nodes, edges = folder / "new_nodes.csv", folder / "new_edges.csv"
    with open(nodes, "w", newline="") as f:
        csv.writer(f).writerows([["id", "text"], [name, graph.text(v)]])
    with open(edges, "w", newline="") as f:
        csv.writer(f).writerows([["src", "dst"], *([name, str(u)] for u in neighbours)])
    return nodes, edges, neighbours


def test_a_new_copy_of_a_node_gets_that_nodes_prediction(node_run, tmp_path):
    """Adding the copy raises its neighbours' degrees, so the original's own output moves too;
    in the extended graph the two are interchangeable (swapping them maps the graph onto
    itself and their texts are equal), so their outputs are equal."""
    root, cfg, _, eval_logits = node_run
    graph = load_dataset(cfg.data)
    degree = (graph.rowptr[1:] - graph.rowptr[:-1]).numpy()
    v = int(np.flatnonzero(degree >= 3)[0])
    nodes, edges, neighbours = write_copy_of(graph, v, tmp_path)
    run = TrainedRun(root / "run")
    preds = run.predict(["copy", str(v), str(neighbours[0])], new_nodes=nodes, new_edges=edges)
    assert preds.ids == ["copy", str(v), str(neighbours[0])]
    assert preds.logits[0] == pytest.approx(preds.logits[1], abs=1e-5)
    assert preds.pred[0] == preds.pred[1]
    # the neighbourhood really changed: the neighbour's output is not the one without the copy
    assert np.abs(preds.logits[2] - eval_logits[neighbours[0]].numpy()).max() > 1e-4
    # default rows with new nodes: the new nodes; exported embeddings give the same outputs
    assert run.predict(new_nodes=nodes, new_edges=edges).ids == ["copy"]
    export_embeddings(root / "run", tmp_path / "emb.npy")
    np.testing.assert_allclose(np.load(tmp_path / "emb.npy"), run.embeddings().float().cpu().numpy(), atol=1e-6)
    again = run.predict(["copy", str(v)], new_nodes=nodes, new_edges=edges, embeddings=tmp_path / "emb.npy")
    assert again.logits == pytest.approx(preds.logits[:2], abs=1e-5)


def test_new_nodes_may_link_to_each_other(node_run, tmp_path):
    root, cfg, _, _ = node_run
    graph = load_dataset(cfg.data)
    (tmp_path / "n.jsonl").write_text(json.dumps({"id": "a", "text": graph.text(0)}) + "\n"
                                      + json.dumps({"id": "b", "text": "a brand new text"}) + "\n")
    (tmp_path / "e.csv").write_text("src,dst\na,b\nb,5\n")
    preds = TrainedRun(root / "run").predict(new_nodes=tmp_path / "n.jsonl", new_edges=tmp_path / "e.csv")
    assert preds.ids == ["a", "b"] and preds.probs.sum(1) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("nodes, edges, out, message", [
    ("id,text\n7,dup\n", "src,dst\n7,1\n", "p.csv", "new_nodes.csv: line 2: node id '7' already exists in the dataset"),
    ("id,text\nx,hello\n", "src,dst\n1,2\n", "p.csv", "new_edges.csv: edge '1,2' joins two existing nodes; new "
                                                      "edges must touch a new node"),
    ("id,text\nx,hello\n", "src,dst\nx,zz\n", "p.csv", "new_edges.csv: line 2: unknown node id 'zz'"),
    ("id,text\nx,\n", "src,dst\n", "p.csv", "new_nodes.csv: 1 of 1 node texts are empty (first: node 'x', line 2)"),
    ("id,text\nx,hello\n", "a,b\n", "p.csv", "new_edges.csv: line 1: expected the header 'src,dst'"),
    ("id,text\nx,hello\n", "src,dst\nx,1\n", "p.txt", "p.txt: predictions are written as .csv or .parquet"),
])
def test_bad_new_node_files_get_one_line_and_write_nothing(node_run, tmp_path, capsys, nodes, edges, out, message):
    root, _, _, _ = node_run
    (tmp_path / "new_nodes.csv").write_text(nodes)
    (tmp_path / "new_edges.csv").write_text(edges)
    assert main(["predict", "--run", str(root / "run"), "--new-nodes", str(tmp_path / "new_nodes.csv"),
                 "--new-edges", str(tmp_path / "new_edges.csv"), "--out", str(tmp_path / out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / out).exists()


def test_other_bad_inputs_get_one_line(node_run, tmp_path, capsys):
    root, cfg, _, _ = node_run
    run = root / "run"
    (tmp_path / "emb.npy").write_bytes(b"")
    np.save(tmp_path / "short.npy", np.zeros((N - 1, 32), dtype=np.float32))
    (tmp_path / "ids.txt").write_text("3\nnope\n")
    (tmp_path / "n.csv").write_text("id,text\nx,hi\n")
    cases = [
        (["--nodes", str(tmp_path / "ids.txt")], "unknown node id 'nope'"),
        (["--embeddings", str(tmp_path / "short.npy")], f"short.npy: expected embeddings of shape [{N}, 32]"),
        (["--embeddings", str(tmp_path / "missing.npy")], "missing.npy: embeddings file not found"),
        (["--new-nodes", str(tmp_path / "n.csv")], "new nodes need both a nodes file (id,text) and an edges file"),
        (["--pairs", str(tmp_path / "n.csv")], "pairs are scored by link prediction runs"),
        (["--out", str(tmp_path / "p.parquet")], "p.parquet: Parquet needs pyarrow"),
    ]
    pyarrow_installed = True
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pyarrow_installed = False
    for extra, message in cases:
        if pyarrow_installed and "pyarrow" in message:
            continue
        assert main(["predict", "--run", str(run), "--quiet", *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (extra, err)
    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    (pretrained / "config.json").write_text(json.dumps({"train": {"method": "pretrained"}}))
    with pytest.raises(FastleadingError, match="method 'pretrained' keeps no trained model"):
        TrainedRun(pretrained)


def test_link_run_scores_pairs_as_its_evaluation_does(tiny_bert, tmp_path):
    from test_link_train import link_config

    from fastleading.data import load_link_split

    cfg = link_config(tiny_bert, tmp_path / "cache", *TIGHT)
    summary = train_method(cfg, tmp_path / "run", quiet=True)
    split = load_link_split(cfg, load_dataset(cfg.data))
    pos, neg = split.test, split.test_neg
    rows = [("src", "dst")] + list(zip(pos[0].tolist(), pos[1].tolist(), strict=True))
    rows += [(s, t) for s, ts in zip(pos[0].tolist(), neg.tolist(), strict=True) for t in ts]
    with open(tmp_path / "pairs.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    assert main(["predict", "--run", str(tmp_path / "run"), "--pairs", str(tmp_path / "pairs.csv"), "--quiet"]) == 0
    with open(tmp_path / "run" / "link-scores.csv", newline="") as f:
        scored = list(csv.DictReader(f))
    assert [(r["src"], r["dst"]) for r in scored] == [(str(s), str(t)) for s, t in rows[1:]]
    scores = torch.tensor([float(r["score"]) for r in scored])
    p = pos.shape[1]
    metrics = link_metrics(scores[:p], scores[p:].view(p, -1), cfg.train.link_hits)
    assert metrics["auc"] == pytest.approx(summary["test_auc"], abs=1e-9)
    assert metrics["mrr"] == pytest.approx(summary["test_mrr"], abs=1e-9)
    assert [float(r["prob"]) for r in scored] == pytest.approx(torch.sigmoid(scores).tolist(), abs=1e-6)
    with pytest.raises(FastleadingError, match="has no classes; score node pairs instead"):
        TrainedRun(tmp_path / "run").predict()


def test_new_nodes_encode_only_their_texts_once_best_pt_is_cached(node_run, tmp_path):
    """The first prediction encodes every node once and caches it beside best.pt; a prediction
    with new nodes then encodes the new texts only (counted by the LM's EncodeCounter) and gives
    the outputs of a full re-encode; a changed best.pt is encoded afresh."""
    import shutil

    from fastleading.run.checkpoint import BEST
    from fastleading.run.folder import BEST_EMBEDDINGS, BEST_EMBEDDINGS_META

    root, cfg, _, eval_logits = node_run
    run_dir = tmp_path / "run"
    shutil.copytree(root / "run", run_dir)
    for name in (BEST_EMBEDDINGS, BEST_EMBEDDINGS_META):
        (run_dir / name).unlink(missing_ok=True)
    graph = load_dataset(cfg.data)
    degree = (graph.rowptr[1:] - graph.rowptr[:-1]).numpy()
    nodes, edges, _ = write_copy_of(graph, int(np.flatnonzero(degree >= 3)[0]), tmp_path)

    fresh = TrainedRun(run_dir)                                   # no cache: every node, then the new one
    full = fresh.predict(new_nodes=nodes, new_edges=edges)
    assert fresh.counter.totals["eval"] == N + 1
    assert (run_dir / BEST_EMBEDDINGS).is_file() and (run_dir / BEST_EMBEDDINGS_META).is_file()

    cached = TrainedRun(run_dir)
    again = cached.predict(new_nodes=nodes, new_edges=edges)
    assert cached.counter.totals["eval"] == 1                     # the new text only
    assert again.ids == full.ids and again.logits == pytest.approx(full.logits, abs=1e-5)
    existing = TrainedRun(run_dir)
    assert existing.predict().logits == pytest.approx(eval_logits.numpy(), abs=1e-5)
    assert existing.counter.totals["eval"] == 0

    state = torch.load(run_dir / BEST, weights_only=False)        # another best.pt: the cache is stale
    name = next(k for k in state["model"] if k.startswith("encoder.") and state["model"][k].is_floating_point())
    state["model"][name] = state["model"][name] + 0.5
    torch.save(state, run_dir / BEST)
    changed = TrainedRun(run_dir)
    changed.predict(new_nodes=nodes, new_edges=edges)
    assert changed.counter.totals["eval"] == N + 1
    assert json.loads((run_dir / BEST_EMBEDDINGS_META).read_text())["key"] == changed.cache_key()


def test_predict_takes_only_embeddings_made_from_this_runs_best_pt(node_run, tmp_path, capsys):
    """predict --embeddings accepted any .npy of the right shape: another run's emb.npy (or
    this run's from before it trained on) gave predictions of weights it never had (issue 25)."""
    import shutil

    root = node_run[0]
    run, emb = root / "run", tmp_path / "emb.npy"
    assert main(["export", "--quiet", "--run", str(run), "--out", str(emb)]) == 0
    assert main(["predict", "--quiet", "--run", str(run), "--embeddings", str(emb), "--out",
                 str(tmp_path / "p.csv")]) == 0
    # the memory-mapped file gave PyTorch's "NumPy array is not writable" warning (once a process:
    # a fresh one, where any warning is an error)
    import subprocess
    import sys

    code = (f"from fastleading.commands.predict import TrainedRun; "
            f"assert TrainedRun({str(run)!r}).load_embeddings({str(emb)!r}).shape[0] == {N}")
    proc = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    other = tmp_path / "other"  # the same run trained on: another best.pt
    shutil.copytree(run, other)
    state = torch.load(other / "best.pt", weights_only=True)
    state["epoch"] = state.get("epoch", 0) + 1
    torch.save(state, other / "best.pt")
    capsys.readouterr()
    assert main(["predict", "--quiet", "--run", str(other), "--embeddings", str(emb), "--out",
                 str(tmp_path / "q.csv")]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "emb.npy" in line and "best.pt" in line, line
    assert not (tmp_path / "q.csv").exists()
    bare = tmp_path / "bare.npy"  # an .npy of the right shape that says nothing of where it came from
    np.save(bare, np.load(emb))
    assert main(["predict", "--quiet", "--run", str(run), "--embeddings", str(bare)]) == 2
    line = capsys.readouterr().err.strip()
    assert len(line.splitlines()) == 1 and "bare.npy" in line and "fastleading export" in line, line


@pytest.mark.parametrize("nodes, message", [
    # Latin-1: a UnicodeDecodeError traceback before
    ("id,text\nx,café au lait\n".encode("latin-1"), "new_nodes.csv: line 2: not UTF-8 (byte 0xe9"),
    # an unterminated quote swallowed the rest of the file, reported later as an unknown node id
    (b'id,text\nx,"an open quote\ny,more text\n', "new_nodes.csv: line 2: the quote opened on this line is never "
                                                    "closed"),
    # a row holding only an id was accepted silently (an empty text is 'y,')
    (b"id,text\nx,hello\ny\n", "new_nodes.csv: line 3: node 'y' has no text field"),
])
def test_encoding_quoting_and_id_only_faults_of_a_nodes_file_get_one_line(node_run, tmp_path, capsys, nodes,
                                                                           message):
    root = node_run[0]
    (tmp_path / "new_nodes.csv").write_bytes(nodes)
    (tmp_path / "new_edges.csv").write_text("src,dst\nx,1\n")
    assert main(["predict", "--run", str(root / "run"), "--new-nodes", str(tmp_path / "new_nodes.csv"),
                 "--new-edges", str(tmp_path / "new_edges.csv"), "--out", str(tmp_path / "p.csv"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "p.csv").exists()


def test_a_list_of_node_ids_may_start_with_a_byte_order_mark_and_must_be_utf8(node_run, tmp_path, capsys):
    root = node_run[0]
    (tmp_path / "ids.txt").write_bytes("\ufeffid\n17\n3\n".encode("utf-8"))  # Windows editors write one
    assert main(["predict", "--run", str(root / "run"), "--nodes", str(tmp_path / "ids.txt"), "--out",
                 str(tmp_path / "p.csv"), "--quiet"]) == 0
    with open(tmp_path / "p.csv", newline="") as f:
        assert [r["id"] for r in csv.DictReader(f)] == ["17", "3"]
    (tmp_path / "bad.txt").write_bytes("id\n17\ncaf\xe9\n".encode("latin-1"))
    capsys.readouterr()
    assert main(["predict", "--run", str(root / "run"), "--nodes", str(tmp_path / "bad.txt"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.txt: line 3: not UTF-8" in err, err
