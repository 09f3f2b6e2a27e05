"""Optimisation of the LM and the head.

AdamW with one learning rate for the LM and one for the head, linear warm-up then linear /
cosine / constant, gradient clipping and accumulation, fp16 loss scaling, or the DeepSpeed
engine doing the same. A step whose loss or gradients are non-finite is skipped: the flag is
computed on the device and handed to the fused AdamW (``found_inf``), so no step waits for
the host; the loop reads the count of consecutive bad steps only where it logs
(:meth:`Optimization.check_bad_steps`).
"""

from __future__ import annotations

import math
import re

import torch

from fastleading.config import Config
from fastleading.engine import zero
from fastleading.engine.distributed import all_reduce_gradients, all_reduce_sum, is_distributed
from fastleading.errors import FastleadingError


def lr_lambda(cfg: Config, total_steps: int):
    """The LR factor of optimizer step ``s`` (``torch.optim.lr_scheduler.LambdaLR``)."""
    t = cfg.train
    warmup = int(t.warmup_ratio * total_steps)

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if t.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if t.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return max(0.0, 1.0 - progress)
    return f


# a transformer block's index in a parameter name: BERT "encoder.layer.3.", GPT-2 "h.3.", Llama
# "layers.3.", T5 "block.3." (LoRA-wrapped names keep them)
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
_EMBEDDING = re.compile(r"(?:^|\.)(?:embeddings|embed_tokens|wte|wpe|word_embeddings|embed_positions)\.")


def lm_depths(encoder) -> dict[str, int]:
    """How far below the top each trainable LM parameter sits: block ``i`` of ``L`` at ``L - i``,
    the embeddings at ``L + 1``, everything above the blocks (final norm, pooler) at 0."""
    named = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
    blocks = {n: int(m.group(1)) for n, _ in named if (m := _LAYER.search(n))}
    top = max(blocks.values(), default=-1) + 1
    return {n: top - blocks[n] if n in blocks else (top + 1 if _EMBEDDING.search(n) else 0) for n, _ in named}


def param_groups(model, cfg: Config) -> list[dict]:
    """The LM's trainable parameters at ``train.lr_lm`` (times ``train.lr_layer_decay`` to the
    power of their depth below the top, :func:`lm_depths`), then the head's (and a link
    decoder's) at ``train.lr_head``. The LM's groups come first, the deepest first."""
    t = cfg.train
    params = dict(model.encoder.named_parameters())
    by_depth: dict[int, list] = {}
    for name, depth in lm_depths(model.encoder).items():
        by_depth.setdefault(depth if t.lr_layer_decay != 1.0 else 0, []).append(params[name])
    groups = [{"params": by_depth[d], "lr": t.lr_lm * t.lr_layer_decay ** d} for d in sorted(by_depth, reverse=True)]
    head = list(model.head.parameters())
    if getattr(model, "decoder", None) is not None:
        head += list(model.decoder.parameters())
    return groups + [{"params": head, "lr": t.lr_head}]


