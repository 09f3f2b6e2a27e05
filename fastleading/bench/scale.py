"""A LEADING training run at ogbn-products size on CPU (``fastleading bench scale``).

The graph is the built-in ``synthetic`` dataset in scale mode (``data.synthetic_tokens=true``:
token ids written straight into the token cache) at ogbn-products' shape: 2,449,029 nodes,
~124M directed edges, 47 classes, split ``products`` (ogbn-products' 8.03 / 1.61 / 90.37
percent). The LM is a stand-in: a BERT configuration shrunk to be cheap on CPU (2 layers,
hidden 64, feed-forward 128, random weights, ``model.random_init=true``) with
all-MiniLM-L6-v2's tokenizer, on short texts (12 words on average, ``data.max_length=16``),
so what is measured is the system around the LM (data, sampler, bank, propagation,
evaluation, checkpoint), not the LM. Even so the evaluation's LM pass over every node is the
largest cost (minutes on 2 cores): the bank fill, another such pass, is off by default
(``--fill-bank`` turns it on), and evaluation encodes 1024 nodes per forward
(``train.eval_batch_size``).

Two child processes, so each has its own peak RSS:

1. ``prepare``: the graph cache and the token cache (built on the first run, opened from
   ``--cache-dir`` afterwards; the JSON says which).
2. ``train``: :func:`fastleading.trainer.loop.train` for ``--steps`` steps with one checkpoint
   (at the last step) and one full-graph evaluation (after it: ``train.max_steps`` ends the run
   inside the first epoch). The loop is not modified: the benchmark wraps the loop module's
   own calls (``build_trainer``, ``encode_graph``, ``evaluate``, ``full_graph_logits``,
   ``save_checkpoint``, ``save_best``, the step function) with timers and an RSS poller.

The JSON has: prepare time and peak RSS; steps/s and the per-phase table (summary.json's
``phase_time_s`` with call counts); LM encodes per graph node by kind; evaluation time split
into LM encoding and propagation; checkpoint size and write time; peak RSS of the run (and
its anonymous / file-backed parts); the per-node tables of the run as allocated; machine,
command, git commit. ``--toy`` runs the same pipeline on a tiny graph into a temporary folder
(no performance claim).

    fastleading bench scale                    # full size; JSON in benchmarks/results/
    fastleading bench scale --toy --out /tmp/scale.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRODUCTS_NODES = 2_449_029
PRODUCTS_EDGES = 123_718_280      # directed, after symmetrisation (ogbn-products)
PRODUCTS_CLASSES = 47
# data.synthetic_avg_degree giving ~124M directed edges at 2,449,029 nodes: the generator draws
# N * d / 2 edges and build_csr symmetrises them, dropping duplicates and self-loops (at d = 50.5
# 2.7% of them: 120.3M directed edges), so d is raised by that share
PRODUCTS_AVG_DEGREE = 52.0
GIB = 2 ** 30


# -- per-node tables -------------------------------------------------------------------------

def node_tables(num_nodes: int, num_edges: int, hidden: int, classes: int, max_length: int,
                float_bytes: int = 4, num_split: int | None = None, refresh_scope: int | None = None) -> list[dict]:
    """Every table of a LEADING run whose size grows with the graph and that lives for the whole
    run, with its bytes, as the code allocates it (module and class named in ``where``).
    ``float_bytes``: the bank dtype (``train.bank_dtype``: fp32 = 4 on CPU, bf16 = 2 on GPU),
    which the implicit histories share. ``num_split``: nodes in the split's train + valid + test
    (default: all); ``refresh_scope``: nodes pipeline 2 re-encodes (default: all). ``anonymous``: False for the
    memory-mapped files (their pages count in RSS once read, but the kernel can drop them); ``in_checkpoint``: saved
    in ``checkpoint.pt``."""
    n, e, h, c, length = num_nodes, num_edges, hidden, classes, max_length
    num_split = n if num_split is None else num_split
    scope = n if refresh_scope is None else refresh_scope
    fdt = {4: "fp32", 2: "bf16"}.get(float_bytes, f"{8 * float_bytes}-bit")
    col_bytes = 4 if n <= 2 ** 31 else 8
    rows = [  # table, shape, bytes, where, anonymous, in checkpoint
        ("memory bank: emb", f"[N, H] {fdt}", n * h * float_bytes, "engine/bank.py MemoryBank.emb", True, True),
        ("memory bank: stamp", "[N] int64", n * 8, "engine/bank.py MemoryBank.stamp", True, True),
        ("implicit history x_history", f"[N, C] {fdt}", n * c * float_bytes, "models/appnp.py ImplicitAPPNP", True,
         True),
        ("implicit history g_history", f"[N, C] {fdt}", n * c * float_bytes, "models/appnp.py ImplicitAPPNP", True,
         True),
        ("implicit history input_history", f"[N, C] {fdt}", n * c * float_bytes,
         "models/appnp.py ImplicitAPPNP (model.warm_start=delta)", True, True),
        ("last evaluation's solution (warm start)", "[N, C] fp32", n * c * 4,
         "trainer/state.py Progress.eval_solution (after the first evaluation)", True, True),
        ("encode counters (grad, refresh)", "2 x [N] int32", 2 * n * 4, "models/encode.py EncodeCounter", True, True),
        ("token cache: input_ids", f"[N, {length}] int32", n * length * 4, "data/tokens.py, memory-mapped", False,
         False),
        ("token cache: lengths", "[N] int32", n * 4, "data/tokens.py, memory-mapped", False, False),
        ("CSR rowptr", "[N+1] int64", (n + 1) * 8, "data/tag.py, memory-mapped", False, False),
        ("CSR col", f"[E] int{8 * col_bytes}", e * col_bytes, "data/tag.py, memory-mapped", False, False),
        ("labels", "[N] int64", n * 8, "data/tag.py, memory-mapped", False, False),
        ("split ids (train + valid + test)", "int64", num_split * 8, "data/tag.py Split", True, False),
        ("full-graph dinv", "[N] fp32", n * 4, "trainer/loop.py build_trainer (ops.gcn_dinv)", True, False),
        ("pipeline 2 order", "[scope] int64 (train.refresh_scope; at most N)", scope * 8,
         "trainer/batches.py RefreshOrder", True, False),
    ]
    return [{"table": t, "shape": s, "bytes": b, "where": w, "anonymous": a, "in_checkpoint": k}
            for t, s, b, w, a, k in rows]


def evaluation_tables(num_nodes: int, hidden: int, classes: int, float_bytes: int = 4,
                      column_block: int = 64, cg_work: int = 6) -> list[dict]:
    """The ``[N, *]`` arrays a full-graph evaluation of LEADING allocates on top of the run's
    tables, at their peak (inside the conjugate-gradient solve): ``trainer/loop.py evaluate``
    keeps the embeddings of every node (``encode_all``) while ``trainer/evaluate.py
    full_graph_logits`` applies the head and ``models/appnp.py solve_appnp`` solves one block of
    ``column_block`` columns at a time with ``cg_work`` work arrays beside its output (which
    becomes the next warm start, counted in :func:`node_tables`): six (b, zeros, x, r, p, A p)
    in commit 0db3140, which the scale run measured; 8fc8805 updates five in place."""
    n, h, c = num_nodes, hidden, classes
    block = min(c, column_block)
    return [
        {"table": "embeddings of every node (encode_all)", "shape": "[N, H] bank dtype", "bytes": n * h * float_bytes},
        {"table": "head logits (the propagation's input)", "shape": "[N, C] fp32", "bytes": n * c * 4},
        {"table": "conjugate-gradient work arrays", "shape": f"{cg_work} x [N, {block}] fp32",
         "bytes": cg_work * n * block * 4},
    ]


def _nbytes(t) -> int:
    return int(t.numel() * t.element_size())


def live_tables(tr) -> dict[str, int]:
    """Bytes of the per-node tables of a built trainer, read from its tensors (what
    :func:`node_tables` computes, checked against the run)."""
    run, graph = tr.run, tr.graph
    out = {}

    def add(name, tensor):
        if tensor is not None:
            out[name] = _nbytes(tensor)

    if run.bank is not None:
        add("memory bank: emb", run.bank.emb)
        add("memory bank: stamp", run.bank.stamp)
    appnp = getattr(run.model, "appnp", None)
    add("implicit history x_history", getattr(appnp, "x_history", None))
    add("implicit history g_history", getattr(appnp, "g_history", None))
    add("implicit history input_history", getattr(appnp, "input_history", None))
    out["encode counters (grad, refresh)"] = sum(_nbytes(t) for t in run.counter.per_node.values())
    if run.tokens is not None:
        add("token cache: input_ids", run.tokens.input_ids)
        add("token cache: lengths", run.tokens.lengths)
    add("CSR rowptr", graph.rowptr)
    add("CSR col", graph.col)
    add("labels", graph.labels)
    out["split ids (train + valid + test)"] = sum(_nbytes(t) for t in (tr.split.train, tr.split.valid, tr.split.test))
    add("full-graph dinv", getattr(run, "graph_dinv", None))
    if tr.refresh_order is not None:
        add("pipeline 2 order", getattr(tr.refresh_order, "_perm", None))
    solution = getattr(tr.progress, "eval_solution", None)
    if solution is not None:
        add("last evaluation's solution (warm start)", solution)
    return out


# -- measuring -------------------------------------------------------------------------------

def _status_kib(*keys: str) -> dict[str, int]:
    found = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in keys:
                found[name] = int(value.split()[0])
    return found


class RssPoller:
    """Samples this process's RSS (and its anonymous part) every ``interval`` seconds in a
    thread; :meth:`window` gives the peak between two times."""

    def __init__(self, interval: float = 0.05):
        self.t0 = time.perf_counter()
        self.samples: list[tuple[float, int, int]] = []
        self._interval = interval
        self._stop = threading.Event()
        self._sample()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _sample(self) -> tuple[float, int, int]:
        s = _status_kib("VmRSS", "RssAnon")
        sample = (time.perf_counter() - self.t0, s.get("VmRSS", 0) * 1024, s.get("RssAnon", 0) * 1024)
        self.samples.append(sample)
        return sample

    def _poll(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def at(self, t: float) -> tuple[int, int]:
        """(RSS, anonymous RSS) in bytes of the last sample at or before ``t``."""
        before = [s for s in self.samples if s[0] <= t] or self.samples[:1]
        return before[-1][1], before[-1][2]

    def window(self, start: float, end: float) -> tuple[int, int]:
        """(peak RSS, peak anonymous RSS) in bytes between ``start`` and ``end``."""
        inside = [s for s in self.samples if start <= s[0] <= end] or [self.samples[-1]]
        return max(s[1] for s in inside), max(s[2] for s in inside)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def timeline(self, points: int = 120) -> list[list[float]]:
        """Peak RSS / anonymous RSS (GiB) per time bucket: ``[[t_s, rss, anon], ...]``."""
        end = self.samples[-1][0] or 1.0
        buckets: dict[int, tuple[float, int, int]] = {}
        for t, rss, anon in self.samples:
            k = min(points - 1, int(points * t / end))
            old = buckets.get(k)
            buckets[k] = (t, max(rss, old[1] if old else 0), max(anon, old[2] if old else 0))
        return [[round(t, 1), round(r / GIB, 3), round(a / GIB, 3)] for t, r, a in
                (buckets[k] for k in sorted(buckets))]


def peak_rss() -> dict:
    """This process's peak RSS (VmHWM) and its RSS now, anonymous and file-backed parts, bytes."""
    s = _status_kib("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")
    return {"peak_rss_bytes": s.get("VmHWM", 0) * 1024, "rss_end_bytes": s.get("VmRSS", 0) * 1024,
            "rss_anon_end_bytes": s.get("RssAnon", 0) * 1024, "rss_file_end_bytes": s.get("RssFile", 0) * 1024}


