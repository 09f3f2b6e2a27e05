"""DeepSpeed ZeRO (fastleading.engine.zero) on CPU: configs and their one-line errors, and training.

The training check runs in ONE subprocess (DeepSpeed's process group and accelerator stay out
of the test process) that loops over the presets: a tiny BERT encoder + linear head trains a
few steps the way LEADING's step uses them (a no-gradient refresh encode, then an encode with
gradient, gradient accumulation, clipping, an LR schedule) through the engine, saves at an
optimizer-step boundary, and a second engine built from a different initialisation resumes
from that checkpoint. Everything is compared with plain torch AdamW on an identical copy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed")

from fastleading.engine.zero import PRESETS, deepspeed_config, offloads_optimizer, zero_stage  # noqa: E402
from fastleading.errors import FastleadingError  # noqa: E402

KW = dict(micro_batch_size=4, grad_accum=2, grad_clip=1.0)
# (name, preset, precision). stage3_param_persistence_threshold=0 is set for stage 3 in the
# worker: otherwise DeepSpeed keeps a tiny model's small tensors whole and nothing is partitioned.
CASES = [("zero0", "zero0", "fp32"), ("zero1", "zero1", "fp32"), ("zero2", "zero2", "fp32"),
         ("zero3", "zero3", "fp32"), ("zero2-offload", "zero2-offload", "fp32"),
         ("zero3-offload", "zero3-offload", "fp32"), ("zero3-bf16", "zero3", "bf16")]
MICRO_STEPS, SAVE_AT = 6, 4  # 3 optimizer steps (grad_accum 2), checkpoint after the 2nd


# -- configs --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_carry_the_train_settings(name):
    cfg = deepspeed_config(name, precision="bf16", **KW)
    assert cfg["train_micro_batch_size_per_gpu"] == 4 and cfg["gradient_accumulation_steps"] == 2
    assert cfg["gradient_clipping"] == 1.0
    assert cfg["bf16"]["enabled"] and not cfg["fp16"]["enabled"]
    assert zero_stage(cfg) == int(name[4])
    assert offloads_optimizer(cfg) == name.endswith("offload")
    assert ("offload_param" in cfg["zero_optimization"]) == (name == "zero3-offload")
    assert "optimizer" not in cfg and "train_batch_size" not in cfg
    # presets are copied, never shared: editing one config leaves the next untouched
    cfg["zero_optimization"]["stage"] = 99
    assert zero_stage(deepspeed_config(name, precision="fp32", **KW)) == int(name[4])


def test_json_file_is_completed_and_keeps_its_own_keys(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2, "reduce_bucket_size": 1000},
                                "gradient_accumulation_steps": "auto", "train_batch_size": 16,
                                "bf16": {"enabled": True}}))
    cfg = deepspeed_config(str(path), precision="bf16", world_size=2, **KW)
    assert cfg["zero_optimization"] == {"stage": 2, "reduce_bucket_size": 1000}
    assert cfg["gradient_accumulation_steps"] == 2 and cfg["train_batch_size"] == 16
    assert cfg["bf16"] == {"enabled": True} and cfg["fp16"] == {"enabled": False}


def _error(tmp_path, content, precision="fp32", **kw) -> str:
    path = tmp_path / "ds.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    with pytest.raises(FastleadingError) as e:
        deepspeed_config(str(path), precision=precision, **{**KW, **kw})
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_bad_inputs_fail_with_one_clear_line(tmp_path):
    with pytest.raises(FastleadingError, match=r"unknown preset 'zero4'.*zero2-offload.*JSON file"):
        deepspeed_config("zero4", precision="fp32", **KW)
    with pytest.raises(FastleadingError, match=r"nope\.json: cannot read the file"):
        deepspeed_config(str(tmp_path / "nope.json"), precision="fp32", **KW)
    assert "not valid JSON (line 1" in _error(tmp_path, "{'stage': 2}")
    assert "expected a JSON object" in _error(tmp_path, [1, 2])
    assert "remove the 'optimizer' section" in _error(tmp_path, {"optimizer": {"type": "Adam"}})
    assert "'gradient_accumulation_steps' is 4 but train.grad_accum gives 2" in _error(
        tmp_path, {"gradient_accumulation_steps": 4})
    assert "'train_batch_size' is 12" in _error(tmp_path, {"train_batch_size": 12})
    assert "enables fp16 but train.precision is bf16" in _error(tmp_path, {"fp16": {"enabled": True}}, "bf16")
    assert "zero_optimization.stage:" in _error(tmp_path, {"zero_optimization": {"stage": 7}})
    assert "zero_optimization.bogus: Extra inputs" in _error(tmp_path, {"zero_optimization": {"stage": 1, "bogus": 1}})


def test_missing_deepspeed_is_one_clear_line(monkeypatch):
    from fastleading.engine.distributed import require_deepspeed

    monkeypatch.setitem(sys.modules, "deepspeed", None)  # makes `import deepspeed` raise ImportError
    with pytest.raises(FastleadingError, match=r"--deepspeed needs the deepspeed package: "
                                               r"pip install 'fastleading\[deepspeed\]'"):
        require_deepspeed()


# -- training through the engine (subprocess) -------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("zero")
    # No launcher variables: like a plain `fastleading train --deepspeed`, initialize_engine must
    # start its own one-rank gloo group (and pick DeepSpeed's CPU accelerator) by itself.
    launcher = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "DS_ACCELERATOR")
    env = {**{k: v for k, v in os.environ.items() if k not in launcher}, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, __file__, str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return torch.load(out / "results.pt", weights_only=False)


@pytest.mark.parametrize("case", [c[0] for c in CASES])
def test_engine_matches_torch_adamw_and_resumes(trained, case):
    r = trained[case]
    bf16 = r["precision"] == "bf16"
    tol = dict(rtol=3e-2, atol=3e-2) if bf16 else dict(rtol=1e-5, atol=1e-6)
    ref, ds = torch.tensor(r["ref_loss"]), torch.tensor(r["ds_loss"])
    assert sum(ref[-2:]) < 0.8 * sum(ref[:2])  # it learns
    torch.testing.assert_close(ds, ref, **tol)
    torch.testing.assert_close(torch.tensor(r["ds_norm"]), torch.tensor(r["ref_norm"]), **tol)
    torch.testing.assert_close(torch.tensor(r["ds_lr"]), torch.tensor(r["ref_lr"]))
    # the no-gradient refresh encode of the (partitioned) engine equals the reference's
    torch.testing.assert_close(r["ds_refresh"], r["ref_refresh"], **tol)
    # gathered full weights equal the reference's after training
    for k, v in r["ref_state"].items():
        torch.testing.assert_close(r["ds_state"][k].float(), v, **(tol if bf16 else dict(rtol=1e-4, atol=1e-5)))
    if r["stage"] == 3:
        assert r["partitioned"], "ZeRO-3 left the parameters whole: the test would not exercise gathering"
    # resume: a differently initialised engine loaded from step SAVE_AT continues identically
    assert r["resumed_client_state"] == {"step": SAVE_AT, "note": "bank etc."}
    assert r["resumed_rank_state"] == {"rank": 0}
    torch.testing.assert_close(torch.tensor(r["resumed_loss"]), ds[SAVE_AT:], rtol=1e-6, atol=1e-6)
    # every boundary saved; all but the newest two pruned; 'latest' named the newest
    assert r["tags_left"] == [f"step{SAVE_AT}", f"step{MICRO_STEPS}"]
    assert r["latest_after_run"] == f"step{MICRO_STEPS}"


# -- resume safety (subprocess) -------------------------------------------------------------

TAMPER_WORKER = """
import json, shutil, sys
from pathlib import Path
import torch
sys.path.insert(0, {tests!r})
from test_checkpoint import SideEffect
from test_train_distributed import ds_config, tiny_model_without_dropout
from fastleading.errors import FastleadingError
from fastleading.trainer.loop import train

