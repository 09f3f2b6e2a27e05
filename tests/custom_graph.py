"""A small custom dataset folder (the ``custom`` format) and the CLI arguments of tiny runs on it,
for the tests that drive the command line as a new user would."""

from __future__ import annotations

import csv
import random
from pathlib import Path

TOPICS = {"vision": "image pixel camera convolution segmentation",
          "language": "text word token sentence grammar",
          "graphs": "node edge vertex neighbour propagation"}


def write_custom_graph(folder: Path, nodes: int = 60, seed: int = 0) -> list[str]:
    """``nodes.csv`` (id, text, label, split; 3 classes, texts from class words) and
    ``edges.csv`` (mostly within a class); returns the node ids in file order."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = list(TOPICS)
    ids = [f"p{i}" for i in range(nodes)]
    rows = []
    for i, nid in enumerate(ids):
        words = TOPICS[names[i % 3]].split() + ["the", "a", "of", "model"]
        rows.append({"id": nid, "text": " ".join(rng.choice(words) for _ in range(8)), "label": names[i % 3],
                     "split": ("train", "train", "valid", "test", "train")[i % 5]})
    with open(folder / "nodes.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "text", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    with open(folder / "edges.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["src", "dst"])
        for i in range(nodes):
            writer.writerow([ids[i], ids[(i + 3) % nodes]])  # same class: i and i+3
            writer.writerow([ids[i], ids[rng.randrange(nodes)]])
    return ids


def custom_graph_and_model(root: Path) -> tuple[Path, str]:
    """A 60-node custom dataset under ``root/data`` and a tiny BERT under ``root/bert``: the
    setting of the command-line tests; returns ``(root, model)``."""
    from tiny_models import save_tiny_model

    write_custom_graph(root / "data")
    return root, save_tiny_model(root / "bert", "bert", hidden=16, layers=1)


def data_args(root: Path, cache: Path, model: str) -> list[str]:
    """The flags that name the dataset, model and cache of a tiny run."""
    return ["--dataset", "custom", "--root", str(root), "--cache-dir", str(cache), "--model", model,
            "--max-length", "16"]


def train_args(root: Path, cache: Path, model: str, *extra: str) -> list[str]:
    """``train`` flags of a tiny CPU run (2 epochs of 3 steps on :func:`write_custom_graph`'s 60
    nodes); ``extra`` flags and ``section.key=value`` items are put where argparse takes them
    (flags first, then every ``section.key=value``; a later one wins)."""
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    flags = [a for a in extra if a not in overrides]
    return [*data_args(root, cache, model), "--epochs", "2", "--device", "cpu", *flags, "train.batch_size=16",
            "train.eval_batch_size=128", "model.head_hidden=16", "train.log_every=1",
            # an evaluation every epoch, no head warm-up: the schedule the run-folder tests count on
            "train.eval_every=1", "train.head_warmup_epochs=0", "train.lr_head=1e-3", *overrides]
