"""Fault injection on a tiny LEADING run: kills, a full disk, corrupted inputs.

Everything is compared with one uninterrupted run of the same config (the reference):

* **Kills.** A child process runs ``fastleading train`` and SIGKILLs itself at a chosen point:
  inside a step (after its backward, before the optimizer), inside the write of ``checkpoint.pt``
  (half of it written to the temp file), inside an evaluation (its encode done, the propagation
  not), or inside the bank fill (after the first of its chunks). ``fastleading train --resume``
  then finishes the run; its final ``checkpoint.pt`` (weights, optimizer, bank, histories, RNG,
  counters, progress), ``best.pt``, ``metrics.jsonl`` and summary must equal the reference's.
* **A full disk.** The child's files cannot grow past a limit set with ``RLIMIT_FSIZE`` (writes
  then fail with ``EFBIG``, as on a full disk; ``SIGXFSZ`` is ignored so the write fails instead of
  killing the process), set just before the n-th checkpoint write or the n-th metrics line, or at
  the start of ``fastleading export``. The run must stop with exit code 2 and one line naming the
  file, leave the previous file as it was, and (space back) resume to the reference's state.
* **Bad inputs.** Truncated, mis-shaped or foreign token caches, graph caches, checkpoints,
  configs and link split files: one line naming the file (``FastleadingError``) and nothing
  written or changed in the run folder.

``run_faults`` returns the figures (kills survived, faults injected, bad inputs refused, state
lost); ``tests/test_faults.py`` runs a small configuration, ``python benchmarks/faults.py`` a
larger one and writes them to ``benchmarks/results/``. Run as a script (``--child SPEC``) this
file is the child process.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import random
import resource
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent

# A tiny LEADING run: 144 training nodes in batches of 16 (9 steps an epoch), 2 epochs, a
# checkpoint every 2 steps and at epoch ends, an evaluation per epoch, the bank filled first
# (240 nodes, in chunks of at most 128).
TINY = ("data.synthetic_nodes=240", "data.synthetic_classes=3", "data.synthetic_words=12", "data.max_length=16",
        "data.split=high-0", "train.batch_size=16", "train.epochs=2", "train.eval_batch_size=128",
        "train.log_every=1", "train.checkpoint_every=2", "model.head_hidden=32",
        # the finished runs' checkpoints keep the optimizer state, so that it is compared too
        "train.keep_optimizer_state=true")
KINDS = ("step", "checkpoint", "eval", "fill")
SUMMARY_VOLATILE = ("wall_time_s", "phase_time_s", "peak_memory_bytes")


@dataclass
class Tally:
    """The figures of a harness run."""

    kills_injected: int = 0
    kills_survived: int = 0
    disk_faults_injected: int = 0
    disk_faults_survived: int = 0
    bad_inputs_tried: int = 0
    bad_inputs_refused: int = 0
    state_lost: list = field(default_factory=list)  # what differed from the uninterrupted run, per fault
    failures: list = field(default_factory=list)    # every fault not survived / bad input not refused, why
    kills: list = field(default_factory=list)       # (where, nth) of each kill
    bad_inputs: list = field(default_factory=list)  # the cases tried

    def as_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- the child process
def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _limit_file_size(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def _kind_of(args: tuple, kwargs: dict):
    """The ``kind`` argument of a :func:`fastleading.models.encode.encode_all` call (its 10th)."""
    return kwargs.get("kind", args[9] if len(args) > 9 else None)


def _install_kill(where: str, nth: int) -> None:
    """SIGKILL this process at the ``nth`` event of kind ``where`` (see the module docstring)."""
    from fastleading.engine import bank
    from fastleading.run import checkpoint
    from fastleading.run.io import atomic_write
    from fastleading.trainer import evaluate, optim

    count = itertools.count(1)
    if where == "step":
        backward = optim.Optimization.backward

        def killing_backward(self, *args, **kwargs):
            backward(self, *args, **kwargs)
            if next(count) == nth:
                _die()
        optim.Optimization.backward = killing_backward
    elif where == "checkpoint":
        save = checkpoint.atomic_torch_save

        def killing_save(obj, path):
            if Path(path).name != checkpoint.CHECKPOINT or next(count) != nth:
                return save(obj, path)
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            data = buffer.getvalue()

            def half(f):
                f.write(data[:len(data) // 2])
                f.flush()
                _die()
            return atomic_write(path, half)
        checkpoint.atomic_torch_save = killing_save
    elif where == "eval":
        logits = evaluate.full_graph_logits

        def killing_logits(*args, **kwargs):
            if next(count) == nth:
                _die()
            return logits(*args, **kwargs)
        evaluate.full_graph_logits = killing_logits
    elif where == "fill":
        encode_all, refresh = evaluate.encode_all, bank.MemoryBank.refresh
        filling = {"on": False}

        def tracking_encode_all(*args, **kwargs):
            filling["on"] = _kind_of(args, kwargs) == "fill"
            try:
                return encode_all(*args, **kwargs)
            finally:
                filling["on"] = False

        def killing_refresh(self, *args, **kwargs):
            refresh(self, *args, **kwargs)
            if filling["on"] and next(count) == nth:
                _die()
        evaluate.encode_all, bank.MemoryBank.refresh = tracking_encode_all, killing_refresh
    else:
        raise ValueError(where)


def _install_full_disk(file: str, nth: int) -> None:
    """Let no file grow past its size (or 64 KiB) from the ``nth`` write of ``file`` on."""
    from fastleading.run import checkpoint
    from fastleading.trainer import metrics

    count = itertools.count(1)
    if file == "checkpoint":
        save = checkpoint.atomic_torch_save

        def full_save(obj, path):
            if Path(path).name == checkpoint.CHECKPOINT and next(count) == nth:
                _limit_file_size(64 << 10)
            return save(obj, path)
        checkpoint.atomic_torch_save = full_save
    elif file == "metrics":
        write = metrics.MetricsLog.write

        def full_write(self, record):
            if next(count) == nth:
                _limit_file_size(self.path.stat().st_size + 10)  # 10 more bytes: a torn line
            return write(self, record)
        metrics.MetricsLog.write = full_write
    elif file == "export":
        _limit_file_size(4 << 10)
    else:
        raise ValueError(file)


def child_main(spec: dict) -> int:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) instead
    from fastleading import cli

    if spec.get("kill"):
        _install_kill(**spec["kill"])
    if spec.get("disk"):
        _install_full_disk(**spec["disk"])
    return cli.main(spec["argv"])


# ----------------------------------------------------------------------------- comparisons
def differences(a, b, where: str = "") -> list[str]:
    """Where the nested states ``a`` and ``b`` differ (tensors bit for bit)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where}: keys {sorted(map(str, a.keys() ^ b.keys()))}"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        same = a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return [] if same else [f"{where}: tensors differ"]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def run_differences(reference: Path, run: Path) -> list[str]:
    """What ``run`` (finished after faults) holds that the uninterrupted ``reference`` does not."""
    from fastleading.run import checkpoint

    found = []
    for name in (checkpoint.CHECKPOINT, checkpoint.BEST):
        if not (run / name).is_file():
            found.append(f"{name}: missing")
            continue
        a, b = checkpoint.load(reference / name), checkpoint.load(run / name)
        for state in (a, b):  # wall times
            state.pop("phases", None)
            if isinstance(state.get("progress"), dict):
                state["progress"].pop("wall_time_s", None)
        found += [f"{name}{d}" for d in differences(a, b)]
    if (reference / "metrics.jsonl").read_text() != (run / "metrics.jsonl").read_text():
        found.append("metrics.jsonl: differs")
    summaries = [json.loads((d / "summary.json").read_text()) for d in (reference, run)]
    for s in summaries:
        for key in SUMMARY_VOLATILE:
            s.pop(key, None)
    found += [f"summary.json{d}" for d in differences(*summaries)]
    leftovers = [p.name for p in run.iterdir() if p.name.endswith(".tmp") or p.name == checkpoint.BEST_PENDING]
    if leftovers:
        found.append(f"left behind: {leftovers}")
    return found


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and a hash of its bytes (empty when the folder is missing)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- the harness
class Harness:
    """One reference run and the faults injected around it, under ``root``."""

    def __init__(self, root: Path, tally: Tally | None = None):
        from tiny_models import save_tiny_model

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.tally = tally or Tally()
        self.model = save_tiny_model(self.root / "model", "bert", hidden=32)
        self.cache = self.root / "cache"
        self.overrides = [f"model.name={self.model}", f"data.cache_dir={self.cache}", *TINY]
        self.reference = self.root / "reference"
        with count_events() as self.events:  # how many of each kill point the run passes
            rc, err = self.cli(["train", "--quiet", "--out", str(self.reference), *self.overrides])
        if rc != 0:
            raise RuntimeError(f"the reference run failed: {err}")

    # -- running the CLI
    @staticmethod
    def cli(argv: list[str]) -> tuple[int, str]:
        """``fastleading ARGV`` in this process: (exit code, its ``fastleading: error:`` lines)."""
        from fastleading import cli

        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = cli.main(argv)
        return rc, "\n".join(text for text in err.getvalue().splitlines() if text.startswith("fastleading: error:"))

    def children(self, jobs: list[dict], at_once: int = 8) -> list[subprocess.CompletedProcess]:
        """Run the child processes ``jobs`` (``{"argv", "kill", "disk"}`` each), ``at_once`` side by
        side (most of a child's time is its start-up); their results in the order of ``jobs``."""
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": str(torch.get_num_threads()),
               "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        logs = self.root / "child-logs"
        logs.mkdir(exist_ok=True)
        results: list[subprocess.CompletedProcess | None] = [None] * len(jobs)
        running: list[tuple[int, subprocess.Popen]] = []

        def finish(i: int, proc: subprocess.Popen) -> None:
            proc.wait(timeout=600)
            out, err = ((logs / f"{i}.{kind}").read_text() for kind in ("out", "err"))
            results[i] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

        for i, job in enumerate(jobs):
            if len(running) == at_once:
                finish(*running.pop(0))
            with open(logs / f"{i}.out", "w") as out, open(logs / f"{i}.err", "w") as err:
                running.append((i, subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child",
                                                     json.dumps(job)], env=env, stdout=out, stderr=err)))
        for i, proc in running:
            finish(i, proc)
        return results

    def train_argv(self, out: Path) -> list[str]:
        return ["train", "--quiet", "--out", str(out), *self.overrides]

    def resume(self, run: Path, what: str) -> bool:
        """``--resume`` to the end; records what differs from the reference. True when nothing does."""
        rc, err = self.cli(["train", "--quiet", "--resume", str(run)])
        lost = [f"resume failed ({rc}): {err}"] if rc != 0 else run_differences(self.reference, run)
        self.tally.state_lost += [f"{what}: {d}" for d in lost]
        return not lost

    # -- kills
    def kill(self, where: str, nth: int):
        """A child killed at the ``nth`` event ``where``; returns ``(job, check)``: ``check(result)``
        resumes the run to the end and compares it with the reference."""
        t = self.tally
        t.kills_injected += 1
        t.kills.append((where, nth))
        run = self.root / f"kill-{where}-{nth}-{t.kills_injected}"

        def check(proc: subprocess.CompletedProcess) -> None:
            if proc.returncode != -signal.SIGKILL:
                t.failures.append(f"kill {where} #{nth}: the child was not killed (exit {proc.returncode}): "
                                  f"{proc.stderr[-500:]}")
            elif self.resume(run, f"kill {where} #{nth}"):
                t.kills_survived += 1
        return {"argv": self.train_argv(run), "kill": {"where": where, "nth": nth}}, check

    # -- a full disk
    def _expect_one_line(self, proc: subprocess.CompletedProcess, path: Path, what: str) -> bool:
        lines = [text for text in proc.stderr.splitlines() if text.startswith("fastleading: error:")]
        ok = (proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"fastleading: error: {path}: ")
              and "File too large" in lines[0])
        if not ok:
            self.tally.failures.append(f"{what}: expected exit 2 and one line naming {path.name}, got exit "
                                       f"{proc.returncode}: {proc.stderr[-800:]}")
        return ok

    def full_disk_in_training(self, file: str, nth: int):
        """The ``nth`` checkpoint write or metrics line fails: one line, the previous checkpoint
        whole, no temp file; then ``--resume`` with space back. Returns ``(job, check)``."""
        from fastleading.run import checkpoint

        t = self.tally
        t.disk_faults_injected += 1
        run = self.root / f"disk-{file}-{nth}-{t.disk_faults_injected}"
        what = f"full disk at {file} #{nth}"

        def check(proc: subprocess.CompletedProcess) -> None:
            target = run / (checkpoint.CHECKPOINT if file == "checkpoint" else "metrics.jsonl")
            ok = self._expect_one_line(proc, target, what)
            if file == "checkpoint":  # the previous checkpoint stays, whole: the (nth-1)-th of the run
                saved = self.events["checkpoint_steps"]
                want = saved[nth - 2] if nth > 1 else None
                try:
                    got = checkpoint.load(run / checkpoint.CHECKPOINT)["step"] if want is not None else None
                except Exception as e:  # noqa: BLE001 (any failure to read it is the finding)
                    got = f"unreadable ({e})"
                if got != want or (want is None and (run / checkpoint.CHECKPOINT).exists()):
                    t.failures.append(f"{what}: checkpoint.pt holds step {got}, expected {want}")
                    ok = False
            if [p.name for p in run.iterdir() if p.name.endswith(".tmp")]:
                t.failures.append(f"{what}: a temp file was left behind")
                ok = False
            if self.resume(run, what) and ok:
                t.disk_faults_survived += 1
        return {"argv": self.train_argv(run), "disk": {"file": file, "nth": nth}}, check

    def full_disk_in_export(self):
        """``export --out`` over a previous file fails on a full disk: one line, the folder as it
        was; with space back the export writes the file. Returns ``(job, check)``."""
        t = self.tally
        t.disk_faults_injected += 1
        out = self.root / "export" / "emb.npy"
        out.parent.mkdir(exist_ok=True)
        argv = ["export", "--quiet", "--run", str(self.reference), "--out", str(out)]
        out.write_bytes(b"the previous export")
        before = snapshot(out.parent)

        def check(proc: subprocess.CompletedProcess) -> None:
            ok = self._expect_one_line(proc, out, "full disk in export")
            if snapshot(out.parent) != before:
                t.failures.append("full disk in export: the folder changed")
                ok = False
            rc, err = self.cli(argv)
            if rc != 0 or out.read_bytes()[:6] != b"\x93NUMPY":
                t.state_lost.append(f"export after a full disk failed: {err}")
                ok = False
            if ok:
                t.disk_faults_survived += 1
        return {"argv": argv, "disk": {"file": "export", "nth": 1}}, check

    # -- bad inputs
    def bad_input(self, name: str, target: Path, damage, action, watch: Path) -> None:
        """Damage ``target``, run ``action`` (an argv for the CLI in this process, or a callable):
        refused with one line naming ``target``, ``watch`` (a folder) left as it was; then
        ``target`` is put back."""
        from fastleading.errors import FastleadingError

        t = self.tally
        t.bad_inputs_tried += 1
        t.bad_inputs.append(name)
        backup = target.read_bytes()
        try:
            damage(target)
            before = snapshot(watch)
            if callable(action):
                try:
                    action()
                    message, rc = "", 0
                except FastleadingError as e:
                    message, rc = f"fastleading: error: {e}", 2
            else:
                rc, message = self.cli(action)
            refused = rc == 2 and message.count("\n") == 0 and str(target) in message
            unchanged = snapshot(watch) == before
            if refused and unchanged:
                t.bad_inputs_refused += 1
            else:
                t.failures.append(f"bad input {name}: exit {rc}, {message!r}, folder unchanged: {unchanged}")
        finally:
            target.write_bytes(backup)

    def bad_inputs(self) -> None:
        from fastleading.config import Config, apply_overrides
        from fastleading.data import graph_dir
        from fastleading.run import checkpoint

        run = self.root / "bad-run"  # a run stopped after 3 steps, with its checkpoint
        rc, err = self.cli(self.train_argv(run) + ["train.max_steps=3"])
        if rc != 0:
            raise RuntimeError(f"the run for the bad inputs failed: {err}")
        (run / "config.json").write_text((self.reference / "config.json").read_text())  # resume to the end
        resume = ["train", "--quiet", "--resume", str(run)]
        fresh = self.root / "bad-fresh"
        train_fresh = self.train_argv(fresh)
        cfg = apply_overrides(Config(), self.overrides)
        graph = graph_dir(cfg.data)
        tokens = next(p for p in (self.cache / "tokens").iterdir() if p.is_dir())
        other = self.root / "bad-other"  # a checkpoint of another dataset: 300 nodes
        self.cli(["train", "--quiet", "--out", str(other), *self.overrides, "train.max_steps=1",
                  "data.synthetic_nodes=300"])

        def truncate(path: Path) -> None:
            path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])

        def edit_checkpoint(change):
            def damage(path: Path) -> None:
                state = checkpoint.load(path)
                change(state)
                torch.save(state, path)
            return damage

        def edit_json(change):
            def damage(path: Path) -> None:
                data = json.loads(path.read_text())
                change(data)
                path.write_text(json.dumps(data))
            return damage

        marker = self.root / "code-ran"
        ck = run / checkpoint.CHECKPOINT
        cases = [
            ("token cache: input_ids.npy truncated", tokens / "input_ids.npy", truncate, train_fresh, fresh),
            ("token cache: lengths.npy of another size", tokens / "lengths.npy",
             lambda p: _save_npy(p, list(range(7))), train_fresh, fresh),
            ("token cache: meta.json truncated", tokens / "meta.json", truncate, train_fresh, fresh),
            ("graph cache: col.npy truncated", graph / "col.npy", truncate, train_fresh, fresh),
            ("graph cache: labels.npy of another size", graph / "labels.npy", lambda p: _save_npy(p, [0, 1]),
             train_fresh, fresh),
            ("graph cache: meta.json truncated", graph / "meta.json", truncate, train_fresh, fresh),
            ("checkpoint: truncated", ck, truncate, resume, run),
            ("checkpoint: wrong keys", ck, edit_checkpoint(lambda s: s.pop("bank")), resume, run),
            ("checkpoint: wrong shapes", ck, edit_checkpoint(lambda s: s["model"].update(
                {k: v[:1] for k, v in s["model"].items() if k.startswith("head.")})), resume, run),
            ("checkpoint: another dataset's", ck, lambda p: p.write_bytes((other / checkpoint.CHECKPOINT).read_bytes()),
             resume, run),
            ("checkpoint: carries code", ck, edit_checkpoint(lambda s: s["progress"]["history"].append(
                _SideEffect(marker))), resume, run),
            ("config: a string for an integer", run / "config.json",
             edit_json(lambda d: d["train"].update(epochs="many")), resume, run),
            ("config: a list for a number", run / "config.json",
             edit_json(lambda d: d["model"].update(alpha=[0.1])), resume, run),
            ("config: truncated", run / "config.json", truncate, resume, run),
        ]
        for name, target, damage, action, watch in cases:
            self.bad_input(name, target, damage, action, watch)
        if marker.exists():
            self.tally.failures.append("a checkpoint that carries code ran it")
        self._bad_link_split_files()

    def _bad_link_split_files(self) -> None:
        """ogbl-citation2's official split files (the only link split read from files)."""
        from ogbl_fixtures import write_ogbl_citation2

        from fastleading.config import Config, apply_overrides
        from fastleading.data import link_view, load_dataset

        data = self.root / "ogbl"
        write_ogbl_citation2(data, num_neg=3)
        cfg = apply_overrides(Config(), [f"data.root={data}", f"data.cache_dir={self.root / 'ogbl-cache'}",
                                         "data.dataset=ogbl-citation2", "train.task=link"])
        graph = load_dataset(cfg.data)
        split_dir = data / "ogbl_citation2" / "split" / "time"
        marker = self.root / "split-code-ran"

        def keep_only_sources(path: Path) -> None:
            good = torch.load(path, weights_only=False)  # the fixture's own file
            torch.save({"source_node": good["source_node"]}, path)

        for name, damage in (("link split: valid.pt truncated", lambda p: p.write_bytes(p.read_bytes()[:40])),
                             ("link split: valid.pt without targets", keep_only_sources),
                             ("link split: valid.pt carries code",
                              lambda p: torch.save({"source_node": _SideEffect(marker)}, p))):
            self.bad_input(name, split_dir / "valid.pt", damage, lambda: link_view(cfg, graph),
                           self.root / "ogbl-cache")
        if marker.exists():
            self.tally.failures.append("a link split file that carries code ran it")


