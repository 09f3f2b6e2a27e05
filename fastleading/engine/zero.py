"""DeepSpeed ZeRO for the LM and the head: configs, the engine, its steps and its checkpoints.

``--deepspeed`` takes a preset (``zero0`` ... ``zero3-offload``) or the path of a DeepSpeed JSON
file. Either becomes a DeepSpeed config whose batch size, gradient accumulation, clipping and
precision come from ``train.*`` (a JSON file may leave them out or set them to ``"auto"``; a
different value is an error, not a silent override). fastleading always passes its own
optimizer (AdamW with the LM and head learning rates) and LR schedule to the engine, so
DeepSpeed never JIT-builds ``fused_adam``; only the offload presets on a GPU use DeepSpeed's
vectorised CPU Adam, which is what makes optimizer offload fast.

The bank and the implicit layer stay outside the engine: the engine's module is an
:class:`EncoderHead` holding the encoder and the head only (bf16/fp16 engines cast its
parameters in place, never those tables).

Rules measured on CPU with DeepSpeed 0.19.8 (tests/test_zero.py checks the working ones):
- The encode WITH gradient must be a call of the engine, ``engine(input_ids, mask)``: its
  forward resets ZeRO-3's per-micro-step backward bookkeeping. Calling ``engine.module.encoder``
  directly trains correctly without accumulation but, with ``gradient_accumulation_steps > 1``
  under ZeRO-3, gives wrong gradients from the second micro step on (norm 12.4 instead of 9.0).
- The head may be called directly (``engine.module.head(x)``) after the propagation.
- The no-gradient refresh encode (pipeline 2) may call ``engine.module.encoder`` directly,
  under ``torch.no_grad`` or ``torch.inference_mode``: ZeRO-3's module hooks gather each
  submodule's parameters just before it runs and free them after, so the refresh holds only
  the running (and prefetched) layers whole. :func:`gathered_params` instead gathers the whole
  module once for a block of forwards (fewer, larger collectives; the full model in memory).
  On CPU (1 rank, a 4-layer 256-wide BERT, 32 x 64 tokens) the hook path cost 511 ms per
  forward against 404 ms unpartitioned (ZeRO-2), and gathering first was no faster (526 ms).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch

from fastleading.engine.distributed import barrier, get_world_size, init_distributed, is_main, require_deepspeed
from fastleading.errors import FastleadingError
from fastleading.run import checkpoint
from fastleading.run.io import atomic_torch_save, atomic_write_text

# The zero_optimization section of each preset. Buckets and thresholds keep DeepSpeed's
# defaults; overlap_comm/contiguous_gradients overlap the gradient reduction with backward.
PRESETS: dict[str, dict] = {
    "zero0": {"stage": 0},
    "zero1": {"stage": 1},
    "zero2": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True},
    "zero3": {"stage": 3, "overlap_comm": True, "contiguous_gradients": True},
    "zero2-offload": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True,
                      "offload_optimizer": {"device": "cpu", "pin_memory": True}},
    "zero3-offload": {"stage": 3, "overlap_comm": True, "contiguous_gradients": True,
                      "offload_optimizer": {"device": "cpu", "pin_memory": True},
                      "offload_param": {"device": "cpu", "pin_memory": True}},
}
PRECISIONS = ("bf16", "fp16", "fp32")
LATEST = "latest"


class EncoderHead(torch.nn.Module):
    """The module the engine holds: ``forward`` is the encoder's (call it as ``engine(...)`` for
    the encode with gradient); the head is ``.head``, called directly after the propagation."""

    def __init__(self, encoder: torch.nn.Module, head: torch.nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, *args, **kwargs):
        return self.encoder(*args, **kwargs)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise FastleadingError(f"--deepspeed {path}: cannot read the file ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise FastleadingError(f"--deepspeed {path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict):
        raise FastleadingError(f"--deepspeed {path}: expected a JSON object (a DeepSpeed config), "
                               f"got {type(data).__name__}")
    return data


def _set_or_check(cfg: dict, key: str, value, source: str, field: str) -> None:
    """``cfg[key] = value`` unless the user's file set a different value (then one clear line)."""
    given = cfg.get(key, "auto")
    if given != "auto" and given != value:
        raise FastleadingError(f"--deepspeed {source}: '{key}' is {given!r} but {field} gives {value!r}; "
                               f"remove it from the file or set it to \"auto\"")
    cfg[key] = value


