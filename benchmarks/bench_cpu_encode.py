"""No-gradient encode on the CPU: today's eager fp32 path against ONNX Runtime (``train.encode_backend``).

    python benchmarks/bench_cpu_encode.py --json benchmarks/results/cpu-encode-<date>.json

The same real texts, the same model (all-MiniLM-L6-v2) and the same threads (each of
``--threads``), in one process:
real arXiv titles (``../shared/data/arxiv-2023/raw/titles.csv.gz``) at 32 tokens and
CiteSeer-TAG texts (``../shared/data/citeseer-tag/citeseer_texts.txt.gz``) at 64 and 128
tokens, a fixed random subset of ``--texts`` of each (seeded), tokenized as the token cache
does. Each path runs :func:`fastleading.encode.encode_all` (what the bank fill, evaluation,
``predict``, ``export`` and ``downstream`` run) over the texts; the paths alternate round by
round so load from other jobs hits them alike, and the median round is reported:

- ``eager fp32`` (the baseline): ``train.encode_backend=eager``, ``train.precision=fp32``
  (the path of a CPU without native bf16);
- ``onnx fp32``: ``train.encode_backend=onnx`` (the export is timed apart, ``onnx_export_s``);
- ``eager bf16``: ``train.precision=bf16`` on a CPU with native bf16 (what ``auto`` picks
  there), beside them;
- ``openvino fp32`` (when ``openvino`` is installed; a candidate, not wired into the project):
  the same ONNX export compiled by OpenVINO's CPU plugin with ``INFERENCE_PRECISION_HINT=f32``
  (its default is bf16 on CPUs with native bf16), run on the same micro-batches as
  ONNX Runtime.

``min_cosine``: the smallest cosine similarity of a text's embedding to its eager fp32 one.
``cpu`` names the model and its vector ISA flags (from /proc/cpuinfo). A benchmark, not a
test: it times things.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
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
from fastleading.encode import encode_all as encode_all_
from fastleading.encode_backend import ONNX_OPSET, OnnxEncoder, cached_session, fixed_weights
from fastleading.precision import cpu_native_bf16, resolve_precision

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


class OpenVinoEncoder(torch.nn.Module):
    """The ONNX export compiled by OpenVINO (fp32), as an encoder for encode_all (a candidate)."""

    token_budget = OnnxEncoder.token_budget

    def __init__(self, compiled, hidden_size: int):
        super().__init__()
        self.request, self.hidden_size = compiled.create_infer_request(), hidden_size

    def forward(self, input_ids, attention_mask):
        out = self.request.infer({"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})
        return torch.from_numpy(out[0].copy())


def openvino_factory(encoder):
    """threads -> an :class:`OpenVinoEncoder` of ``encoder`` with that many threads."""
    import openvino as ov

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "encoder.onnx"
        ids, mask = torch.full((2, 8), 101), torch.ones(2, 8, dtype=torch.long)
        mask[1, 4:] = 0
        torch.onnx.export(encoder.eval(), (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], opset_version=ONNX_OPSET, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "length"},
                                        "attention_mask": {0: "batch", 1: "length"}})
        model = ov.Core().read_model(str(path))
    core = ov.Core()
    return lambda threads: OpenVinoEncoder(core.compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}),
        encoder.hidden_size)


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
    from fastleading.lm import LMEncoder

    encoder = LMEncoder(ModelConfig(name=args.model)).eval()
    tok, _ = load_tokenizer(args.model)
    fp32 = resolve_precision("fp32", "fp32", CPU)
    bf16 = resolve_precision("bf16", "fp32", CPU) if cpu_native_bf16() else None
    openvino_of = openvino_factory(encoder) if importlib.util.find_spec("openvino") is not None else None
    texts_of = {"arxiv-2023": arxiv_titles, "citeseer-tag": citeseer_texts}
    batch = TrainConfig.eval_batch_size
    rows, export_s = [], {}
    cases = [(int(threads), *case.split(":")) for threads in args.threads.split(",") for case in args.cases.split(",")]
    for threads, dataset, max_length in cases:
        torch.set_num_threads(threads)
        if threads not in export_s:
            start = time.perf_counter()
            fixed_weights(encoder, "onnx", CPU)  # a session with this many threads
            export_s[threads] = round(time.perf_counter() - start, 2)
        pool = texts_of[dataset](root)
        pick = np.random.default_rng(0).choice(len(pool), min(args.texts, len(pool)), replace=False)
        tokens = token_cache(tok, [pool[i] for i in pick], int(max_length))
        n = tokens.num_nodes
        paths = {"eager fp32": ("eager", fp32), "onnx fp32": ("onnx", fp32)}
        if bf16 is not None:
            paths["eager bf16"] = ("eager", bf16)
        if openvino_of is not None:
            paths["openvino fp32"] = (openvino_of(threads), fp32)
        seconds = {name: [] for name in paths}
        cpu_seconds = {name: [] for name in paths}
        out = {}

        def encode_all(encoder, tokens, n, device, precision, batch, backend):
            if isinstance(backend, str):
                return encode_all_(encoder, tokens, n, device, precision, batch, backend=backend)
            return encode_all_(backend, tokens, n, device, precision, batch)

        for name, (backend, precision) in paths.items():  # one untimed warm-up pass each
            out[name] = encode_all(encoder, tokens, n, CPU, precision, batch, backend=backend)
        runs_before = cached_session(encoder).runs
        for _ in range(args.rounds):
            for name, (backend, precision) in paths.items():
                t, c = time.perf_counter(), time.process_time()
                encode_all(encoder, tokens, n, CPU, precision, batch, backend=backend)
                seconds[name].append(time.perf_counter() - t)
                cpu_seconds[name].append(time.process_time() - c)
        assert cached_session(encoder).runs > runs_before, "the onnx path did not run ONNX Runtime"
        base = statistics.median(seconds["eager fp32"])
        row = {"threads": threads, "dataset": dataset, "texts": n, "max_length": int(max_length),
               "mean_tokens": round(float(tokens.lengths.float().mean()), 1),
               "baseline": "eager fp32", "path": "onnx fp32",
               "baseline_texts_per_s": round(n / base, 2),
               "texts_per_s": round(n / statistics.median(seconds["onnx fp32"]), 2),
               "speedup": round(base / statistics.median(seconds["onnx fp32"]), 3),
               "min_cosine": round(min_cosine(out["onnx fp32"], out["eager fp32"]), 6)}
        if openvino_of is not None:
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
    if openvino_of is not None:
        import openvino

        versions["openvino"] = openvino.get_version()
    result = {"benchmark": "cpu-encode", "date": datetime.date.today().isoformat(), "commit": git_commit(),
              "cpu": cpu_info(), "cores": os.cpu_count(), "threads": [int(t) for t in args.threads.split(",")],
              "model": args.model, "torch": torch.__version__, **versions,
              "rounds": args.rounds, "eval_batch_size": batch, "onnx_export_s": export_s,
              "note": "eager fp32 is the path of a CPU without native bf16 (train.precision=fp32 forced here); "
                      "each path encodes the same texts with encode_all, alternating round by round; median round",
              "results": rows}
    write_result(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