class Events:
    """Timed calls of wrapped functions: name, start, end, RSS peak inside."""

    def __init__(self, poller: RssPoller):
        self.poller = poller
        self.items: list[dict] = []

    def wrap(self, module, name: str, label=None, note=None):
        """Replace ``module.name`` by a timed wrapper (nothing when it does not exist);
        ``note(args, kwargs, result)`` adds fields to the call's record."""
        fn = getattr(module, name, None)
        if fn is None:
            return
        events = self

        def timed(*args, **kwargs):
            item = {"name": label(args, kwargs) if label else name, "start": events.poller.now()}
            events.items.append(item)
            try:
                result = fn(*args, **kwargs)
                if note is not None:
                    item.update(note(args, kwargs, result))
                return result
            finally:
                item["end"] = events.poller.now()

        setattr(module, name, timed)

    def finish(self) -> list[dict]:
        for item in self.items:
            item.setdefault("end", self.poller.now())
            peak, anon = self.poller.window(item["start"], item["end"])
            item["seconds"] = round(item["end"] - item["start"], 3)
            item["peak_rss_gib"] = round(peak / GIB, 3)
            item["peak_rss_anon_gib"] = round(anon / GIB, 3)
            # what the call added on top of what was resident when it started
            item["rss_anon_at_start_gib"] = round(self.poller.at(item["start"])[1] / GIB, 3)
            item["start"], item["end"] = round(item["start"], 3), round(item["end"], 3)
        return self.items