def _enabled(section) -> bool:
    return isinstance(section, dict) and bool(section.get("enabled", False))


def _validate_zero_section(section, source: str) -> None:
    """DeepSpeed's own schema of ``zero_optimization``, reported as one line."""
    if not isinstance(section, dict):
        raise FastleadingError(f"--deepspeed {source}: 'zero_optimization' must be a JSON object")
    require_deepspeed()
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
    from pydantic import ValidationError

    try:
        DeepSpeedZeroConfig(**section)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise FastleadingError(f"--deepspeed {source}: zero_optimization.{where}: {err['msg']} "
                               f"(got {err.get('input')!r})") from None


def deepspeed_config(spec: str, *, micro_batch_size: int, grad_accum: int, grad_clip: float,
                     precision: str, world_size: int = 1) -> dict:
    """The DeepSpeed config for ``spec`` (a name in :data:`PRESETS` or a JSON file path).

    Args:
        micro_batch_size: targets per rank per step (``train.batch_size``).
        grad_accum: steps per optimizer step (``train.grad_accum``); the engine scales the loss.
        grad_clip: max gradient norm, 0 = off (``train.grad_clip``).
        precision: the run's resolved precision, ``bf16``, ``fp16`` or ``fp32``: the engine
            keeps fp32 master weights and runs the LM in that dtype.
        world_size: data-parallel ranks (checks a file's ``train_batch_size``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if spec in PRESETS:
        source, cfg = spec, {"zero_optimization": json.loads(json.dumps(PRESETS[spec]))}
    elif spec.lower().endswith(".json") or os.sep in spec or Path(spec).is_file():
        source, cfg = spec, _read_json(Path(spec))
    else:
        raise FastleadingError(f"--deepspeed: unknown preset {spec!r}; expected one of {', '.join(PRESETS)} "
                               "or the path of a DeepSpeed JSON file")
    for key, what in (("optimizer", "AdamW from train.lr_lm, train.lr_head and train.weight_decay"),
                      ("scheduler", "the schedule from train.schedule and train.warmup_ratio")):
        if key in cfg:
            raise FastleadingError(f"--deepspeed {source}: remove the '{key}' section: fastleading passes "
                                   f"its own ({what})")
    _set_or_check(cfg, "train_micro_batch_size_per_gpu", micro_batch_size, source, "train.batch_size")
    _set_or_check(cfg, "gradient_accumulation_steps", grad_accum, source, "train.grad_accum")
    _set_or_check(cfg, "gradient_clipping", float(grad_clip), source, "train.grad_clip")
    if cfg.get("train_batch_size", "auto") == "auto":
        cfg.pop("train_batch_size", None)  # DeepSpeed derives it from the two above and the ranks
    else:
        _set_or_check(cfg, "train_batch_size", micro_batch_size * grad_accum * world_size, source,
                      "train.batch_size x train.grad_accum x WORLD_SIZE")
    if "bfloat16" in cfg:  # DeepSpeed's older spelling of "bf16"
        cfg["bf16"] = cfg.pop("bfloat16")
    file_precision = [name for name in ("bf16", "fp16") if _enabled(cfg.get(name))]
    if len(file_precision) > 1:
        raise FastleadingError(f"--deepspeed {source}: enables both bf16 and fp16; keep one")
    if file_precision and file_precision[0] != precision:
        raise FastleadingError(f"--deepspeed {source}: enables {file_precision[0]} but train.precision is "
                               f"{precision}; set train.precision={file_precision[0]} or remove the section")
    for name in ("bf16", "fp16"):
        section = cfg.get(name)
        cfg[name] = {**(section if isinstance(section, dict) else {}), "enabled": precision == name}
    cfg.setdefault("zero_optimization", {"stage": 0})
    _validate_zero_section(cfg["zero_optimization"], source)
    # DeepSpeed would print its own progress every 10 steps; the trainer logs metrics itself.
    cfg.setdefault("steps_per_print", 2**31 - 1)
    return cfg


def zero_stage(ds_config: dict) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


def _offload_device(ds_config: dict, key: str) -> str:
    section = ds_config.get("zero_optimization", {}).get(key) or {}
    return str(section.get("device", "none"))


def offloads_optimizer(ds_config: dict) -> bool:
    """Whether the optimizer states live on the CPU (or NVMe) instead of the accelerator."""
    return _offload_device(ds_config, "offload_optimizer") in ("cpu", "nvme")


def build_optimizer(param_groups: list[dict], weight_decay: float, ds_config: dict,
                    device: torch.device, cpu_adam: bool = True) -> torch.optim.Optimizer:
    """AdamW over ``param_groups`` (each with its own ``lr``) for the engine.

    With optimizer offload on a GPU (and ``cpu_adam``) this is DeepSpeed's CPU Adam in AdamW
    mode: vectorised, several times faster than torch's AdamW on CPU tensors, at the price of
    a one-time JIT build of ``cpu_adam`` (C++ compiler and ninja needed; 335 s on a loaded
    2-core CPU machine, cached in ~/.cache/torch_extensions; on CPU it matched torch's AdamW
    with two LR groups and weight decay to 3e-7). Otherwise torch's fused AdamW, which needs
    no build and takes a skip flag (:func:`engine_step`).
    """
    if cpu_adam and offloads_optimizer(ds_config) and device.type == "cuda":
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(param_groups, weight_decay=weight_decay, adamw_mode=True)
    return torch.optim.AdamW(param_groups, weight_decay=weight_decay, fused=True)


def _skip_shm_build() -> None:
    """On a CPU accelerator DeepSpeed JIT-builds a shared-memory allreduce op at its first
    initialize (27-90 s cold). A single process has no peers to reduce with: mark the op
    incompatible so DeepSpeed uses gloo without building it."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def initialize_engine(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                      scheduler: torch.optim.lr_scheduler.LRScheduler | None, ds_config: dict,
                      device: torch.device):
    """``deepspeed.initialize`` on ``model`` (an :class:`EncoderHead`), our optimizer and schedule.

    Starts a one-rank process group when no launcher did (a plain ``fastleading train
    --deepspeed`` on one device). The engine casts ``model``'s parameters in place (bf16/fp16)
    and, under ZeRO-3, partitions them; the encoder and head objects stay the same (see the
    module docstring for which calls must go through the engine). Returns the engine; its
    ``optimizer`` and ``lr_scheduler`` wrap the ones passed in (step them only through
    :func:`engine_step`).
    """
    require_deepspeed()
    if device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    from deepspeed.accelerator import get_accelerator

    accel = get_accelerator().device_name()
    if accel != device.type:
        raise FastleadingError(f"--deepspeed: DeepSpeed runs on '{accel}' but train.device is {device}; "
                               f"set DS_ACCELERATOR={device.type} before starting, or change train.device")
    import deepspeed
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    init_distributed("nccl" if device.type == "cuda" else "gloo", force=True)
    if device.type == "cpu" and get_world_size() == 1:
        _skip_shm_build()
    cfg = dict(ds_config)
    if offloads_optimizer(cfg) and not isinstance(optimizer, DeepSpeedCPUAdam):
        # DeepSpeed refuses a torch optimizer with offload unless told it is deliberate
        # (on CPU the offload target is where the states already are).
        cfg["zero_force_ds_cpu_optimizer"] = False
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=cfg)
    return engine


