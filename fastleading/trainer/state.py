"""The loop's progress, checkpoints and resume.

``checkpoint.pt`` (or, with ``train.deepspeed``, the engine's folder ``deepspeed/``) holds
everything a resumed run needs to continue exactly: model, optimizer, schedule, scaler,
memory bank, implicit histories, pipeline 2's order, progress, phase timers, and each rank's
own RNG states and encode counters. A finished run's ``checkpoint.pt`` may lack the optimizer's
moments (``train.keep_optimizer_state=false``, marked
:data:`fastleading.run.checkpoint.OPTIMIZER_STATE_DROPPED`): a resume that extends it starts them
afresh. ``best.pt`` holds the best-valid model weights only.
Files hold tensors and plain containers only (see :mod:`fastleading.run.checkpoint`), and are
read on the CPU: RNG states must be CPU byte tensors, and large tables are copied into the
run's (device) tensors in place.

``best.pt`` is never ahead of the checkpoint, so that a run killed at any point leaves a folder
whose files agree: a new best is written as ``best.pending.pt`` (:func:`save_best`), and only
after the next checkpoint (which records it as the best) has been written is it renamed to
``best.pt`` and the folder fsynced (:func:`settle_best`). A kill before that checkpoint leaves
``best.pt`` and the checkpoint at the previous best (resume drops the pending file and replays
the epoch); a kill between the checkpoint and the rename leaves the pending file that the
checkpoint names, which resume renames into place.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import cast

import numpy as np
import torch

from fastleading.engine import zero
from fastleading.engine.distributed import barrier, get_rank, get_world_size, is_distributed, is_main
from fastleading.errors import FastleadingError
from fastleading.run import checkpoint
from fastleading.run.io import fsync_dir
from fastleading.run.selection import improves
from fastleading.trainer.batches import RefreshOrder
from fastleading.trainer.steps import Run

DEEPSPEED_DIR = "deepspeed"  # the engine's checkpoints, inside the run folder


@dataclass
class Progress:
    """Where the loop is and what its evaluations found."""

    epoch: int = 0
    batch_in_epoch: int = 0
    best_valid: float = -1.0
    best_epoch: int = -1
    evals_since_best: int = 0
    history: list = field(default_factory=list)  # one {"epoch", "train", "valid", "test"} per evaluation
    # the epoch that starts with every bank row freshly encoded (by the fill or an evaluation):
    # pipeline 2 skips it, so no node is LM-encoded twice in that epoch without gradient
    bank_fresh_epoch: int = -1
    # the last evaluation's propagated matrix, the next one's warm start (LEADING; finite only)
    eval_solution: torch.Tensor | None = None
    # EncodeCounter.cost() at the last evaluation (train.eval_every=0 evaluates by encodes spent)
    cost_at_eval: int = 0
    # the head warm-up (train.head_warmup_epochs) has run
    warmed_up: bool = False
    # why the loop stopped: epochs, max_steps or patience ('' while it runs)
    stopped: str = ""
    bad_evals: int = 0  # consecutive evaluations with non-finite outputs
    # wall time of the attempts before this one, up to their last checkpoint (a resumed run's
    # summary reports the run's time, not the last attempt's)
    wall_time_s: float = 0.0

    def record_eval(self, metrics: dict, max_bad_evals: int = 0, candidate: bool = True) -> bool:
        """Append the evaluation ``metrics`` of this epoch to the history; True when it becomes
        the best (:func:`fastleading.run.selection.improves`: never one with non-finite outputs;
        never one that is not a ``candidate``, ``train.select_warmup=false``'s epoch 0).
        Stops with one line at the ``max_bad_evals``-th consecutive evaluation with non-finite
        outputs (``train.max_bad_evals``; 0 = never)."""
        self.history.append({"epoch": self.epoch, **metrics})
        bad = metrics.get("nonfinite", 0)
        self.bad_evals = self.bad_evals + 1 if bad else 0
        if bad and max_bad_evals and self.bad_evals >= max_bad_evals:
            raise FastleadingError(f"epoch {self.epoch}: {self.bad_evals} consecutive evaluations had non-finite "
                                   f"outputs ({bad} in the last; train.max_bad_evals={max_bad_evals}); stopping: "
                                   "the model diverged, lower the learning rate")
        if not candidate:
            return False
        if improves(metrics, self.best_valid, self.best_epoch >= 0):
            self.best_valid, self.best_epoch, self.evals_since_best = metrics["valid"], self.epoch, 0
            return True
        self.evals_since_best += 1
        return False

    def best_evaluation(self) -> dict:
        """The history entry of the best evaluation; one line when no evaluation had finite outputs."""
        for entry in self.history:
            if entry["epoch"] == self.best_epoch:
                return entry
        raise FastleadingError(f"none of the run's {len(self.history)} evaluation(s) had finite outputs for every "
                               "node or pair: the model diverged, lower the learning rate")

    def state_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def rng_state() -> dict:
    """This process's RNG states as tensors and plain containers (no numpy objects)."""
    # the legacy tuple (its default): name, keys, pos, has_gauss, cached_gaussian
    name, keys, pos, has_gauss, cached = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"].cpu())
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    random.setstate(s["python"])
    if s["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in s["cuda"]])


def _rank_state(run: Run) -> dict:
    """What differs between ranks: RNG states and this rank's encode counters."""
    return {"rng": rng_state(), "counter": run.counter.state_dict()}


def _load_rank_state(run: Run, s: dict) -> None:
    set_rng_state(s["rng"])
    run.counter.load_state_dict(s["counter"])


def _train_state(run: Run, progress: Progress, refresh_order: RefreshOrder | None) -> dict:
    """The resumable state besides the model weights, optimizer, schedule and scaler (which
    the DeepSpeed engine checkpoints itself when there is one), and the model's ``frame_shift``
    (a buffer outside the engine's module); identical on every rank."""
    return {"bank": run.bank.state_dict() if run.bank is not None else None,
            "frame_shift": run.model.frame_shift,
            "histories": run.model.appnp.histories_state(),
            "refresh_order": refresh_order.state_dict() if refresh_order is not None else None,
            "step": run.step, "progress": progress.state_dict(), "bad_steps": run.optim.bad_steps_state(),
            "phases": dict(run.phases.totals), "phase_counts": dict(run.phases.counts)}


def _load_train_state(run: Run, progress: Progress, refresh_order: RefreshOrder | None, s: dict) -> None:
    if run.bank is not None:
        run.bank.load_state_dict(s["bank"])
    run.model.appnp.load_histories(s["histories"])
    if "frame_shift" in s:  # checkpoints written before the frame was kept have none (zero)
        run.model.frame_shift.copy_(s["frame_shift"])
    if refresh_order is not None:
        refresh_order.load_state_dict(s["refresh_order"])
    run.step = s["step"]
    progress.load_state_dict(s["progress"])
    run.optim.load_bad_steps(s["bad_steps"])
    run.phases.totals.update(s["phases"])
    run.phases.counts.update(s["phase_counts"])


def save_checkpoint(run: Run, progress: Progress, refresh_order: RefreshOrder | None, out_dir: Path) -> None:
    """Write the resumable state, then put a pending best in place (:func:`settle_best`).
    Collective: every rank calls it. Without DeepSpeed rank 0 writes ``checkpoint.pt`` with
    every rank's own state (RNG, counters) in ``ranks``."""
    ranks: list[dict | None] = [None] * get_world_size()
    if is_distributed():
        torch.distributed.all_gather_object(ranks, _rank_state(run))
    else:
        ranks[0] = _rank_state(run)
    engine = run.optim.engine
    if engine is not None:
        zero.save_engine_checkpoint(engine, out_dir / DEEPSPEED_DIR, run.step,
                                    _train_state(run, progress, refresh_order), ranks[get_rank()])
        settle_best(out_dir, progress.best_epoch)
        return
    if is_main():
        state = {"model": run.model.state_dict(), "optim": run.optim.state_dict(),
                 **_train_state(run, progress, refresh_order), "ranks": ranks}
        checkpoint.save(out_dir / checkpoint.CHECKPOINT, state)
        settle_best(out_dir, progress.best_epoch)
    barrier()


def check_fits(expected, saved, path: Path, where: str = "") -> None:
    """That ``saved`` (a loaded checkpoint, or part of one) has every key of ``expected`` (this
    run's own state of the same kind) and tensors of the same shapes: a checkpoint of another
    dataset, model or version is refused with one line naming the first difference, before any
    of it is restored."""
    if isinstance(expected, dict):
        if not isinstance(saved, dict):
            raise FastleadingError(f"{path}: does not fit this run: {repr(where) if where else 'it'} is a "
                                   f"{type(saved).__name__}, expected a mapping (not a checkpoint written by "
                                   "`fastleading train`?)")
        for key, value in expected.items():
            name = f"{where}.{key}" if where else str(key)
            if key not in saved:
                raise FastleadingError(f"{path}: does not fit this run: no '{name}' (not a checkpoint written by "
                                       "this version of `fastleading train`?)")
            check_fits(value, saved[key], path, name)
    elif isinstance(expected, torch.Tensor) and (not isinstance(saved, torch.Tensor) or saved.shape != expected.shape):
        got = tuple(saved.shape) if isinstance(saved, torch.Tensor) else type(saved).__name__
        raise FastleadingError(f"{path}: does not fit this run: '{where}' is {got}, this run's is "
                               f"{tuple(expected.shape)} (a checkpoint of another dataset or model?)")


def _restore(path: Path, restore) -> None:
    """Run ``restore()``; an error of a checkpoint that passed :func:`check_fits` yet does not load
    (an optimizer of another shape, ...) becomes one line naming ``path``."""
    try:
        restore()
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise FastleadingError(f"{path}: cannot resume from it ({type(e).__name__}: {first})") from None


def load_checkpoint(run: Run, progress: Progress, refresh_order: RefreshOrder | None, out_dir: Path) -> bool:
    """Restore the newest checkpoint of ``out_dir`` on every rank; False when there is none. One
    that does not fit the run is refused with one line before any of the run's state is restored
    (under DeepSpeed, after the engine has loaded its own part)."""
    engine = run.optim.engine
    expected = _train_state(run, progress, refresh_order)
    del expected["progress"], expected["phases"], expected["phase_counts"]  # free-form, checked on use
    del expected["frame_shift"]  # absent from checkpoints written before the frame was kept: zero
    if engine is not None:
        folder = out_dir / DEEPSPEED_DIR
        if not zero.has_engine_checkpoint(folder):
            return False
        path = folder
        state, own = zero.load_engine_checkpoint(engine, folder)
        check_fits(expected, state, path)
    else:
        path = out_dir / checkpoint.CHECKPOINT
        if not path.exists():
            return False
        state = checkpoint.load(path)  # on the CPU: RNG states stay byte tensors there
        model = {k: v for k, v in run.model.state_dict().items() if k != "frame_shift"}  # as above
        check_fits({"model": model, "optim": {}, "ranks": [], **expected}, state, path)
        ranks = state["ranks"]
        if not isinstance(ranks, list):
            raise FastleadingError(f"{path}: does not fit this run: 'ranks' is a {type(ranks).__name__}, "
                                   "expected a list")
        if len(ranks) != get_world_size():
            raise FastleadingError(f"{path}: written by {len(ranks)} rank(s) but this run has "
                                   f"WORLD_SIZE={get_world_size()}; resume with as many ranks")
        own = ranks[get_rank()]
    if own is not None:
        check_fits(_rank_state(run), own, path, f"ranks[{get_rank()}]")

    def restore() -> None:
        if engine is None:
            run.model.load_state_dict(state["model"])
            run.optim.load_state_dict(state["optim"])
        _load_train_state(run, progress, refresh_order, state)
        if own is not None:
            _load_rank_state(run, own)

    _restore(path, restore)
    if state.get(checkpoint.OPTIMIZER_STATE_DROPPED) and is_main():
        from fastleading.run import console

        console.notice(f"{path}: the run's optimizer state was dropped when it finished "
                       "(train.keep_optimizer_state=false): the steps it trains on start the optimizer's moments "
                       "afresh (weights, schedule, bank and data order as saved)")
    run.optim.follow_schedule()  # the rates of this run's schedule (train.epochs may have grown)
    settle_best(out_dir, progress.best_epoch)
    return True


def save_best(run: Run, epoch: int, out_dir: Path) -> None:
    """The new best's ``best.pt`` content, written as ``best.pending.pt`` (the next checkpoint
    puts it in place): the NodeClassifier's weights (encoder and head; no histories). Under
    ZeRO-3 gathered from the partitions, which is collective: every rank calls it."""
    engine = run.optim.engine
    if engine is None:
        state = run.model.state_dict()
    else:  # the engine's module holds the encoder and the head; the frame shift is the model's
        state = {"frame_shift": run.model.frame_shift.detach().cpu(), **zero.full_state_dict(engine)}
    if is_main():
        checkpoint.save(out_dir / checkpoint.BEST_PENDING, {"model": state, "epoch": epoch})


def settle_best(out_dir: Path, best_epoch: int) -> None:
    """Rank 0: rename ``best.pending.pt`` to ``best.pt`` (and fsync the folder) when it holds the
    recorded best epoch ``best_epoch``, delete it otherwise (a best that no checkpoint recorded:
    the run replays its epoch). Call it only once the record (a checkpoint, or the summary at the
    end of a run) says ``best_epoch``."""
    pending = out_dir / checkpoint.BEST_PENDING
    if not is_main() or not pending.is_file():
        return
    if checkpoint.load(pending, mmap=True).get("epoch") == best_epoch:
        os.replace(pending, out_dir / checkpoint.BEST)
    else:
        pending.unlink()
    fsync_dir(out_dir)
