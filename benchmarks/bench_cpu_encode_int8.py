"""int8 candidates for the CPU encode: ONNX Runtime dynamic quantisation, per-channel weights,
with the outlier-prone layers kept in fp32, against eager fp32 and ONNX Runtime fp32.

    python benchmarks/bench_cpu_encode_int8.py --json benchmarks/results/cpu-encode-int8-<date>.json

The project's ONNX export of all-MiniLM-L6-v2 (:func:`fastleading.models.encode_backend.export_onnx`)
quantised by ``onnxruntime.quantization.quantize_dynamic`` (int8 weights per output channel,
activations quantised per tensor at run time), in variants that keep more of the MatMuls in
fp32 (the attention score/context products are always kept: both of their inputs are
activations):

- ``int8 all weights``: every weight MatMul (q/k/v/attention output, FFN in, FFN out);
- ``int8, FFN out fp32``: the FFN output projections (their inputs, GELU outputs, carry the
  outliers) kept fp32;
- ``int8 attention only``: only the 24 attention projections int8.

Real texts as benchmarks/bench_cpu_encode.py (arXiv titles at 32 tokens, CiteSeer-TAG at 64),
micro-batches of the ONNX path, paths alternating round by round, median round. The contract
of ``train.encode_backend`` is min cosine >= 0.999 to eager fp32: a variant below it is not
usable whatever its speed. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fastleading.bench.report import git_commit, write_result
from fastleading.config import ModelConfig, TrainConfig
from fastleading.data.tokens import load_tokenizer
from fastleading.engine.precision import resolve_precision
from fastleading.models.encode import encode_all
from fastleading.models.encode_backend import OnnxEncoder, export_onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu_encode import DATA, MINILM, arxiv_titles, citeseer_texts, cpu_info, min_cosine, token_cache  # noqa: E402

CPU = torch.device("cpu")


def matmuls(path: Path) -> dict[str, list[str]]:
    """The MatMul nodes of the model by role: ``activation`` (both inputs computed) or the
    weight's shape."""
    import onnx

    model = onnx.load(str(path))
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    roles: dict[str, list[str]] = {}
    for node in model.graph.node:
        if node.op_type == "MatMul":
            weight = next((shapes[i] for i in node.input if i in shapes), None)
            roles.setdefault("activation" if weight is None else str(weight), []).append(node.name)
    return roles


def main(argv: list[str] | None = None) -> int:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--texts", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cases", default="arxiv-2023:32,citeseer-tag:64")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from fastleading.models.lm import LMEncoder

    encoder = LMEncoder(ModelConfig(name=MINILM)).eval()
    hidden = encoder.hidden_size
    tok, _ = load_tokenizer(MINILM)
    fp32 = resolve_precision("fp32", "fp32", CPU)
    tmp = Path(tempfile.mkdtemp(prefix="fastleading-int8-"))
    base = tmp / "fp32.onnx"
    export_onnx(encoder, base)
    roles = matmuls(base)
    h, ff = hidden, 4 * hidden
    keep = {"int8 all weights": roles["activation"],
            "int8, FFN out fp32": roles["activation"] + roles[str((ff, h))],
            "int8 attention only": roles["activation"] + roles[str((ff, h))] + roles[str((h, ff))]}
    engines = {"onnx fp32": OnnxEncoder(OnnxEncoder.open(base), hidden)}
    for name, excluded in keep.items():
        path = tmp / f"{name.replace(' ', '_').replace(',', '')}.onnx"
        quantize_dynamic(str(base), str(path), per_channel=True, weight_type=QuantType.QInt8,
                         nodes_to_exclude=excluded)
        engines[name] = OnnxEncoder(OnnxEncoder.open(path), hidden)
    texts_of = {"arxiv-2023": arxiv_titles, "citeseer-tag": citeseer_texts}
    rows = []
    for case in args.cases.split(","):
        dataset, max_length = case.split(":")
        pool = texts_of[dataset](DATA)
        pick = np.random.default_rng(0).choice(len(pool), min(args.texts, len(pool)), replace=False)
        tokens = token_cache(tok, [pool[i] for i in pick], int(max_length))
        n = tokens.num_nodes
        paths = {"eager fp32": encoder, **engines}
        seconds = {name: [] for name in paths}
        out = {name: encode_all(m, tokens, n, CPU, fp32, TrainConfig.eval_batch_size) for name, m in paths.items()}
        for _ in range(args.rounds):
            for name, module in paths.items():
                t = time.perf_counter()
                encode_all(module, tokens, n, CPU, fp32, TrainConfig.eval_batch_size)
                seconds[name].append(time.perf_counter() - t)
        baseline = statistics.median(seconds["eager fp32"])
        row = {"dataset": dataset, "texts": n, "max_length": int(max_length), "paths": {
            name: {"texts_per_s": round(n / statistics.median(v), 2),
                   "speedup": round(baseline / statistics.median(v), 3),
                   "min_cosine": round(min_cosine(out[name], out["eager fp32"]), 6)}
            for name, v in seconds.items()}, "load_avg_1m_after": os.getloadavg()[0]}
        rows.append(row)
        print(row, flush=True)
    import onnxruntime

    write_result(args.json, {
        "benchmark": "cpu-encode-int8", "date": datetime.date.today().isoformat(), "commit": git_commit(),
        "cpu": cpu_info(), "threads": args.threads, "model": MINILM, "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__, "rounds": args.rounds,
        "kept_fp32": {name: len(v) for name, v in keep.items()}, "matmuls": {k: len(v) for k, v in roles.items()},
        "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