def _dir_bytes(path: Path | None) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) if path and Path(path).exists() else 0


def _file_bytes(path: Path) -> int | None:
    return path.stat().st_size if path.is_file() else None


# -- the two child processes -----------------------------------------------------------------

def worker_prepare(spec: dict) -> dict:
    """Graph cache, then token cache, each timed; peak RSS of this process."""
    import torch

    from fastleading.config import Config, apply_overrides
    from fastleading.data import graph_dir, load_dataset, prepare
    from fastleading.engine.graph import degree_percentiles

    cfg = apply_overrides(Config(), spec["overrides"])
    poller = RssPoller()
    graph_hit = (graph_dir(cfg.data) / "meta.json").is_file()
    token_root = Path(cfg.data.cache_dir) / "tokens"
    token_dirs = {d.name for d in token_root.iterdir()} if token_root.is_dir() else set()
    t0 = poller.now()
    graph = load_dataset(cfg.data)
    t1 = poller.now()
    graph, tokens = prepare(cfg)
    t2 = poller.now()
    assert tokens is not None  # an LM method: the graph's texts are tokenized
    token_hit = tokens.path is not None and tokens.path.name in token_dirs
    poller.stop()
    p50, p99, dmax = degree_percentiles(graph.rowptr, [50, 99, 100])
    split = graph.split(cfg.data.split)
    lengths = tokens.lengths.to(torch.float64)
    return {
        "graph_cache_hit": graph_hit, "token_cache_hit": bool(token_hit),
        "graph_s": round(t1 - t0, 2), "tokens_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2),
        **peak_rss(), "peak_rss_anon_bytes": poller.window(0, poller.now())[1],
        "graph": {"nodes": graph.num_nodes, "directed_edges": graph.num_edges, "classes": graph.num_classes,
                  "degree_p50": p50, "degree_p99": p99, "degree_max": dmax,
                  "split": cfg.data.split, "split_sizes": split.sizes(),
                  "graph_cache_dir": str(graph.path), "graph_cache_bytes": _dir_bytes(graph.path)},
        "tokens": {"max_length": tokens.max_length, "mean_length": round(float(lengths.mean()), 2),
                   "max_real_length": int(tokens.lengths.max()), "dtype": str(tokens.input_ids.dtype),
                   "token_cache_dir": str(tokens.path), "token_cache_bytes": _dir_bytes(tokens.path)},
        "rss_timeline_gib": poller.timeline(60),
    }