out = Path({out!r})
model = tiny_model_without_dropout(out / "model")
cfg = lambda steps: ds_config(model, out / "cache", "train.deepspeed=zero1", f"train.max_steps={{steps}}")
train(cfg(2), out / "clean", quiet=True)
result = {{"files": sorted(p.name for p in (out / "clean" / "deepspeed" / "step2").iterdir())}}
for victim in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"):
    run = out / victim
    shutil.copytree(out / "clean", run)
    path = run / "deepspeed" / "step2" / victim
    state = torch.load(path, weights_only=False)  # the test's own file: trusted
    state["note"] = SideEffect(out / ("ran-" + victim))
    torch.save(state, path)
    try:
        train(cfg(4), run, resume=True, quiet=True)
        result[victim] = "resumed"
    except FastleadingError as e:
        result[victim] = str(e)
    result["ran-" + victim] = (out / ("ran-" + victim)).exists()
print("RESULT " + json.dumps(result))
"""


def run_worker(worker: str, out: Path) -> dict:
    """Run a worker script (its ``tests`` and ``out`` filled in) in a process without launcher
    variables, as a plain `fastleading train --deepspeed`; the dict it printed as ``RESULT``."""
    launcher = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "DS_ACCELERATOR")
    env = {**{k: v for k, v in os.environ.items() if k not in launcher}, "OMP_NUM_THREADS": "1"}
    code = worker.format(tests=str(Path(__file__).parent), out=str(out))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    (line,) = [text for text in proc.stdout.splitlines() if text.startswith("RESULT ")]
    return json.loads(line[len("RESULT "):])


def test_resume_refuses_a_deepspeed_file_that_carries_code_before_deepspeed_reads_it(tmp_path):
    """DeepSpeed loads its checkpoint files with torch.load(weights_only=False): a run folder whose
    engine files carry an object with a __reduce__ side effect ran it on --resume. A real zero1
    run folder, one of the two files DeepSpeed reads replaced by a copy carrying such an object."""
    result = run_worker(TAMPER_WORKER, tmp_path)
    assert {"mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"} <= set(result["files"])
    for victim in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt"):
        assert result["ran-" + victim] is False, f"resuming ran the code pickled into {victim}"
        message = result[victim]
        assert message.startswith(str(tmp_path / victim / "deepspeed" / "step2" / victim) + ": refused"), message
        assert "io.open" in message and "\n" not in message


UNSAFE_LOAD_WORKER = """
import json, shutil, sys
from pathlib import Path
import torch
sys.path.insert(0, {tests!r})
from test_checkpoint import SideEffect
from test_train_distributed import ds_config, tiny_model_without_dropout
from fastleading.engine import zero
from fastleading.errors import FastleadingError
from fastleading.trainer.loop import train

