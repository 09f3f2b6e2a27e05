"""Summary statistics of a prepared dataset (``fastleading info``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from fastleading.engine.graph import degrees

if TYPE_CHECKING:
    from fastleading.data.tag import TextAttributedGraph
    from fastleading.data.tokens import TokenCache, TokenLengths

PERCENTILES = (50, 90, 99)


def _percentiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {**{f"p{p}": 0.0 for p in PERCENTILES}, "max": 0.0}
    q = np.percentile(values, PERCENTILES)
    return {**{f"p{p}": float(v) for p, v in zip(PERCENTILES, q, strict=True)}, "max": float(values.max())}


def info(graph: TextAttributedGraph, tokens: TokenCache | TokenLengths | None = None) -> dict:
    """Nodes, edges, degree percentiles, classes, split sizes, text-length percentiles and
    the number of empty texts (nodes without text), and token-length percentiles.

    ``edges`` counts undirected edges (``directed_edges`` = the CSR's entries).
    """
    deg = degrees(graph.rowptr).numpy()
    labels = graph.labels.numpy()
    counts = np.bincount(labels[labels >= 0], minlength=graph.num_classes)
    out: dict[str, Any] = {
        "dataset": graph.name,
        "path": str(graph.path) if graph.path is not None else None,
        "nodes": graph.num_nodes,
        "edges": graph.num_edges // 2,
        "directed_edges": graph.num_edges,
        "degree": {**_percentiles(deg), "mean": float(deg.mean()) if len(deg) else 0.0,
                   "isolated": int((deg == 0).sum())},
        "classes": graph.num_classes,
        "class_sizes": {name: int(c) for name, c in zip(graph.class_names, counts, strict=True)},
        "unlabelled": int((labels < 0).sum()),
        "has_text": graph.has_text,
        "features": list(graph.features.shape[1:]) if graph.features is not None else None,
        "default_split": graph.default_split,
        "splits": {name: graph.split(name).sizes() for name in graph.split_names},
    }
    if graph.has_text:
        text_bytes = graph.node_texts.byte_lengths()
        out["text_bytes"] = _percentiles(text_bytes)
        out["empty_texts"] = int((text_bytes == 0).sum())  # nodes without text
    if tokens is not None:
        lengths = tokens.lengths.numpy()
        out["tokens"] = {"model": tokens.model_name, "max_length": tokens.max_length,
                         "padding_side": tokens.padding_side, "length": _percentiles(lengths),
                         "truncated": int((lengths >= tokens.max_length).sum()),
                         "path": str(tokens.path) if tokens.path is not None else None}
    return out


def format_info(d: dict) -> str:
    """A human-readable rendering of :func:`info`'s dict."""

    def pct(p: dict) -> str:
        return " ".join(f"{k}={v:g}" for k, v in p.items())

    where = f"  ({d['path']})" if d.get("path") else ""
    if d.get("cached") is False:
        where = "  (not cached: built in memory; `fastleading prepare` caches it)"
    lines = [f"dataset      {d['dataset']}{where}",
             f"nodes        {d['nodes']:,}",
             f"edges        {d['edges']:,} undirected ({d['directed_edges']:,} directed)",
             f"degree       {pct(d['degree'])}",
             f"classes      {d['classes']}: " + ", ".join(f"{k} {v}" for k, v in list(d["class_sizes"].items())[:10])
             + (" ..." if d["classes"] > 10 else "") + (f"; unlabelled {d['unlabelled']}" if d["unlabelled"] else ""),
             f"texts        {'yes' if d['has_text'] else 'no'}"
             + (f" (bytes {pct(d['text_bytes'])}; {d['empty_texts']:,} empty)" if "text_bytes" in d else ""),
             "features     " + (f"{d['features'][0]} per node (fixed features, the input of method shallow)"
                                  if d["features"] else "none")]
    splits = d["splits"]
    shown = list(splits)[:6]
    for name in shown:
        s = splits[name]
        mark = " (default)" if name == d["default_split"] else ""
        lines.append(f"split        {name}{mark}: train {s['train']:,} / valid {s['valid']:,} / test {s['test']:,}")
    if len(splits) > len(shown):
        lines.append(f"             ... {len(splits) - len(shown)} more: {', '.join(list(splits)[len(shown):])}")
    if "tokens" in d:
        t = d["tokens"]
        line = f"tokens       {t['model']} max_length={t['max_length']} padding={t['padding_side']}"
        if t.get("cached") is False:
            line += f" (counted now, not cached: `fastleading prepare --max-length {t['max_length']}` caches it)"
        others = [n for n in t.get("prepared_lengths", []) if n != t["max_length"]]
        if others:
            line += f"; also prepared at max_length {', '.join(map(str, others))}"
        lines.append(line)
        lines.append(f"token length {pct(t['length'])}; truncated {t['truncated']:,}")
    return "\n".join(lines)
