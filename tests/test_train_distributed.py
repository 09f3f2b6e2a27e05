"""The trainer under DeepSpeed ZeRO and with two ranks (CPU, gloo, loopback).

- ``--deepspeed`` zero0..zero3 (and a ZeRO-3 JSON file that really partitions the tiny model)
  trains LEADING steps with gradient accumulation, checkpoints through DeepSpeed, resumes, and
  matches the plain trainer's losses, gradient norms and final weights. One subprocess runs
  every stage (DeepSpeed's process group and accelerator stay out of the test process).
- Two ranks (torch.multiprocessing spawn) each train on half of every global batch: afterwards
  both hold identical banks, histories and weights, and the loss trajectory matches one
  process trained on the union of the batches. Only rank 0 writes outputs.

Why the two-rank trajectory is exact only without propagation: in one process a target is
encoded with gradient in every subgraph it enters, so the loss of another target within reach
of the propagation sends it gradient too. With two ranks a target of the other rank's shard enters
this rank's subgraph as a bank row (freshly refreshed, so the forward is the same) and that
gradient path is dropped, as for any LEADING neighbour. With ``model.alpha=1`` (no propagation)
the two runs must agree to rounding; with propagation they agree closely, not exactly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_train import small_config
from tiny_models import save_tiny_model

from fastleading.config import Config
from fastleading.run import checkpoint

needs_deepspeed = pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                                     reason="the deepspeed extra is not installed")
LAUNCHER = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "DS_ACCELERATOR")
WORLD, STEPS = 2, 6
DS_STEPS, DS_SAVE_AT = 6, 4  # grad_accum 2: three optimizer steps, resume after the second
STAGE3_JSON = {"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}
DS_CASES = ("zero0", "zero1", "zero2", "zero3", "zero3-json")


def tiny_model_without_dropout(folder: Path) -> str:
    """The tests' tiny BERT with dropout off, so that runs drawing different random numbers
    (one rank per shard, or one process) compute the same functions."""
    path = save_tiny_model(folder, "bert", hidden=32)
    config_file = Path(path) / "config.json"
    config = json.loads(config_file.read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config_file.write_text(json.dumps(config))
    return path


def losses(run_dir: Path, key: str = "loss") -> dict[int, float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {line["step"]: line[key] for line in lines if key in line}


def _launcher_free_env(**extra: str) -> dict:
    return {**{k: v for k, v in os.environ.items() if k not in LAUNCHER}, **extra}


# -- DeepSpeed (one subprocess for every stage) -----------------------------------------------

def ds_config(model: str, cache: Path, *overrides: str) -> Config:
    return small_config(model, cache, "train.device=cpu", "train.precision=fp32", "train.batch_size=8",
                        "train.grad_accum=2", "train.checkpoint_every=2", "train.epochs=1", "model.head_dropout=0",
                        "data.split=high-0", *overrides)



def ds_steps_config(model: str, cache: Path, spec: str, steps: int) -> Config:
    """:func:`ds_config` under the DeepSpeed config ``spec`` for ``steps`` steps."""
    return ds_config(model, cache, f"train.deepspeed={spec}", f"train.max_steps={steps}")


def _ds_worker(model: str, out: Path) -> None:
    """Plain run, then per case: a straight DeepSpeed run and one stopped at DS_SAVE_AT and resumed."""
    from fastleading.trainer import loop as T

    built = []
    build_trainer = T.build_trainer

    def spy(*args, **kwargs):  # records whether ZeRO-3 really partitioned the encoder
        tr = build_trainer(*args, **kwargs)
        built.append(all(p.numel() == 0 for p in tr.run.model.encoder.parameters()))
        return tr

    T.build_trainer = spy
    cache = out / "cache"
    T.train(ds_config(model, cache, f"train.max_steps={DS_STEPS}"), out / "plain", quiet=True)
    (out / "stage3.json").write_text(json.dumps(STAGE3_JSON))
    for case in DS_CASES:
        spec = str(out / "stage3.json") if case == "zero3-json" else case
        cfg = partial(ds_steps_config, model, cache, spec)
        T.train(cfg(DS_STEPS), out / case / "straight", quiet=True)
        T.train(cfg(DS_SAVE_AT), out / case / "resumed", quiet=True)
        T.train(cfg(DS_STEPS), out / case / "resumed", resume=True, quiet=True)
        (out / case / "partitioned").write_text(json.dumps(built[-3:]))
        print(f"{case}: ok", flush=True)


NONFINITE_STEPS, BAD_MICRO_STEPS = 8, (2, 4)  # 0-based micro steps: optimizer steps 1 and 2 (of 0-3) are bad
NONFINITE_CASES = ("zero0", "zero1", "zero2", "zero3")


def _ds_nonfinite_worker(model: str, out: Path) -> None:
    """The plain trainer and each stage with a non-finite LM embedding at BAD_MICRO_STEPS: the
    weights after every optimizer step and the trainer's streaks of bad steps."""
    from fastleading.engine import zero
    from fastleading.trainer import loop as T
    from fastleading.trainer import steps

    encode = steps.Run.encode

    def bad_encode(self, ids):
        x = encode(self, ids)
        return x * float("inf") if self.step in BAD_MICRO_STEPS else x

    steps.Run.encode = bad_encode
    built = []
    build_trainer = T.build_trainer
    T.build_trainer = lambda *a, **k: built.append(build_trainer(*a, **k)) or built[-1]
    from fastleading.trainer.optim import Optimization

    optim_step = Optimization.step
    weights: list = []  # the encoder's and the head's weights after each optimizer step

    def spy_step(self):
        norm = optim_step(self)
        if self.engine is not None and norm is None:  # between accumulation boundaries
            return norm
        model = built[-1].run.model
        state = zero.full_state_dict(self.engine if self.engine is not None else zero.EncoderHead(model.encoder,
                                                                                                     model.head))
        weights.append({k: v.float() for k, v in state.items()})
        return norm

    Optimization.step = spy_step
    cache = out / "cache"
    common = (f"train.max_steps={NONFINITE_STEPS}", "train.schedule=constant", "train.warmup_ratio=0")
    results = {}
    for case in ("plain", *NONFINITE_CASES):
        weights.clear()
        extra = () if case == "plain" else (f"train.deepspeed={case}",)
        T.train(ds_config(model, cache, *common, *extra), out / "nonfinite" / case, quiet=True)
        optim = built[-1].run.optim
        results[case] = {"weights": list(weights),
                         "worst_streak": int(optim.worst_streak), "bad_streak": int(optim.bad_streak),
                         "loss": losses(out / "nonfinite" / case)}
        print(f"nonfinite {case}: ok", flush=True)
    torch.save(results, out / "nonfinite.pt")