def engine_backward(engine, loss: torch.Tensor) -> None:
    """Backward through the engine: it divides by ``gradient_accumulation_steps``, scales fp16
    losses and (ZeRO-2/3) reduces gradient partitions as they are produced. Do NOT divide
    ``loss`` by ``train.grad_accum`` yourself."""
    engine.backward(loss)


def engine_loss_scale(engine) -> float:
    """The factor the engine multiplies losses by before backward: its fp16 loss scale, 1 for
    bf16 and fp32 engines (a host value in DeepSpeed: reading it does not synchronise)."""
    if not engine.fp16_enabled():
        return 1.0
    scale = engine._get_optimizer_loss_scale()
    return float(scale) if scale is not None else 1.0


def engine_step(engine) -> tuple[float | None, bool] | None:
    """Call after every :func:`engine_backward`. At a gradient-accumulation boundary the engine
    clips, steps the optimizer and the LR schedule and zeroes the gradients; returns
    ``(global gradient norm before clipping, skipped)`` then (the norm None where a DeepSpeed
    config turned its computation off), ``None`` between boundaries.

    ``skipped``: the step changed no weight because a gradient was non-finite. DeepSpeed checks
    that itself under fp16, bf16 and ZeRO 1-3 (and leaves the LR schedule where it was); plain
    fp32 stage 0 steps the bare optimizer with no check, so here a non-finite norm is handed to
    it as fused AdamW's ``found_inf`` (the plain trainer's skip: weights, moments and step
    counts stay as they were)."""
    boundary = engine.is_gradient_accumulation_boundary()
    manual_norm = None
    if boundary and engine.zero_optimization_stage() == 0 and not (engine.bfloat16_enabled() or engine.fp16_enabled()):
        # Plain fp32 stage 0 clips inside step() without keeping the norm: compute it here
        # (the gradients are already reduced across ranks at the boundary).
        grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
        manual_norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    skip = manual_norm is not None and not math.isfinite(manual_norm)
    if skip:
        engine.optimizer.found_inf, engine.optimizer.grad_scale = torch.ones((), device=grads[0].device), None
    try:
        engine.step()
    finally:
        if skip:
            del engine.optimizer.found_inf, engine.optimizer.grad_scale
    if not boundary:
        return None
    if manual_norm is not None:
        return manual_norm, not math.isfinite(manual_norm)
    norm = engine.get_global_grad_norm()
    return (None if norm is None else float(norm)), not engine.was_step_applied()