out = Path({out!r})
model = tiny_model_without_dropout(out / "model")
universal = out / "universal.json"
universal.write_text(json.dumps({{"zero_optimization": {{"stage": 1}}, "checkpoint": {{"load_universal": True}}}}))
cfg = lambda spec, steps: ds_config(model, out / "cache", f"train.deepspeed={{spec}}", f"train.max_steps={{steps}}")
result = {{}}

def resume(name, spec):
    try:
        train(cfg(spec, 4), out / name, resume=True, quiet=True)
        result[name] = "resumed"
    except FastleadingError as e:
        result[name] = str(e)
    except Exception as e:  # noqa: BLE001 (the old code: DeepSpeed failed on the payload after running it)
        result[name] = "raised " + type(e).__name__
    result["ran-" + name] = (out / ("ran-" + name)).exists()

# 1. load_universal: DeepSpeed reads stepN/zero/optimizer_state.pt; zero/ is a symlink (rglob skipped it)
train(cfg(universal, 2), out / "symlinked", quiet=True)
elsewhere = out / "elsewhere" / "zero"
elsewhere.mkdir(parents=True)
torch.save({{"note": SideEffect(out / "ran-symlinked")}}, elsewhere / "optimizer_state.pt")
(out / "symlinked" / "deepspeed" / "step2" / "zero").symlink_to(elsewhere, target_is_directory=True)
resume("symlinked", universal)