def worker_train(spec: dict) -> dict:
    """``loop.train`` with the loop's own calls timed; what it allocated per node; file sizes."""
    import torch

    from fastleading.config import Config, apply_overrides
    from fastleading.run import checkpoint
    from fastleading.trainer import evaluate as evaluate_mod
    from fastleading.trainer import loop

    cfg = apply_overrides(Config(), spec["overrides"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    out_dir = Path(spec["run_dir"])
    poller = RssPoller()
    events = Events(poller)
    captured = {}
    build = loop.build_trainer

    def build_and_keep(*args, **kwargs):
        captured["trainer"] = tr = build(*args, **kwargs)
        return tr

    loop.build_trainer = build_and_keep
    events.wrap(loop, "build_trainer")
    # the bank fill is the loop's call of encode_graph, an evaluation's encode evaluate's own
    encode_label = lambda a, k: "encode_graph:" + str(k.get("kind", a[2] if len(a) > 2 else "?"))  # noqa: E731
    events.wrap(loop, "encode_graph", label=encode_label)
    events.wrap(evaluate_mod, "encode_graph", label=encode_label)
    events.wrap(loop, "evaluate")
    events.wrap(evaluate_mod, "full_graph_logits")
    # iterations: propagate's num_iters argument; solve_appnp returns (solution, iterations)
    events.wrap(evaluate_mod, "propagate", label=lambda a, k: "propagate",
                note=lambda a, k, r: {"iters": k.get("num_iters", a[4] if len(a) > 4 else None)})
    events.wrap(evaluate_mod, "solve_appnp", label=lambda a, k: "propagate",
                note=lambda a, k, r: {"iters": r[1] if isinstance(r, tuple) and len(r) == 2 else None})
    events.wrap(loop, "save_checkpoint")
    events.wrap(loop, "save_best")
    step_starts: list[float] = []
    steps = dict(loop.STEPS)
    inner = steps[cfg.train.method]

    def step(*args, **kwargs):
        step_starts.append(poller.now())
        return inner(*args, **kwargs)

    steps[cfg.train.method] = step
    loop.STEPS = steps
    torch.manual_seed(0)
    t0 = poller.now()
    summary = loop.train(cfg, out_dir, quiet=True)
    wall = poller.now() - t0
    poller.stop()
    tr = captured["trainer"]
    items = events.finish()
    counts = dict(tr.run.phases.counts)
    totals = tr.run.phases.totals
    return {
        "summary": summary, "train_call_s": round(wall, 2), "events": items, "step_starts": step_starts,
        "phase_counts": counts,
        "phase_table": {k: {"total_s": round(v, 3), "calls": counts.get(k, 0),
                            "ms_per_call": round(1000 * v / max(counts.get(k, 0), 1), 3)}
                        for k, v in sorted(totals.items(), key=lambda kv: -kv[1])},
        "encode_totals": dict(tr.run.counter.totals),
        "bank_dtype_bytes": tr.run.precision.bank_dtype.itemsize,
        "refresh_scope": tr.refresh_order.num_nodes if tr.refresh_order is not None else 0,
        "live_tables_bytes": live_tables(tr),
        "model_parameters": sum(p.numel() for p in tr.run.model.parameters()),
        "lm_parameters": sum(p.numel() for p in tr.run.model.encoder.parameters()),
        "checkpoint_bytes": _file_bytes(out_dir / checkpoint.CHECKPOINT),
        "best_bytes": _file_bytes(out_dir / checkpoint.BEST),
        "torch_threads": torch.get_num_threads(), "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        **peak_rss(), "peak_rss_anon_bytes": poller.window(0, poller.now())[1],
        "rss_timeline_gib": poller.timeline(120),
    }


# -- the parent ------------------------------------------------------------------------------

def stand_in_model(root: Path, hidden: int, layers: int, heads: int) -> Path:
    """A folder with a BERT config shrunk to ``layers`` x ``hidden`` (feed-forward 2 x hidden, as
    ``tests/tiny_models.py``; random weights are built
    from it: ``model.random_init=true``) and all-MiniLM-L6-v2's fast tokenizer. Written once
    per shape: a stable folder keeps the token cache's key (which covers the tokenizer)."""
    folder = root / f"bert-l{layers}-h{hidden}-a{heads}-ff{2 * hidden}"
    if (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file():
        return folder
    from transformers import AutoTokenizer, BertConfig

    from fastleading.models.hub import resolve_model_path

    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=root))
    tok = AutoTokenizer.from_pretrained(resolve_model_path("sentence-transformers/all-MiniLM-L6-v2"))
    BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
               intermediate_size=2 * hidden, max_position_embeddings=512).save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def overrides(args, model: Path) -> list[str]:
    return [
        "data.dataset=synthetic", f"data.synthetic_nodes={args.nodes}", f"data.synthetic_classes={args.classes}",
        f"data.synthetic_avg_degree={args.avg_degree}", f"data.synthetic_words={args.words}",
        "data.synthetic_tokens=true", f"data.max_length={args.max_length}", f"data.cache_dir={args.cache_dir}",
        f"data.split={args.split}",
        f"model.name={model}", "model.random_init=true",
        "train.method=leading", "train.device=cpu", "train.epochs=1", f"train.batch_size={args.batch_size}",
        f"train.max_steps={args.steps}", f"train.checkpoint_every={args.steps}",
        # the LM steps and one full evaluation are what is measured: no head warm-up before them
        "train.head_warmup_epochs=0",
        f"train.fill_bank={str(args.fill_bank).lower()}", f"train.eval_batch_size={args.eval_batch_size}",
        *args.set,
    ]