class Optimization:
    """Backward and optimizer step of one run (plain PyTorch, or the DeepSpeed engine).

    Args:
        optimizer, scheduler: what steps the weights and the learning rate.
        scaler: the fp16 GradScaler, or None.
        engine: the DeepSpeed engine holding the encoder and the head, or None.
        grad_accum: steps per optimizer step.
        grad_clip: max gradient norm (0 = off).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler, scaler=None, engine=None,
                 grad_accum: int = 1, grad_clip: float = 0.0):
        self.optimizer, self.scheduler, self.scaler, self.engine = optimizer, scheduler, scaler, engine
        self.grad_accum, self.grad_clip = grad_accum, grad_clip
        device = next((p.device for g in optimizer.param_groups for p in g["params"]), torch.device("cpu"))
        # device-side bookkeeping of non-finite steps (read only by check_bad_steps)
        self._loss_bad = torch.zeros((), dtype=torch.bool, device=device)
        self.bad_streak = torch.zeros((), dtype=torch.int64, device=device)
        self.worst_streak = torch.zeros((), dtype=torch.int64, device=device)
        self.last_bad_phase = torch.zeros((), dtype=torch.int64, device=device)  # 1 loss, 2 gradients

    def lm_lr(self) -> float:
        """The LM's current learning rate (its top layers' under ``train.lr_layer_decay``: the
        group just before the head's, :func:`param_groups`)."""
        return self.optimizer.param_groups[-2]["lr"]

    def gradient_scale(self, weight: float) -> float | torch.Tensor:
        """The factor by which the gradients of the next backward exceed those of the unscaled
        mean loss: ``weight / grad_accum x`` the loss scale (a device tensor under a GradScaler,
        read without synchronising)."""
        factor = weight / self.grad_accum
        if self.engine is not None:
            return factor * zero.engine_loss_scale(self.engine)
        if self.scaler is not None:
            return self.scaler._get_scale_async() * factor
        return factor

    def backward(self, loss: torch.Tensor, weight: float = 1.0, implicit=None) -> None:
        """Backpropagate ``loss x weight`` (``weight``: this rank's share of the global batch),
        divided by ``grad_accum`` and scaled for fp16. ``implicit`` (an
        :class:`fastleading.models.appnp.ImplicitAPPNP` in the graph) is told the factor, so it keeps its
        gradient history in the units of the unscaled mean loss."""
        finite = torch.isfinite(loss.detach())
        self._loss_bad |= ~finite
        if self.engine is not None:
            if implicit is not None:
                implicit.grad_scale = self.gradient_scale(weight)
            # The engine decides on its own whether to skip the step, from the gradients: a
            # non-finite loss makes them all NaN so that it does (without reading the device).
            factor = torch.where(finite, weight, float("nan"))
            zero.engine_backward(self.engine, loss * factor)  # the engine divides by grad_accum itself
            return
        scaled = loss * weight / self.grad_accum
        if self.scaler is not None:
            scaled = self.scaler.scale(scaled)  # creates the scale tensor on first use
        if implicit is not None:
            implicit.grad_scale = self.gradient_scale(weight)
        scaled.backward()

    def step(self) -> torch.Tensor | float | None:
        """Average gradients over ranks, unscale, clip, step (skipped on the device when the
        loss or the gradients were non-finite), schedule, zero. Returns the gradient norm
        before clipping as a device tensor (not read here).

        Under DeepSpeed call it after every backward: the engine counts micro steps, steps at
        the accumulation boundary (skipping it on non-finite gradients, see
        :func:`fastleading.engine.zero.engine_step`) and returns None between boundaries, where the
        flags of the optimizer step keep accumulating."""
        if self.engine is not None:
            result = zero.engine_step(self.engine)
            if result is None:
                return None
            engine_norm, skipped = result
            self._count(self._loss_bad, torch.full_like(self._loss_bad, skipped))
            return engine_norm
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        # Average before unscaling: an inf on any rank then reaches every rank's GradScaler.
        all_reduce_gradients(params)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip > 0 else float("inf"))
        loss_bad = self._loss_bad
        if is_distributed():  # every rank must skip the same steps
            loss_bad = all_reduce_sum(loss_bad.to(torch.float32)) > 0
        grad_bad = ~torch.isfinite(norm)
        if self.scaler is not None:
            # The scaler skips steps whose scaled gradients overflowed (and lowers the scale:
            # that is normal fp16 operation, not a bad step); a non-finite loss is one.
            self.scaler.step(self.optimizer)
            self.scaler.update()
            grad_bad = torch.zeros_like(grad_bad)
        else:
            # the fused AdamW skips the step on the device when found_inf is set: the attributes
            # GradScaler sets on an optimizer (torch's protocol, not in Optimizer's type)
            self.optimizer.found_inf = (loss_bad | grad_bad).to(torch.float32)  # type: ignore[attr-defined]
            self.optimizer.grad_scale = None  # type: ignore[attr-defined]
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf, self.optimizer.grad_scale  # type: ignore[attr-defined]
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._count(loss_bad, grad_bad)
        return norm

    def _count(self, loss_bad: torch.Tensor, grad_bad: torch.Tensor) -> None:
        bad = loss_bad | grad_bad
        self.bad_streak = (self.bad_streak + 1) * bad
        self.worst_streak = torch.maximum(self.worst_streak, self.bad_streak)
        phase = torch.where(loss_bad, 1, torch.where(grad_bad, 2, 0))
        self.last_bad_phase = torch.where(bad, phase, self.last_bad_phase)
        self._loss_bad = torch.zeros_like(self._loss_bad)

    def check_bad_steps(self, step: int, limit: int) -> None:
        """Stop with one line when ``limit`` (``train.max_bad_steps``; 0 = never) or more
        consecutive optimizer steps were non-finite. Reads the device: call it where the loop
        reads the loss anyway (logging points, epoch ends)."""
        if not limit:
            return
        worst = int(self.worst_streak)
        if worst >= limit:
            phase = {1: "loss", 2: "gradients"}.get(int(self.last_bad_phase), "loss")
            raise FastleadingError(f"step {step}: {worst} consecutive optimizer steps with a non-finite {phase} "
                                   f"were skipped (train.max_bad_steps={limit}); stopping: lower the learning rate, "
                                   "use bf16 instead of fp16, or check the data")

    def state_dict(self) -> dict:
        """Optimizer, schedule and scaler (what the DeepSpeed engine checkpoints itself)."""
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])

    def follow_schedule(self) -> None:
        """Set each group's learning rate to the schedule's value at its current step. A loaded
        checkpoint holds the rate of the schedule it was saved under; the schedule object is the
        one built for this run (its length from ``train.epochs``), so a resumed run that extends
        ``train.epochs`` takes its next step at the rate a run started with the new length has
        there (continuity with the old rate is not kept: a finished linear schedule had reached 0)."""
        s = self.scheduler
        for group, base, factor in zip(self.optimizer.param_groups, s.base_lrs, s.lr_lambdas, strict=True):
            group["lr"] = base * factor(s.last_epoch)

    def bad_steps_state(self) -> dict:
        return {"bad_streak": self.bad_streak, "worst_streak": self.worst_streak, "last_bad_phase": self.last_bad_phase}

    def load_bad_steps(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value.to(getattr(self, key).device))


def build_optimization(model, cfg: Config, total_steps: int, device: torch.device, precision,
                       ds_config: dict | None) -> Optimization:
    """AdamW (fused: it takes the device-side skip flag), the schedule over ``total_steps``
    optimizer steps, the fp16 scaler; with ``ds_config`` the DeepSpeed engine around the
    encoder and the head (the same module objects as ``model``'s)."""
    t = cfg.train
    groups = param_groups(model, cfg)
    optimizer: torch.optim.Optimizer
    if ds_config is None:
        optimizer = torch.optim.AdamW(groups, weight_decay=t.weight_decay, fused=True)
    else:
        optimizer = zero.build_optimizer(groups, t.weight_decay, ds_config, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
    if ds_config is None:
        return Optimization(optimizer, scheduler, precision.make_scaler(), None, t.grad_accum, t.grad_clip)
    # The engine steps our optimizer and schedule and scales fp16 losses itself.
    engine = zero.initialize_engine(zero.EncoderHead(model.encoder, model.head), optimizer, scheduler,
                                    ds_config, device)
    return Optimization(optimizer, scheduler, None, engine, t.grad_accum, t.grad_clip)