# 2. a file swapped after any check, before DeepSpeed reads it
train(cfg("zero1", 2), out / "swapped", quiet=True)
victim = out / "swapped" / "deepspeed" / "step2" / "mp_rank_00_model_states.pt"
state = torch.load(victim, weights_only=False)  # the test's own file: trusted
state["note"] = SideEffect(out / "ran-swapped")
checked = zero.verify_engine_files

def check_then_swap(tag_dir):
    checked(tag_dir)
    torch.save(state, victim)

zero.verify_engine_files = check_then_swap
resume("swapped", "zero1")
print("RESULT " + json.dumps(result))
"""


def test_resume_never_unpickles_code_deepspeed_reads_symlinked_swapped_or_universal(tmp_path):
    """The pre-check walked the tag folder with rglob("*.pt"), which does not enter a symlinked
    folder (Python 3.11), and a file replaced after it was read as it was: in both cases, with
    load_universal too, DeepSpeed's torch.load(weights_only=False) ran the payload. Every load
    DeepSpeed makes during a resume must itself be weights-only."""
    result = run_worker(UNSAFE_LOAD_WORKER, tmp_path)
    for name in ("swapped", "symlinked"):
        assert result["ran-" + name] is False, f"resuming the {name} run ran the code pickled into it"
        message = result[name]
        assert "refused" in message and "io.open" in message and "\n" not in message, message
        assert message.startswith(str(tmp_path / name / "deepspeed" / "step2")), message


def test_verify_engine_files_takes_what_deepspeed_stores_and_refuses_a_foreign_tag(tmp_path):
    """The allowlist holds what a ZeRO optimizer file holds; a 'latest' that names a folder
    outside the run is refused before anything is read."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    from fastleading.engine.zero import load_engine_checkpoint, verify_engine_files

    tag = tmp_path / "deepspeed" / "step3"
    tag.mkdir(parents=True)
    torch.save({"optimizer_state_dict": {"loss_scaler": LossScaler(1.0), "zero_stage": ZeroStageEnum(2),
                                         "fragment": fragment_address(numel=4, start=0)}}, tag / "optim_states.pt")
    verify_engine_files(tag)
    (tmp_path / "deepspeed" / "latest").write_text("../../elsewhere")
    with pytest.raises(FastleadingError, match="latest: names '../../elsewhere', expected a tag step<N>"):
        load_engine_checkpoint(None, tmp_path / "deepspeed")


# -- the worker -------------------------------------------------------------------------------

def _tiny_encoder(seed: int):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, max_position_embeddings=32, hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0))


def _model(seed: int):
    """What the engine holds in the trainer: the encoder and the head (no bank, no histories)."""
    from fastleading.engine.zero import EncoderHead

    encoder = _tiny_encoder(seed)
    torch.manual_seed(seed + 1)
    return EncoderHead(encoder, torch.nn.Linear(16, 3))


def _optim(model, ds_config: dict | None = None):
    """AdamW with the LM and head learning rates (the trainer's groups) and a decaying schedule;
    through build_optimizer when a DeepSpeed config is given (torch's AdamW on CPU)."""
    from fastleading.engine.zero import build_optimizer

    groups = [{"params": list(model.encoder.parameters()), "lr": 3e-3},
              {"params": list(model.head.parameters()), "lr": 3e-2}]
    if ds_config is None:
        opt = torch.optim.AdamW(groups, weight_decay=0.01)
    else:
        opt = build_optimizer(groups, 0.01, ds_config, torch.device("cpu"))
        assert type(opt) is torch.optim.AdamW and [g["lr"] for g in opt.param_groups] == [3e-3, 3e-2]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return opt, sched