def run_worker(kind: str, spec: dict, tmp: Path) -> dict:
    spec_path, report_path = tmp / f"{kind}-spec.json", tmp / f"{kind}-report.json"
    spec_path.write_text(json.dumps(spec))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fastleading.bench.scale", "--worker", kind, str(spec_path),
                    str(report_path)], check=True)
    report = json.loads(report_path.read_text())
    report["process_wall_s"] = round(time.perf_counter() - start, 2)
    return report


def _git(*argv: str) -> str:
    try:
        return subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def uncommitted_files() -> list[str]:
    """Tracked files with uncommitted changes (measured as they are in the working tree)."""
    try:
        status = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [line[3:] for line in status.splitlines() if len(line) > 3 and not line.startswith("??")]


def versions() -> dict:
    import numpy
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "transformers": transformers.__version__}


def _steps(train: dict) -> dict:
    """Steps/s of the loop: from the start of the second step (the first warms up) to the end
    of the last step, i.e. the start of the first wrapped call after it (the checkpoint)."""
    starts = train["step_starts"]
    if not starts:
        return {"steps": 0}
    after = [e["start"] for e in train["events"] if e["start"] >= starts[-1]]
    end = min(after) if after else starts[-1]
    out = {"steps": len(starts), "first_step_s": round((starts[1] if len(starts) > 1 else end) - starts[0], 3),
           "loop_s": round(end - starts[0], 3)}
    if len(starts) > 2:
        steady = end - starts[1]
        out.update({"steady_steps": len(starts) - 1, "steady_s": round(steady, 3),
                    "steps_per_s": round((len(starts) - 1) / steady, 3),
                    "ms_per_step": round(1000 * steady / (len(starts) - 1), 2)})
    return out


