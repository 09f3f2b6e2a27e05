#!/usr/bin/env bash
# Kernel correctness and benchmarks on a CUDA machine (issue 4). From the repository root:
#
#   OUT=/some/dir bash benchmarks/gpu_kernels.sh
#
# 1. installs the project over the machine's own torch/triton (no build isolation, no deps);
# 2. runs the kernel tests with compiled Triton kernels on cuda (TRITON_INTERPRET=0; the CPU
#    Triton cases then skip with their reason, the PyTorch-reference cases still run);
# 3. runs the full kernel benchmarks, writing kernels-<device>-<date>.json and the logs to $OUT.
# The PubMed graph is read from $FASTLEADING_DATA_DIR (default ../shared/data); without it
# the JSON records pubmed as skipped.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-$REPO/benchmarks/results}"
DATA="${FASTLEADING_DATA_DIR:-$REPO/../shared/data}"
mkdir -p "$OUT"
cd "$REPO"

python -m pip install --no-build-isolation --no-deps . 2>&1 | tail -n 3
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"

export TRITON_INTERPRET=0
# From outside the source tree, so that the installed package (which has fastleading.kernels) is imported.
(cd "$(mktemp -d)" && python -m pytest -q -p no:cacheprovider -rs \
    "$REPO/tests/test_ops_appnp.py" "$REPO/tests/test_ops_bank.py") 2>&1 | tee "$OUT/kernel-tests.log"

# A script's own folder (benchmarks/) heads sys.path, not the repo root: the installed package is used.
python benchmarks/bench_kernels.py --out-dir "$OUT" --data-dir "$DATA" 2>&1 | tee "$OUT/bench-kernels.log"