def _data():
    """Per micro step (target tokens [4, 8], labels [4], refresh tokens [5, 8]); the targets
    cycle through two batches (one optimizer step's worth), so the loss must go down."""
    g = torch.Generator().manual_seed(7)
    batches = [(torch.randint(1, 64, (4, 8), generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(2)]
    return [(*batches[i % 2], torch.randint(1, 64, (5, 8), generator=g)) for i in range(MICRO_STEPS)]


def _embed(encoder, tokens):
    """CLS pooling, as LMEncoder does for BERT."""
    return encoder(input_ids=tokens).last_hidden_state[:, 0]


def _reference(data) -> dict:
    model = _model(0)
    opt, sched = _optim(model)
    losses, norms, lrs, refresh = [], [], [], []
    for i, (tokens, labels, refresh_tokens) in enumerate(data):
        with torch.inference_mode():
            refresh.append(_embed(model.encoder, refresh_tokens).float().clone())
        loss = torch.nn.functional.cross_entropy(model.head(_embed(model, tokens)).float(), labels)
        (loss / KW["grad_accum"]).backward()
        losses.append(float(loss.detach()))
        if (i + 1) % KW["grad_accum"] == 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), KW["grad_clip"])))
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            lrs.append([g["lr"] for g in opt.param_groups])
    return {"ref_loss": losses, "ref_norm": norms, "ref_lr": lrs, "ref_refresh": torch.stack(refresh),
            "ref_state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def _train(engine, model, data, start: int, ckpt: Path | None) -> dict:
    from fastleading.engine.zero import engine_backward, engine_step, learning_rates, save_engine_checkpoint

    losses, norms, lrs, refresh = [], [], [], []
    for i in range(start, len(data)):
        tokens, labels, refresh_tokens = data[i]
        with torch.inference_mode():  # pipeline 2: the partitioned encoder gathers layer by layer
            refresh.append(_embed(model.encoder, refresh_tokens).float().clone())
        logits = model.head(_embed(engine, tokens))  # pipeline 1: the encode with gradient via the engine
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        engine_backward(engine, loss)
        result = engine_step(engine)
        losses.append(float(loss.detach()))
        if (i + 1) % KW["grad_accum"] == 0:
            norm, skipped = result
            assert not skipped
            norms.append(norm)
            lrs.append(learning_rates(engine))
            if ckpt is not None:
                save_engine_checkpoint(engine, ckpt, i + 1, {"step": i + 1, "note": "bank etc."}, {"rank": 0},
                                       keep=2)
        else:
            assert result is None
    return {"loss": losses, "norm": norms, "lr": lrs, "refresh": torch.stack(refresh)}


def _worker(out: Path) -> None:
    from fastleading.engine.zero import full_state_dict, initialize_engine, load_engine_checkpoint

    data = _data()
    reference = _reference(data)
    results = {}
    for name, preset, precision in CASES:
        cfg = deepspeed_config(preset, precision=precision, **KW)
        if zero_stage(cfg) == 3:
            cfg["zero_optimization"]["stage3_param_persistence_threshold"] = 0
        model = _model(0)
        opt, sched = _optim(model, cfg)
        engine = initialize_engine(model, opt, sched, cfg, torch.device("cpu"))
        partitioned = all(p.numel() == 0 for p in model.parameters())
        ckpt = out / name
        run = _train(engine, model, data, 0, ckpt)
        state = full_state_dict(engine)

        model2 = _model(123)  # different weights: the checkpoint must overwrite them
        opt2, sched2 = _optim(model2, cfg)
        engine2 = initialize_engine(model2, opt2, sched2, cfg, torch.device("cpu"))
        latest_after_run = (ckpt / "latest").read_text()
        (ckpt / "latest").write_text(f"step{SAVE_AT}")  # resume from the middle of the run
        client, rank_state = load_engine_checkpoint(engine2, ckpt)
        resumed = _train(engine2, model2, data, SAVE_AT, None)
        results[name] = {
            **reference, "stage": zero_stage(cfg), "precision": precision, "partitioned": partitioned,
            "ds_loss": run["loss"], "ds_norm": run["norm"], "ds_lr": run["lr"], "ds_refresh": run["refresh"],
            "ds_state": state, "resumed_loss": resumed["loss"],
            "resumed_client_state": {k: client[k] for k in ("step", "note")}, "resumed_rank_state": rank_state,
            "tags_left": sorted(p.name for p in ckpt.glob("step*")), "latest_after_run": latest_after_run,
        }
        print(f"{name}: ok", flush=True)
    torch.save(results, out / "results.pt")


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
