"""No-gradient encode on the CPU: today's eager fp32 path against ONNX Runtime (``train.encode_backend``).

    python benchmarks/bench_cpu_encode.py --json benchmarks/results/cpu-encode-<date>.json

The same real texts, the same model (all-MiniLM-L6-v2) and the same threads (each of
``--threads``), in one process:
real arXiv titles (``../shared/data/arxiv-2023/raw/titles.csv.gz``) at 32 tokens and
CiteSeer-TAG texts (``../shared/data/citeseer-tag/citeseer_texts.txt.gz``) at 64 and 128
tokens, a fixed random subset of ``--texts`` of each (seeded), tokenized as the token cache
does. Each path runs :func:`fastleading.models.encode.encode_all` (what the bank fill, evaluation,
``predict``, ``export`` and ``downstream`` run) over the texts; the paths alternate round by
round so load from other jobs hits them alike, and the median round is reported:

- ``eager fp32`` (the baseline): ``train.encode_backend=eager``, ``train.precision=fp32``
  (the path of a CPU without native bf16);
- ``onnx fp32``: ``train.encode_backend=onnx`` (the exports are timed apart, ``export_s``);
- ``eager bf16``: ``train.precision=bf16`` on a CPU with native bf16 (what ``auto`` picks
  there), beside them;
- ``openvino fp32`` (when ``openvino`` is installed): ``train.encode_backend=openvino``, the
  same ONNX export compiled by OpenVINO's CPU plugin in fp32.

``min_cosine``: the smallest cosine similarity of a text's embedding to its eager fp32 one.
``cpu`` names the model and its vector ISA flags (from /proc/cpuinfo). A benchmark, not a
test: it times things.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fastleading.bench.report import git_commit, write_result
from fastleading.config import TrainConfig
from fastleading.data.citeseer_tag import read_papers
from fastleading.data.tokens import TokenCache, load_tokenizer, tokenize_rows
from fastleading.engine.precision import cpu_native_bf16, resolve_precision
from fastleading.models.encode import encode_all
from fastleading.models.encode_backend import cached_session, fixed_weights, openvino_available

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CPU = torch.device("cpu")
ISA_PREFIXES = ("sse4", "avx", "fma", "amx", "f16c")


def cpu_info() -> dict:
    """The CPU's model name and its vector ISA flags (/proc/cpuinfo), and what PyTorch sees."""
    name, flags = platform.processor(), []
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.processor()):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = sorted(f for f in line.split(":", 1)[1].split() if f.startswith(ISA_PREFIXES))
    return {"model": name, "isa_flags": flags, "native_bf16": cpu_native_bf16(),
            "torch_capabilities": sorted(k for k, v in torch.cpu.get_capabilities().items() if v is True)}


def arxiv_titles(root: Path) -> list[str]:
    with gzip.open(root / "arxiv-2023" / "raw" / "titles.csv.gz", "rt", encoding="utf-8") as f:
        rows = [line.strip() for line in f]
    return [t for t in rows[1:] if t]  # first line: the header "titles"


def citeseer_texts(root: Path) -> list[str]:
    return read_papers(root / "citeseer-tag" / "citeseer_texts.txt.gz")[1]


