"""The custom folder format: csv and jsonl nodes, labels, splits, and every bad-input report."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from data_helpers import assert_csr_matches

from fastleading.config import DataConfig
from fastleading.data import load_dataset
from fastleading.errors import FastleadingError

NODES = [
    {"id": "a", "text": "first, with a comma", "label": "cat", "split": "train"},
    {"id": "b", "text": "second\nspans two lines", "label": "dog", "split": "valid"},
    {"id": "c", "text": "third \"quoted\"", "label": "cat", "split": "test"},
    {"id": "d", "text": "fourth", "label": "", "split": ""},
    {"id": "e", "text": "fifth", "label": "dog", "split": "train"},
]
EDGES = [("a", "b"), ("b", "a"), ("c", "c"), ("d", "e"), ("a", "e")]


def _write(folder: Path, nodes=NODES, edges=EDGES, fmt: str = "csv", classes: list[str] | None = None,
           columns=("id", "text", "label", "split")) -> DataConfig:
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        with open(folder / "nodes.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
            w.writeheader()
            w.writerows(nodes)
    else:
        with open(folder / "nodes.jsonl", "w", encoding="utf-8") as f:
            for n in nodes:
                f.write(json.dumps({k: (v if v != "" else None) for k, v in n.items()}) + "\n")
    with open(folder / "edges.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["src", "dst"])
        w.writerows(edges)
    if classes is not None:
        (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    return DataConfig(dataset="custom", root=str(folder), cache_dir=str(folder.parent / "cache"))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_custom_folder_loads(tmp_path, fmt):
    graph = load_dataset(_write(tmp_path / "g", fmt=fmt))
    assert graph.num_nodes == 5 and graph.has_text
    assert graph.texts(range(5)) == [n["text"] for n in NODES]
    assert graph.class_names == ["cat", "dog"] and graph.labels.tolist() == [0, 1, 0, -1, 1]
    assert_csr_matches(graph, [0, 1, 2, 3, 0], [1, 0, 2, 4, 4])
    given = graph.split()
    assert graph.default_split == "given"
    assert (given.train.tolist(), given.valid.tolist(), given.test.tolist()) == ([0, 4], [1], [2])
    assert "low-0" in graph.split_names and graph.metadata["node_ids"] == ["a", "b", "c", "d", "e"]
    assert graph.features.shape[0] == 5


def test_classes_file_and_integer_labels(tmp_path):
    nodes = [dict(n, label=lab) for n, lab in zip(NODES, ["2", "0", "", "1", "dog"], strict=True)]
    graph = load_dataset(_write(tmp_path / "g", nodes=nodes, classes=["cat", "bird", "dog"],
                                columns=("id", "text", "label")))
    assert graph.class_names == ["cat", "bird", "dog"]
    assert graph.labels.tolist() == [2, 0, -1, 1, 2]
    assert graph.default_split == "low-0"


def test_integer_labels_without_classes_file(tmp_path):
    nodes = [dict(n, label=lab) for n, lab in zip(NODES, ["3", "0", "", "1", "3"], strict=True)]
    graph = load_dataset(_write(tmp_path / "g", nodes=nodes, columns=("id", "text", "label")))
    assert graph.class_names == ["0", "1", "2", "3"] and graph.labels.tolist() == [3, 0, -1, 1, 3]


def test_edits_to_the_files_rebuild_the_cache(tmp_path):
    cfg = _write(tmp_path / "g")
    first = load_dataset(cfg)
    _write(tmp_path / "g", edges=EDGES[:2])
    second = load_dataset(cfg)
    assert first.path != second.path and second.num_edges == 2


def _replace(nodes, i, **changes):
    return [dict(n, **changes) if k == i else n for k, n in enumerate(nodes)]


@pytest.mark.parametrize("nodes, edges, classes, pattern", [
    (_replace(NODES, 2, id="a"), EDGES, None, r"nodes.csv: line 5: duplicate node id 'a' \(first on line 2\)"),
    (_replace(_replace(_replace(NODES, 3, text="  "), 1, text=""), 4, text=""), EDGES, None,
     r"nodes.csv: 3 of 5 node texts are empty \(first: node 'b', line 3\)"),
    (_replace(NODES, 1, split="training"), EDGES, None, r"nodes.csv: line 3: unknown split 'training' for node 'b'"),
    (_replace(NODES, 0, label=""), EDGES, None, r"line 2: node 'a' is in split 'train' but has no label"),
    (NODES, EDGES + [("a", "zz")], None, r"edges.csv: line 7: unknown node id 'zz'"),
    (NODES, EDGES + [("7", "a")], None, r"edges.csv: line 7: unknown node id '7'"),
    (_replace(NODES, 4, label="fish"), EDGES, ["cat", "dog"],
     r"line 7: unknown class 'fish' \(expected one of cat, dog\)"),
    (_replace(NODES, 4, label="2"), EDGES, ["cat", "dog"], r"line 7: label 2 outside the class range 0..1"),
    (_replace(NODES, 4, label="-1"), EDGES, ["cat", "dog"], r"line 7: label -1 outside the class range"),
])
def test_bad_custom_input_is_reported(tmp_path, nodes, edges, classes, pattern):
    cfg = _write(tmp_path / "g", nodes=nodes, edges=edges, classes=classes)
    with pytest.raises(FastleadingError, match=pattern) as e:
        load_dataset(cfg)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "cache").exists()  # nothing half-written


def test_bad_jsonl_and_missing_files(tmp_path):
    cfg = _write(tmp_path / "g", fmt="jsonl")
    with open(tmp_path / "g" / "nodes.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(FastleadingError, match=r"nodes.jsonl: line 6: invalid JSON"):
        load_dataset(cfg)
    (tmp_path / "g" / "edges.csv").unlink()
    with pytest.raises(FastleadingError, match=r"edges.csv' not found"):
        load_dataset(cfg)
    (tmp_path / "h").mkdir()
    with pytest.raises(FastleadingError, match=r"nodes.csv' \(or nodes.jsonl\) not found"):
        load_dataset(DataConfig(dataset="custom", root=str(tmp_path / "h"), cache_dir=str(tmp_path)))
    with pytest.raises(FastleadingError, match=r"data.root '.*nowhere' is not a folder"):
        load_dataset(DataConfig(dataset="custom", root=str(tmp_path / "nowhere"), cache_dir=str(tmp_path)))


def test_missing_columns_and_edge_header(tmp_path):
    cfg = _write(tmp_path / "g", columns=("id", "label"))
    with pytest.raises(FastleadingError, match=r"nodes.csv: line 1: no 'text' column"):
        load_dataset(cfg)
    cfg = _write(tmp_path / "h")
    (tmp_path / "h" / "edges.csv").write_text("a,b\n")
    with pytest.raises(FastleadingError, match=r"edges.csv: line 1: expected the header 'src,dst'"):
        load_dataset(cfg)


@pytest.mark.parametrize("bom_in", ["nodes.csv", "nodes.jsonl", "edges.csv", "classes.txt"])
def test_a_byte_order_mark_is_not_content(tmp_path, bom_in):
    """Spreadsheet programs write a UTF-8 byte-order mark; each input file reads the same with one.
    Failed before: "no 'id' column (... got \ufeffid,...)", "unknown class 'cat' (expected one of
    \ufeffcat, dog)", and the jsonl and edge files each failed their own way."""
    fmt = "jsonl" if bom_in == "nodes.jsonl" else "csv"
    plain = load_dataset(_write(tmp_path / "plain", fmt=fmt, classes=["cat", "dog"]))
    cfg = _write(tmp_path / "bom", fmt=fmt, classes=["cat", "dog"])
    path = tmp_path / "bom" / bom_in
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    graph = load_dataset(cfg)
    assert graph.texts(range(5)) == plain.texts(range(5)) and graph.metadata["node_ids"] == ["a", "b", "c", "d", "e"]
    assert graph.class_names == plain.class_names and graph.labels.tolist() == plain.labels.tolist()
    assert graph.col.tolist() == plain.col.tolist() and graph.rowptr.tolist() == plain.rowptr.tolist()


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_empty_texts_are_counted_not_refused(tmp_path, fmt):
    """A paper without an abstract is a node with an empty text, as the OGB loaders accept (failed
    before: "node 'b' has an empty or missing text"); info counts them."""
    from fastleading.data import format_info, info

    nodes = _replace(_replace(NODES, 1, text=""), 3, text="   ")
    graph = load_dataset(_write(tmp_path / "g", nodes=nodes, fmt=fmt))
    assert graph.texts(range(5)) == ["first, with a comma", "", 'third "quoted"', "", "fifth"]
    d = info(graph)
    assert d["empty_texts"] == 2 and "2 empty" in format_info(d)


def test_a_dataset_without_labels_points_to_link_prediction(tmp_path):
    nodes = [dict(n, label="", split="") for n in NODES]
    graph = load_dataset(_write(tmp_path / "g", nodes=nodes))
    with pytest.raises(FastleadingError, match=r"no labelled nodes\); link prediction needs no labels: "
                                               r"train.task=link \(--task link\)"):
        graph.split()