@pytest.fixture(scope="module")
def deepspeed_runs(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds")
    model = tiny_model_without_dropout(out / "model")
    # No launcher variables: `fastleading train --deepspeed` starts its own one-rank group.
    proc = subprocess.run([sys.executable, __file__, "deepspeed", model, str(out)], capture_output=True, text=True,
                          env=_launcher_free_env(OMP_NUM_THREADS="1"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return out


@pytest.fixture(scope="module")
def nonfinite_runs(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("ds-nonfinite")
    model = tiny_model_without_dropout(out / "model")
    proc = subprocess.run([sys.executable, __file__, "deepspeed-nonfinite", model, str(out)], capture_output=True,
                          text=True, env=_launcher_free_env(OMP_NUM_THREADS="1"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return torch.load(out / "nonfinite.pt", weights_only=False)


@needs_deepspeed
@pytest.mark.parametrize("case", NONFINITE_CASES)
def test_deepspeed_skips_a_non_finite_step_like_the_plain_trainer(nonfinite_runs, case):
    """Optimizer steps whose loss is non-finite change no weight under any ZeRO stage (stage 0
    in fp32 has no check of its own), count as consecutive bad optimizer steps (not micro
    steps), and the run then goes on as the plain trainer's does (constant LR: a skipped step
    moves no schedule either way)."""
    plain, got = nonfinite_runs["plain"], nonfinite_runs[case]
    assert len(got["weights"]) == len(plain["weights"]) == NONFINITE_STEPS // 2
    for k, before in got["weights"][0].items():
        # optimizer steps 1 and 2 (a bad micro step each) skipped: not one weight moved
        assert torch.equal(got["weights"][1][k], before) and torch.equal(got["weights"][2][k], before), k
        assert torch.isfinite(got["weights"][-1][k]).all(), k
    assert any(not torch.equal(got["weights"][3][k], v) for k, v in got["weights"][0].items())  # step 3 applied
    assert got["worst_streak"] == plain["worst_streak"] == 2 and got["bad_streak"] == plain["bad_streak"] == 0
    for w, want in zip(got["weights"], plain["weights"], strict=True):
        for k in want:
            torch.testing.assert_close(w[k], want[k], rtol=1e-4, atol=1e-5, msg=k)


@needs_deepspeed
@pytest.mark.parametrize("case", DS_CASES)
def test_deepspeed_matches_plain_trainer_and_resumes(deepspeed_runs, case):
    plain, straight, resumed = (deepspeed_runs / "plain", deepspeed_runs / case / "straight",
                                deepspeed_runs / case / "resumed")
    ref = losses(plain)
    assert sorted(ref) == list(range(1, DS_STEPS + 1))
    for key in ("loss", "grad_norm", "lr_lm"):
        want, got = losses(plain, key), losses(straight, key)
        assert sorted(got) == sorted(want), key
        assert [got[s] for s in sorted(got)] == pytest.approx([want[s] for s in sorted(want)], rel=1e-4, abs=1e-6), key
    assert len(losses(plain, "grad_norm")) == DS_STEPS // 2  # one per optimizer step (grad_accum 2)
    # the resumed run continues from the DeepSpeed checkpoint exactly where the straight one went
    again = losses(resumed)
    assert sorted(again) == list(range(1, DS_STEPS + 1))
    assert [again[s] for s in range(DS_SAVE_AT + 1, DS_STEPS + 1)] == pytest.approx(
        [ref[s] for s in range(DS_SAVE_AT + 1, DS_STEPS + 1)], rel=1e-4, abs=1e-6)
    # checkpoints went through DeepSpeed: its folder, no plain checkpoint.pt
    assert (straight / "deepspeed" / "latest").read_text() == f"step{DS_STEPS}"
    assert not (straight / "checkpoint.pt").exists()
    # best.pt holds the full (gathered) weights under the plain trainer's names
    want = torch.load(plain / "best.pt", weights_only=False)["model"]
    got = torch.load(straight / "best.pt", weights_only=False)["model"]
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5, msg=k)
    partitioned = json.loads((deepspeed_runs / case / "partitioned").read_text())
    assert partitioned == [case.startswith("zero3")] * 3, partitioned  # ZeRO-3 really partitions


@needs_deepspeed
def test_bad_deepspeed_preset_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fastleading.cli", "train", "--deepspeed", "zero4",
                           "--out", str(tmp_path / "run"), f"data.cache_dir={tmp_path / 'cache'}"],
                          capture_output=True, text=True, timeout=300, env=_launcher_free_env())
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown preset 'zero4'" in lines[0] and "zero3-offload" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()


# -- two ranks ----------------------------------------------------------------------------------

# "graph": LEADING as usual; "local": model.alpha=1, no propagation (see the module docstring).
VARIANTS = {"graph": (), "local": ("model.alpha=1.0",)}


def dp_config(model: str, cache: Path, batch_size: int, variant: str = "graph") -> Config:
    # Fan-outs above every degree take whole neighbourhoods, so a subgraph does not depend on
    # the sampling seed (which the ranks and the single process use on different targets).
    return small_config(model, cache, "train.device=cpu", "train.precision=fp32", f"train.batch_size={batch_size}",
                        f"train.max_steps={STEPS}", "train.fanouts=100,100", "model.head_dropout=0",
                        "data.split=high-0", "train.checkpoint_every=3", *VARIANTS[variant])


def _rank_worker(rank: int, port: int, model: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from fastleading.engine.distributed import shutdown
    from fastleading.trainer import loop as T

    runs = []
    build_trainer = T.build_trainer
    def spy(*args, **kwargs):
        tr = build_trainer(*args, **kwargs)
        runs.append(tr.run)
        return tr

    T.build_trainer = spy
    out = Path(out)
    for variant in VARIANTS:
        # Each rank gets its own run folder: only rank 0's may be created and written.
        summary = T.train(dp_config(model, out / "cache", 16, variant), out / variant / f"rank{rank}", quiet=True)
        run = runs[-1]
        torch.save({"bank": run.bank.state_dict(), "x_history": run.model.appnp.x_history,
                    "g_history": run.model.appnp.g_history, "model": run.model.state_dict(), "summary": summary,
                    "counter": run.counter.state_dict()},
                   out / variant / f"state{rank}.pt")
    shutdown()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    from fastleading.data import prepare
    from fastleading.engine.distributed import free_port
    from fastleading.trainer.loop import train

    out = tmp_path_factory.mktemp("dp")
    model = tiny_model_without_dropout(out / "model")
    prepare(dp_config(model, out / "cache", 32))  # the cache exists before the ranks start
    mp.spawn(_rank_worker, args=(free_port(), model, str(out)), nprocs=WORLD, join=True)
    runs = {}
    for variant in VARIANTS:
        single = train(dp_config(model, out / "cache", 16 * WORLD, variant), out / variant / "single", quiet=True)
        states = [torch.load(out / variant / f"state{r}.pt", weights_only=False) for r in range(WORLD)]
        runs[variant] = (out / variant, states, single)
    return runs


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_rank_holds_the_same_bank_histories_and_weights(two_ranks, variant):
    _, (a, b), _ = two_ranks[variant]
    for key in ("emb", "stamp"):
        assert torch.equal(a["bank"][key], b["bank"][key]), key
    assert torch.equal(a["x_history"], b["x_history"]) and torch.equal(a["g_history"], b["g_history"])
    assert a["x_history"].abs().sum() > 0 and a["g_history"].abs().sum() > 0  # the histories were written
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    # each rank counted its own encodes; the summary reports all ranks' (= one process's)
    assert not torch.equal(a["counter"]["per_node"]["grad"], b["counter"]["per_node"]["grad"])
    assert a["summary"]["encodes_per_node_per_epoch"] == b["summary"]["encodes_per_node_per_epoch"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_two_ranks_match_one_process_on_the_union_of_the_batches(two_ranks, variant):
    out, (a, _), single = two_ranks[variant]
    ref, got = losses(out / "single"), losses(out / "rank0")
    assert sorted(got) == sorted(ref) == list(range(1, STEPS + 1))
    ref_norm, got_norm = losses(out / "single", "grad_norm"), losses(out / "rank0", "grad_norm")
    # step 1 sees the same weights, bank and (zero) histories: the forward differs only in rounding
    assert got[1] == pytest.approx(ref[1], rel=1e-5)
    ckpt = checkpoint.load(out / "single" / "checkpoint.pt")
    if variant == "local":  # the same computation in another summation order
        assert [got[s] for s in ref] == pytest.approx([ref[s] for s in ref], rel=1e-5)
        assert [got_norm[s] for s in ref] == pytest.approx([ref_norm[s] for s in ref], rel=1e-4)
        torch.testing.assert_close(a["bank"]["emb"], ckpt["bank"]["emb"], rtol=1e-4, atol=1e-5)
    else:  # minus the cross-shard gradient paths (module docstring); the default delta warm start
        # moves each node's initial point with its input, so the weights' small difference shows in
        # the forward at once (measured: 1.06% at step 5 of 6)
        assert [got[s] for s in ref] == pytest.approx([ref[s] for s in ref], rel=2e-2)
        torch.testing.assert_close(a["bank"]["emb"], ckpt["bank"]["emb"], rtol=1e-2, atol=1e-2)
    # the same rows were refreshed at the same steps
    assert torch.equal(a["bank"]["stamp"], ckpt["bank"]["stamp"])
    assert a["summary"]["encodes_per_node_per_epoch"] == pytest.approx(single["encodes_per_node_per_epoch"])


def test_only_rank_0_writes_outputs(two_ranks):
    out = two_ranks["graph"][0]
    assert not (out / "rank1").exists()
    written = {p.name for p in (out / "rank0").iterdir()}
    assert {"config.json", "metrics.jsonl", "summary.json", "checkpoint.pt", "best.pt"} <= written
    steps = [json.loads(line)["step"] for line in (out / "rank0" / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == list(range(1, STEPS + 1))  # one line per step: no second writer
    # the checkpoint carries every rank's own RNG and counters
    ranks = checkpoint.load(out / "rank0" / "checkpoint.pt")["ranks"]
    assert len(ranks) == WORLD
    assert not torch.equal(ranks[0]["counter"]["per_node"]["grad"], ranks[1]["counter"]["per_node"]["grad"])


if __name__ == "__main__":
    if sys.argv[1] == "deepspeed":
        _ds_worker(sys.argv[2], Path(sys.argv[3]))
    elif sys.argv[1] == "deepspeed-nonfinite":
        _ds_nonfinite_worker(sys.argv[2], Path(sys.argv[3]))