def _evaluation(train: dict, num_nodes: int) -> dict:
    ev = train["events"]
    evals = [e for e in ev if e["name"] == "evaluate"]
    if not evals:
        return {}
    e = evals[0]
    inside = [x for x in ev if e["start"] <= x["start"] and x["end"] <= e["end"] and x is not e]
    encode = sum(x["seconds"] for x in inside if x["name"] == "encode_graph:eval")
    logits = sum(x["seconds"] for x in inside if x["name"] == "full_graph_logits")
    prop = sum(x["seconds"] for x in inside if x["name"] == "propagate")
    iters = next((x.get("iters") for x in inside if x["name"] == "propagate"), None)
    return {"evaluations": len(evals), "total_s": e["seconds"], "encode_s": round(encode, 3),
            "propagation_s": round(prop, 3), "head_s": round(logits - prop, 3),
            "other_s": round(e["seconds"] - encode - logits, 3),
            "encode_nodes_per_s": round(num_nodes / encode, 1) if encode else None,
            "peak_rss_gib": e["peak_rss_gib"], "peak_rss_anon_gib": e["peak_rss_anon_gib"],
            "propagation_iters": iters, "propagation_s_per_iter": round(prop / iters, 3) if iters else None}


def _one(train: dict, name: str) -> dict | None:
    found = [e for e in train["events"] if e["name"] == name]
    return ({"calls": len(found), "total_s": round(sum(e["seconds"] for e in found), 3),
             "peak_rss_gib": max(e["peak_rss_gib"] for e in found)} if found else None)