def learning_rates(engine) -> list[float]:
    """Current learning rate of each parameter group (LM first, head second)."""
    return [float(g["lr"]) for g in engine.optimizer.param_groups]


@contextlib.contextmanager
def gathered_params(engine_or_module) -> Iterator[None]:
    """Within the block, every parameter of the module (an engine's ``module`` when given an
    engine) is whole on every rank under ZeRO-3; read-only (changes are discarded). A no-op
    when the parameters are not partitioned (no DeepSpeed, or stages 0-2)."""
    module = getattr(engine_or_module, "module", engine_or_module)
    params = [p for p in module.parameters() if hasattr(p, "ds_id")]
    if not params:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield


def full_state_dict(engine_or_module) -> dict[str, torch.Tensor]:
    """The module's complete state dict on CPU (parameters in the engine's dtype), gathered
    from the ZeRO-3 partitions when partitioned; e.g. for ``best.pt`` and export. Collective
    under ZeRO-3: every rank must call it."""
    module = getattr(engine_or_module, "module", engine_or_module)
    with gathered_params(module):
        return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def _tag(step: int) -> str:
    return f"step{step}"


def save_engine_checkpoint(engine, folder: str | Path, step: int, client_state: dict,
                           rank_state: dict | None = None, keep: int = 1) -> Path:
    """Save the engine (module, ZeRO partitions of the optimizer, LR schedule) under
    ``folder/step{step}``, with ``client_state`` (the bank, histories, counters... identical on
    all ranks, written once by rank 0) and ``rank_state`` (this rank's own, e.g. RNG states).

    Collective: every rank calls it. ``folder/latest`` names the new tag only after every rank
    has written it completely (atomic rename), so a run killed mid-save resumes from the
    previous one; then all but the newest ``keep`` tags are deleted. Returns the tag folder.
    """
    folder = Path(folder)
    tag = _tag(step)
    engine.save_checkpoint(str(folder), tag=tag, client_state=client_state, save_latest=False)
    if rank_state is not None:
        atomic_torch_save(rank_state, folder / tag / f"rank{engine.global_rank}_state.pt")
    barrier()
    if is_main():
        atomic_write_text(folder / LATEST, tag)
        tags = sorted((p for p in folder.glob("step*") if p.is_dir() and p.name[4:].isdigit()),
                      key=lambda p: int(p.name[4:]))
        for old in tags[:-keep] if keep > 0 else []:
            if old.name != tag:
                shutil.rmtree(old, ignore_errors=True)
    barrier()
    return folder / tag


def has_engine_checkpoint(folder: str | Path) -> bool:
    return (Path(folder) / LATEST).is_file()


