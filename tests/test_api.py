"""The Python API: the runnable example of docs/api.md executed as written (a tiny random LM
in place of its MODEL), graphs from arrays and from a PyG Data, and one-line errors."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import save_tiny_model

import fastleading as fl
from fastleading.errors import FastleadingError

ROOT = Path(__file__).resolve().parents[1]
MODEL_LINE = 'MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # any Hugging Face model id or local folder'


def docs_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(encoding="utf-8"), re.S)
    return blocks[0]


def test_the_docs_example_runs(tmp_path, monkeypatch, capsys):
    code = docs_example()
    assert code.count(MODEL_LINE) == 1
    model = save_tiny_model(tmp_path / "bert", "bert", hidden=16, layers=1)
    capsys.readouterr()  # the test's own model writing
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FASTLEADING_CACHE", str(tmp_path / "cache"))
    scope: dict = {}
    exec(compile(code.replace(MODEL_LINE, f"MODEL = {model!r}"), "docs/api.md", "exec"), scope)
    run, predictions, new = scope["run"], scope["predictions"], scope["new"]
    assert run.config.data.dataset == "saved" and run.paths["graph"].resolve() == tmp_path / "runs" / "toy" / "graph"
    assert predictions.ids == [str(i) for i in range(60)] and predictions.probs.shape == (60, 3)
    assert (tmp_path / "runs" / "toy" / "predictions.csv").is_file()
    assert scope["embeddings"].shape == (60, 16) and scope["embeddings"].dtype == np.float32
    assert new.ids == ["new-1"] and new.probs.sum() == pytest.approx(1.0, abs=1e-6)
    # the run's graph is the one built in the example: its split and texts came through
    trained = run._model().graph
    assert trained.split("given").train.tolist() == scope["splits"]["train"]
    assert trained.text(7) == scope["texts"][7] and trained.class_names == scope["topics"]
    printed = capsys.readouterr()
    assert "test accuracy" in printed.out
    # redirected (as under pytest), the example prints nothing else: Run.predict / Run.embeddings
    # printed transformers' "Loading weights" bars and predict PyTorch's non-writable-array warning
    assert printed.err == "", printed.err[-2000:]
    assert [line for line in printed.out.splitlines() if "test accuracy" not in line and not line.startswith("[")] \
        == [], printed.out


def test_graph_from_pyg_takes_edges_labels_masks_and_features():
    from torch_geometric.data import Data

    n = 6
    edge_index = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])
    y = torch.tensor([0, 1, 0, 1, -1, 0])
    masks = {k: torch.zeros(n, 2, dtype=torch.bool) for k in ("train_mask", "val_mask", "test_mask")}
    masks["train_mask"][[0, 1], 0] = True
    masks["val_mask"][2, 0] = True
    masks["test_mask"][3, 0] = True
    masks["train_mask"][[2, 3], 1] = True
    masks["val_mask"][0, 1] = True
    masks["test_mask"][[1, 5], 1] = True
    x = torch.randn(n, 4)
    graph = fl.graph_from_pyg(Data(edge_index=edge_index, y=y, x=x, **masks), [f"t{i}" for i in range(n)])
    reference = fl.graph_from_arrays(edge_index.numpy(), [f"t{i}" for i in range(n)], y.numpy(), features=x)
    assert torch.equal(graph.rowptr, reference.rowptr) and torch.equal(graph.col.long(), reference.col.long())
    assert graph.rowptr.tolist() == [0, 1, 3, 5, 7, 9, 10]  # undirected
    assert torch.equal(graph.labels, y) and torch.equal(graph.features, x)
    assert graph.split_names == ["given-0", "given-1"]
    assert graph.split("given-1").test.tolist() == [1, 5] and graph.split("given-0").train.tolist() == [0, 1]


@pytest.mark.parametrize("kwargs, message", [
    ({"edge_index": [[0, 1, 2]]}, "edge_index: expected an integer array of shape [2, E]"),
    ({"edge_index": [[0], [9]]}, "edge_index: node ids must lie in [0, 3)"),
    ({"labels": [0, 1]}, "labels: expected integers of shape [3]"),
    ({"labels": [0, 5, 1], "class_names": ["a", "b"]}, "labels: expected values in [-1, 2)"),
    ({"splits": {"train": [0], "valid": [1]}}, "splits['train']: expected a mapping with the keys train, valid, test"),
    ({"labels": [0, -1, 1], "splits": {"train": [0, 1], "valid": [2], "test": []}},
     "splits['given']['train']: holds nodes without a label (-1)"),
    ({"node_ids": ["a", "a", "b"]}, "node_ids: expected 3 distinct ids"),
])
def test_bad_arrays_get_one_line(kwargs, message):
    args = {"edge_index": [[0, 1], [1, 2]], "texts": ["x", "y", "z"], "labels": [0, 1, 0], **kwargs}
    with pytest.raises(FastleadingError) as err:
        fl.graph_from_arrays(**args)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_import_fastleading_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, fastleading; assert 'torch' not in sys.modules; fastleading.Config; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "ok", done.stderr


def _toy_graph(n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    edges = torch.randint(0, n, (2, 3 * n), generator=g)
    labels = torch.arange(n) % 3
    return fl.graph_from_arrays(edges, [f"paper {i} on topic {i % 3}" for i in range(n)], labels,
                                {"train": list(range(0, n, 2)), "valid": list(range(1, n, 4)),
                                 "test": list(range(3, n, 4))})


def _shallow(tmp_path) -> fl.Config:
    from fastleading.config import apply_overrides

    return apply_overrides(fl.Config(), ["train.method=shallow", "train.downstream_epochs=2",
                                         f"data.cache_dir={tmp_path / 'cache'}"])


def test_train_refuses_a_finished_run_before_touching_its_graph_and_names_its_own_parameters(tmp_path):
    """fastleading.train(graph=B, out=<a finished run of A>) saved B over the run's graph and only
    then refused (the old run then predicted on B); its message named the CLI's --overwrite."""
    from fastleading.data import load_dataset

    out = tmp_path / "run"
    fl.train(_shallow(tmp_path), graph=_toy_graph(60), out=out)
    with pytest.raises(FastleadingError) as e:
        fl.train(_shallow(tmp_path), graph=_toy_graph(90, seed=1), out=out)
    message = str(e.value)
    assert "overwrite=True" in message and "resume=True" in message and "--overwrite" not in message
    assert load_dataset(fl.load_run(out).config.data).num_nodes == 60  # the run's graph is its own
    run = fl.train(_shallow(tmp_path), graph=_toy_graph(90, seed=1), out=out, overwrite=True)
    assert load_dataset(run.config.data).num_nodes == 90 and run.summary["method"] == "shallow"


def test_an_api_run_folder_works_after_being_moved(tmp_path, monkeypatch):
    """config.json stored the absolute path of the run's graph: a moved or copied run folder
    read the old place (or failed with 'not a folder written by TextAttributedGraph.save')."""
    import shutil

    from fastleading.data import load_dataset

    monkeypatch.chdir(tmp_path)
    fl.train(_shallow(tmp_path), graph=_toy_graph(60), out="made/run")
    shutil.move(tmp_path / "made", tmp_path / "moved")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    run = fl.load_run(tmp_path / "moved" / "run")
    assert load_dataset(run.config.data).num_nodes == 60