def memory_table(n: int, e: int, classes: int) -> list[dict]:
    """The table of docs/scale.md ("Memory at scale"): per-node tables at ``n`` nodes / ``e``
    edges for bert-base (768) and MiniLM (384) at 128 and 256 tokens, fp32 (CPU) and bf16
    (GPU) bank."""
    rows = []
    for hidden, model in ((768, "bert-base"), (384, "MiniLM")):
        for length in (128, 256):
            for fb in (4, 2):
                tables = node_tables(n, e, hidden, classes, length, fb)
                rows.append({"model": model, "hidden": hidden, "max_length": length,
                             "bank_dtype": "fp32" if fb == 4 else "bf16",
                             "tables": {t["table"]: t["bytes"] for t in tables},
                             "total_bytes": sum(t["bytes"] for t in tables),
                             "evaluation_extra_bytes": sum(t["bytes"]
                                                           for t in evaluation_tables(n, hidden, classes, fb))})
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--worker"]:
        kind, spec_path, report_path = argv[1:4]
        spec = json.loads(Path(spec_path).read_text())
        report = worker_prepare(spec) if kind == "prepare" else worker_train(spec)
        Path(report_path).write_text(json.dumps(report, default=str))
        return 0
    p = argparse.ArgumentParser(prog="fastleading bench scale", description=__doc__.split("\n\n")[0])
    p.add_argument("--toy", action="store_true", help="a tiny graph into a temporary folder (checks the pipeline)")
    p.add_argument("--nodes", type=int, default=PRODUCTS_NODES)
    p.add_argument("--avg-degree", type=float, default=PRODUCTS_AVG_DEGREE, help="data.synthetic_avg_degree")
    p.add_argument("--classes", type=int, default=PRODUCTS_CLASSES)
    p.add_argument("--split", default="products")
    p.add_argument("--words", type=int, default=12, help="data.synthetic_words (tokens per text ~ words + 2)")
    p.add_argument("--max-length", type=int, default=16)
    p.add_argument("--hidden", type=int, default=64, help="stand-in BERT hidden size")
    p.add_argument("--layers", type=int, default=2, help="stand-in BERT layers")
    p.add_argument("--heads", type=int, default=2, help="stand-in BERT attention heads")
    p.add_argument("--steps", type=int, default=50, help="training steps (train.max_steps; checkpoint at the last)")
    p.add_argument("--batch-size", type=int, default=32, help="train.batch_size")
    p.add_argument("--eval-batch-size", type=int, default=1024, help="train.eval_batch_size")
    p.add_argument("--fill-bank", action=argparse.BooleanOptionalAction, default=False,
                   help="train.fill_bank (off by default: it is one more full-graph encode, as long as the "
                        "evaluation's)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads of the training process "
                                                        "(0: torch's default, one per core)")
    p.add_argument("--set", action="append", default=[], metavar="section.key=value", help="any other config field")
    p.add_argument("--cache-dir", default=None, help="dataset / token cache (default: data.cache_dir's default; "
                                                     "reused between runs)")
    p.add_argument("--run-dir", default=None, help="run folder (default: a temporary folder, removed at the end)")
    p.add_argument("--out", default=None, help="result JSON (default benchmarks/results/scale-cpu-<date>.json; "
                                                "with --toy a temporary file)")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="fastleading-scale-"))
    if args.toy:
        args.nodes, args.avg_degree, args.words, args.max_length = 3000, 8.0, 12, 16
        args.hidden, args.steps, args.batch_size = 32, 4, 16
        args.cache_dir = args.cache_dir or str(tmp / "cache")
    if args.cache_dir is None:
        from fastleading.config import default_cache_dir

        args.cache_dir = default_cache_dir()
    args.cache_dir = str(Path(args.cache_dir).expanduser().resolve())
    run_dir = Path(args.run_dir) if args.run_dir else tmp / "run"
    date = datetime.date.today().isoformat()
    if args.out:
        out = Path(args.out)
    elif args.toy:
        out = Path(tempfile.mkdtemp(prefix="fastleading-scale-toy-")) / "scale-toy.json"
    else:
        out = REPO / "benchmarks" / "results" / f"scale-cpu-{date}.json"
    models = Path(args.cache_dir) / "bench-scale-models"
    models.mkdir(parents=True, exist_ok=True)
    model = stand_in_model(models, args.hidden, args.layers, args.heads)
    spec = {"overrides": overrides(args, model), "run_dir": str(run_dir), "threads": args.threads}
    from fastleading.bench.report import git_commit
    from fastleading.bench.sampler import machine

    result = {"benchmark": "scale", "date": date, "toy": bool(args.toy),
              "command": "fastleading bench scale " + " ".join(argv),
              "git_commit": git_commit(),
              "git_uncommitted": uncommitted_files(),
              "machine": machine(), "versions": versions(),
              "stand_in_lm": {"kind": "BertConfig, random weights", "hidden": args.hidden, "layers": args.layers,
                              "heads": args.heads, "intermediate": 2 * args.hidden,
                              "tokenizer": "all-MiniLM-L6-v2 (WordPiece, 30,522)"},
              "config_overrides": spec["overrides"]}
    wall = time.perf_counter()
    print(f"bench scale: {args.nodes:,} nodes, cache {args.cache_dir}", flush=True)
    prep = run_worker("prepare", spec, tmp)
    print(f"prepare: {prep['total_s']} s (graph cache hit: {prep['graph_cache_hit']}, tokens cache hit: "
          f"{prep['token_cache_hit']}), peak RSS {prep['peak_rss_bytes'] / GIB:.2f} GiB", flush=True)
    train = run_worker("train", spec, tmp)
    total_wall = time.perf_counter() - wall
    result["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
    summary = train["summary"]
    n, e, c = prep["graph"]["nodes"], prep["graph"]["directed_edges"], prep["graph"]["classes"]
    evaluation = _evaluation(train, n)
    ckpt = _one(train, "save_checkpoint")
    if ckpt is not None:
        ckpt["bytes"] = train["checkpoint_bytes"]
    best = _one(train, "save_best")
    if best is not None:
        best["bytes"] = train["best_bytes"]
    float_bytes = train["bank_dtype_bytes"]  # the bank's (bf16 autocast on a CPU keeps an fp32 bank)
    run_tables = node_tables(n, e, args.hidden, c, args.max_length, float_bytes, refresh_scope=train["refresh_scope"],
                             num_split=sum(prep["graph"]["split_sizes"].values()))
    live = dict(train["live_tables_bytes"])
    for row in run_tables:
        row["bytes_live"] = live.pop(row["table"], None)
    totals = train["encode_totals"]
    result.update({
        "prepare": prep,
        "train": {
            "process_wall_s": train["process_wall_s"], "train_call_s": train["train_call_s"],
            "build_trainer": _one(train, "build_trainer"),
            "fill": _one(train, "encode_graph:fill"),
            **_steps(train),
            "phase_time_s": summary.get("phase_time_s"), "phase_table": train["phase_table"],
            "encodes_per_graph_node_per_epoch": summary.get("encodes_per_graph_node_per_epoch"),
            "encodes_per_node_per_epoch": summary.get("encodes_per_node_per_epoch"),
            "encode_totals": totals, "encodes_per_graph_node": {k: round(v / n, 6) for k, v in totals.items()},
            "epochs": summary.get("epochs"), "refresh_batch_size": summary.get("refresh_batch_size"),
            "evaluation": evaluation, "checkpoint": ckpt, "best": best,
            "accuracy": {"valid": summary.get("best_valid_acc"), "test": summary.get("test_acc"),
                         "note": "random-weight stand-in LM after a few steps: not a result"},
            "model_parameters": train["model_parameters"], "lm_parameters": train["lm_parameters"],
            "torch_threads": train["torch_threads"], "load_avg_1m_at_end": train["load_avg_1m_at_end"],
            "peak_rss_bytes": train["peak_rss_bytes"], "peak_rss_anon_bytes": train["peak_rss_anon_bytes"],
            "rss_end_bytes": train["rss_end_bytes"], "rss_anon_end_bytes": train["rss_anon_end_bytes"],
            "rss_file_end_bytes": train["rss_file_end_bytes"],
            "events": train["events"], "rss_timeline_gib": train["rss_timeline_gib"], "summary": summary,
        },
        "per_node_tables_of_this_run": run_tables,
        "per_node_tables_total_bytes": sum(r["bytes"] for r in run_tables),
        "per_node_tables_live_only": live,
        "memory_table_products": memory_table(PRODUCTS_NODES, PRODUCTS_EDGES, PRODUCTS_CLASSES),
        "peak_rss_bytes": max(prep["peak_rss_bytes"], train["peak_rss_bytes"]),
        "peak_rss_gib": round(max(prep["peak_rss_bytes"], train["peak_rss_bytes"]) / GIB, 3),
        "total_wall_s": round(total_wall, 2),
    })
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tr = result["train"]
    print(f"train: {tr.get('steps_per_s')} steps/s over {tr.get('steady_steps')} steps; evaluation "
          f"{evaluation.get('total_s')} s (encode {evaluation.get('encode_s')} s, propagation "
          f"{evaluation.get('propagation_s')} s); checkpoint {ckpt and ckpt['bytes']} bytes in "
          f"{ckpt and ckpt['total_s']} s; peak RSS {result['peak_rss_gib']} GiB; total {total_wall:.0f} s", flush=True)
    print(f"results: {out}")
    if not args.run_dir:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