def deepspeed_safe_globals() -> list:
    """The only classes DeepSpeed 0.19's checkpoint files hold besides tensors and plain containers
    (its ZeRO optimizer states; fp16 engines the dynamic scaler): all plain data, rebuilt
    without running code of the file's choosing."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]


def _checkpoint_files(tag_dir: Path) -> Iterator[Path]:
    """Every ``*.pt`` file under ``tag_dir``, symlinked folders entered (each real folder once)."""
    seen: set[str] = set()
    for root, dirs, files in os.walk(tag_dir, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        yield from (Path(root) / name for name in sorted(files) if name.endswith(".pt"))


def verify_engine_files(tag_dir: Path) -> None:
    """Name the first unsafe file of the checkpoint folder ``tag_dir`` before DeepSpeed reads
    anything: each ``*.pt`` file (symlinked folders entered) is loaded with ``weights_only=True``
    (memory-mapped: its tensors are not read) allowing only :func:`deepspeed_safe_globals`; any
    other object is refused with one line naming the file. This check gives the clear message;
    what makes the load safe is :func:`weights_only_loads` around DeepSpeed's own reads (a file
    replaced after this check, or one this walk did not see, is still read weights-only)."""
    if not tag_dir.is_dir():
        raise FastleadingError(f"{tag_dir}: the DeepSpeed checkpoint named in '{LATEST}' is missing")
    with torch.serialization.safe_globals(deepspeed_safe_globals()):
        for path in _checkpoint_files(tag_dir):
            checkpoint.load(path, mmap=zipfile.is_zipfile(path))


FORCE_WEIGHTS_ONLY, FORCE_NO_WEIGHTS_ONLY = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


@contextlib.contextmanager
def weights_only_loads(where: Path) -> Iterator[None]:
    """Within the block every ``torch.load`` is weights-only, whatever its caller asks: DeepSpeed
    loads its checkpoint files (module, ZeRO partitions, a universal checkpoint's ``zero/``
    folder) with ``weights_only=False``, which would run code a shared run folder carried. torch
    reads ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` at each call, so this covers every load DeepSpeed
    makes, from any path it opens; only :func:`deepspeed_safe_globals` are allowed besides
    tensors and plain containers. A refused file is one line naming ``where``."""
    import pickle

    saved = {name: os.environ.get(name) for name in (FORCE_WEIGHTS_ONLY, FORCE_NO_WEIGHTS_ONLY)}
    os.environ[FORCE_WEIGHTS_ONLY] = "1"
    os.environ.pop(FORCE_NO_WEIGHTS_ONLY, None)
    try:
        with torch.serialization.safe_globals(deepspeed_safe_globals()):
            yield
    except pickle.UnpicklingError as e:
        raise checkpoint.refused(where, e, "has a file holding") from None
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def load_engine_checkpoint(engine, folder: str | Path) -> tuple[dict, dict | None]:
    """Load the newest checkpoint of ``folder`` into ``engine`` (module, optimizer partitions,
    LR schedule), every file read weights-only (:func:`verify_engine_files`,
    :func:`weights_only_loads`); returns
    ``(client_state, rank_state)`` as given to :func:`save_engine_checkpoint` (``rank_state``
    None when that rank saved none). Collective: every rank calls it."""
    folder = Path(folder)
    if not has_engine_checkpoint(folder):
        raise FastleadingError(f"{folder}: no DeepSpeed checkpoint here (expected a '{LATEST}' file "
                               "written by `fastleading train --deepspeed`)")
    tag = (folder / LATEST).read_text().strip()
    if not re.fullmatch(r"step\d+", tag):
        raise FastleadingError(f"{folder / LATEST}: names {tag[:40]!r}, expected a tag step<N> written by "
                               "`fastleading train --deepspeed`")
    verify_engine_files(folder / tag)  # names an unsafe file before DeepSpeed reads anything
    try:
        with weights_only_loads(folder / tag):  # and DeepSpeed's own reads cannot unpickle code
            path, client_state = engine.load_checkpoint(str(folder), tag=tag)
    except AssertionError as e:  # DeepSpeed's checks of what it read (e.g. load_universal on a plain checkpoint)
        first = str(e).strip().splitlines()[0] if str(e).strip() else "a check failed"
        raise FastleadingError(f"{folder / tag}: DeepSpeed cannot load this checkpoint ({first})") from None
    if path is None:
        raise FastleadingError(f"{folder / tag}: cannot load the DeepSpeed checkpoint named in '{LATEST}'")
    rank_file = folder / tag / f"rank{engine.global_rank}_state.pt"
    rank_state = checkpoint.load(rank_file) if rank_file.is_file() else None
    return client_state, rank_state