def token_cache(tok, texts: list[str], max_length: int) -> TokenCache:
    ids, lengths = tokenize_rows(tok, texts, "right", max_length)
    return TokenCache(torch.from_numpy(ids.astype(np.int32)), torch.from_numpy(lengths.astype(np.int32)), "right",
                      int(tok.pad_token_id), max_length, MINILM)


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=1).min())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=MINILM)
    p.add_argument("--data", default=str(DATA), help="the shared data folder")
    p.add_argument("--texts", type=int, default=128, help="texts per case (a seeded random subset)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per path (the median is reported)")
    p.add_argument("--threads", default="1,2", help="comma-separated torch and ONNX Runtime thread counts; every "
                   "case runs at each (one thread is the steadiest on cores shared with other jobs)")
    p.add_argument("--cases", default="arxiv-2023:32,citeseer-tag:64,citeseer-tag:128",
                   help="comma-separated dataset:max_length")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    root = Path(args.data)
    for folder in ("arxiv-2023", "citeseer-tag"):
        if not (root / folder).is_dir():
            print(f"bench_cpu_encode: error: {folder} not found under {root}", file=sys.stderr)
            return 2
    from fastleading.config import ModelConfig
    from fastleading.models.lm import LMEncoder

    encoder = LMEncoder(ModelConfig(name=args.model)).eval()
    tok, _ = load_tokenizer(args.model)
    fp32 = resolve_precision("fp32", "fp32", CPU)
    bf16 = resolve_precision("bf16", "fp32", CPU) if cpu_native_bf16() else None
    openvino = openvino_available()
    texts_of = {"arxiv-2023": arxiv_titles, "citeseer-tag": citeseer_texts}
    batch = TrainConfig.eval_batch_size
    rows, export_s = [], {}
    cases = [(int(threads), *case.split(":")) for threads in args.threads.split(",") for case in args.cases.split(",")]
    for threads, dataset, max_length in cases:
        torch.set_num_threads(threads)
        for engine in ("onnx", "openvino") if openvino else ("onnx",):
            if (threads, engine) not in export_s:  # export + an engine with this many threads
                start = time.perf_counter()
                fixed_weights(encoder, engine, CPU)
                export_s[threads, engine] = round(time.perf_counter() - start, 2)
        pool = texts_of[dataset](root)
        pick = np.random.default_rng(0).choice(len(pool), min(args.texts, len(pool)), replace=False)
        tokens = token_cache(tok, [pool[i] for i in pick], int(max_length))
        n = tokens.num_nodes
        paths = {"eager fp32": ("eager", fp32), "onnx fp32": ("onnx", fp32)}
        if bf16 is not None:
            paths["eager bf16"] = ("eager", bf16)
        if openvino:
            paths["openvino fp32"] = ("openvino", fp32)
        seconds = {name: [] for name in paths}
        cpu_seconds = {name: [] for name in paths}
        out = {}
        for name, (backend, precision) in paths.items():  # one untimed warm-up pass each
            out[name] = encode_all(encoder, tokens, n, CPU, precision, batch, backend=backend)
        engines = [name for name in ("onnx", "openvino") if f"{name} fp32" in paths]
        runs_before = {name: cached_session(encoder, name).runs for name in engines}
        for _ in range(args.rounds):
            for name, (backend, precision) in paths.items():
                t, c = time.perf_counter(), time.process_time()
                encode_all(encoder, tokens, n, CPU, precision, batch, backend=backend)
                seconds[name].append(time.perf_counter() - t)
                cpu_seconds[name].append(time.process_time() - c)
        for name in engines:  # each engine really ran (no fallback to eager)
            assert cached_session(encoder, name).runs > runs_before[name], f"{name} did not run"
        base = statistics.median(seconds["eager fp32"])
        row = {"threads": threads, "dataset": dataset, "texts": n, "max_length": int(max_length),
               "mean_tokens": round(float(tokens.lengths.float().mean()), 1),
               "baseline": "eager fp32", "path": "onnx fp32",
               "baseline_texts_per_s": round(n / base, 2),
               "texts_per_s": round(n / statistics.median(seconds["onnx fp32"]), 2),
               "speedup": round(base / statistics.median(seconds["onnx fp32"]), 3),
               "min_cosine": round(min_cosine(out["onnx fp32"], out["eager fp32"]), 6)}
        if openvino:
            row.update({"openvino_texts_per_s": round(n / statistics.median(seconds["openvino fp32"]), 2),
                        "openvino_speedup": round(base / statistics.median(seconds["openvino fp32"]), 3),
                        "openvino_min_cosine": round(min_cosine(out["openvino fp32"], out["eager fp32"]), 6)})
        if bf16 is not None:
            row.update({"bf16_texts_per_s": round(n / statistics.median(seconds["eager bf16"]), 2),
                        "bf16_speedup": round(base / statistics.median(seconds["eager bf16"]), 3),
                        "bf16_min_cosine": round(min_cosine(out["eager bf16"], out["eager fp32"]), 6)})
        # process CPU time (all threads): less sensitive than wall time to other jobs on the cores
        row["speedup_cpu_time"] = round(statistics.median(cpu_seconds["eager fp32"])
                                        / statistics.median(cpu_seconds["onnx fp32"]), 3)
        row["seconds"] = {name: [round(s, 3) for s in v] for name, v in seconds.items()}
        row["load_avg_1m_after"] = os.getloadavg()[0]
        rows.append(row)
        print({k: v for k, v in row.items() if k != "seconds"}, flush=True)
    import onnxruntime

    versions = {"onnxruntime": onnxruntime.__version__}
    if openvino:
        import openvino

        versions["openvino"] = openvino.get_version()
    result = {"benchmark": "cpu-encode", "date": datetime.date.today().isoformat(), "commit": git_commit(),
              "cpu": cpu_info(), "cores": os.cpu_count(), "threads": [int(t) for t in args.threads.split(",")],
              "model": args.model, "torch": torch.__version__, **versions,
              "rounds": args.rounds, "eval_batch_size": batch,
              "export_s": {f"{engine}, {threads} threads": v for (threads, engine), v in export_s.items()},
              "note": "eager fp32 is the path of a CPU without native bf16 (train.precision=fp32 forced here); "
                      "each path encodes the same texts with encode_all, alternating round by round; median round",
              "results": rows}
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