class _SideEffect:
    """Unpickling it creates ``marker``: the code a shared file could run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _save_npy(path: Path, values) -> None:
    import numpy as np

    with open(path, "wb") as f:
        np.save(f, np.asarray(values, dtype=np.int64))


@contextlib.contextmanager
def count_events():
    """Count, in this process, the events the kills and full disks are placed at: steps (each
    backward), checkpoint writes (and their steps), evaluations, bank-fill chunks, metrics lines."""
    from fastleading.engine import bank
    from fastleading.trainer import evaluate, loop, metrics, optim

    events = {"step": 0, "checkpoint": 0, "eval": 0, "fill": 0, "metrics": 0, "checkpoint_steps": []}
    real = (optim.Optimization.backward, loop.save_checkpoint, evaluate.full_graph_logits, evaluate.encode_all,
            bank.MemoryBank.refresh, metrics.MetricsLog.write)
    filling = {"on": False}

    def backward(self, *args, **kwargs):
        events["step"] += 1
        return real[0](self, *args, **kwargs)

    def save_checkpoint(run, *args):
        events["checkpoint"] += 1
        events["checkpoint_steps"].append(run.step)
        return real[1](run, *args)

    def full_graph_logits(*args, **kwargs):
        events["eval"] += 1
        return real[2](*args, **kwargs)

    def encode_all(*args, **kwargs):
        filling["on"] = _kind_of(args, kwargs) == "fill"
        try:
            return real[3](*args, **kwargs)
        finally:
            filling["on"] = False

    def refresh(self, *args, **kwargs):
        events["fill"] += filling["on"]
        return real[4](self, *args, **kwargs)

    def write(self, record):
        events["metrics"] += 1
        return real[5](self, record)

    optim.Optimization.backward, loop.save_checkpoint, evaluate.full_graph_logits = backward, save_checkpoint, \
        full_graph_logits
    evaluate.encode_all, bank.MemoryBank.refresh, metrics.MetricsLog.write = encode_all, refresh, write
    try:
        yield events
    finally:
        (optim.Optimization.backward, loop.save_checkpoint, evaluate.full_graph_logits, evaluate.encode_all,
         bank.MemoryBank.refresh, metrics.MetricsLog.write) = real


def run_faults(root: Path, kills: int, seed: int = 0, disk_checkpoints: int = 1, disk_metrics: int = 1) -> Tally:
    """The whole harness under ``root``: ``kills`` kills at seeded random points (every kind in
    turn, each at a random one of its events in the uninterrupted run), full disks at
    ``disk_checkpoints`` random checkpoint writes, ``disk_metrics`` random metrics lines and in
    export, and every bad input."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and the children run side by side
    try:
        return _run_faults(root, kills, seed, disk_checkpoints, disk_metrics)
    finally:
        torch.set_num_threads(threads)


def _run_faults(root: Path, kills: int, seed: int, disk_checkpoints: int, disk_metrics: int) -> Tally:
    rng = random.Random(seed)
    harness = Harness(root)
    trials = [harness.kill(KINDS[i % len(KINDS)], rng.randint(1, harness.events[KINDS[i % len(KINDS)]]))
              for i in range(kills)]
    trials += [harness.full_disk_in_training("checkpoint", rng.randint(1, harness.events["checkpoint"]))
               for _ in range(disk_checkpoints)]
    trials += [harness.full_disk_in_training("metrics", rng.randint(2, harness.events["metrics"]))
               for _ in range(disk_metrics)]
    trials.append(harness.full_disk_in_export())
    for (_, check), result in zip(trials, harness.children([job for job, _ in trials]), strict=True):
        check(result)
    harness.bad_inputs()
    return harness.tally


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    sys.exit(child_main(json.loads(sys.argv[2])))
