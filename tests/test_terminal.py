"""What a user sees: the README's quickstart on a custom dataset redirected to files prints no
progress-bar codes and no third-party warnings; --quiet and quiet=True leave nothing but errors
and results; on a terminal the training bar shows each evaluation as it happens; a study shows
its runs' progress."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from custom_graph import train_args, write_custom_graph
from tiny_models import save_tiny_model

from fastleading.cli import main
from fastleading.commands.methods import train_method
from fastleading.config import Config, apply_overrides

# progress-bar control codes and what the libraries print on their own
NOISE = ("\r", "\x1b[", "[WARNING]", "Setting accelerator", "Loading weights", "Writing model shards", "it/s",
         "Warning:")
# an evaluation line shows the evaluation (it repeated the last logged loss, steps old)
PROGRESS_LINE = re.compile(r"^leading: step \d+/6, epoch ([12])/2 evaluated: valid [01]\.\d{4}$")
# what is trained, on what, into which folder (there was no start line)
START_LINE = re.compile(r"^leading on custom: 60 nodes, split given: 36 train / 12 valid / 12 test nodes; "
                        r"run folder (.+)$")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("terminal")
    ids = write_custom_graph(root / "data")
    model = save_tiny_model(root / "bert", "bert", hidden=16, layers=1)
    return root, model, ids


def env(root: Path) -> dict:
    # the cache of any dataset a command would default to stays in the test's folder
    return {**os.environ, "PYTHONUNBUFFERED": "1", "FASTLEADING_CACHE": str(root / "default-cache")}


def cli(root: Path, name: str, *args: str) -> tuple[int, str, str]:
    """Run ``fastleading ARGS`` in a subprocess, stdout and stderr redirected to files as a user's
    ``> out.txt 2> err.txt``; (exit code, stdout, stderr)."""
    out, err = root / f"{name}.out", root / f"{name}.err"
    with open(out, "w") as o, open(err, "w") as e:
        code = subprocess.run([sys.executable, "-m", "fastleading.cli", *args], stdout=o, stderr=e, env=env(root),
                              timeout=600).returncode
    return code, out.read_text(), err.read_text()


def assert_clean(*texts: str) -> None:
    for text in texts:
        for noise in NOISE:
            assert noise not in text, (noise, text)


def test_a_redirected_quickstart_prints_no_bars_and_no_library_noise(setup, tmp_path):
    root, model, ids = setup
    run = tmp_path / "run"
    code, out, err = cli(tmp_path, "train", "train", "--out", str(run),
                         *train_args(root / "data", tmp_path / "cache", model))
    assert code == 0, err
    assert_clean(out, err)  # failed before: \r and cursor-up codes of the nested bars, "Loading weights"
    lines = err.splitlines()
    assert START_LINE.match(lines[0]).group(1) == str(run), lines[0]
    assert [PROGRESS_LINE.match(line).group(1) for line in lines[1:]] == ["1", "2"]  # one line per evaluation
    assert out.splitlines() == [out.splitlines()[0], f"summary: {run / 'summary.json'}"]

    code, out, err = cli(tmp_path, "export-lm", "export", "--run", str(run), "--lm", str(run / "lm"))
    assert code == 0, err
    assert_clean(out, err)  # failed before: DeepSpeed's "[WARNING] ... Setting accelerator to CPU" on stdout
    assert (out.splitlines(), err) == ([f"lm: {run / 'lm'}"], "")
    code, out, err = cli(tmp_path, "export", "export", "--quiet", "--run", str(run), "--out", str(run / "emb.npy"))
    assert code == 0, err
    assert (out.splitlines(), err) == ([f"embeddings: {run / 'emb.npy'}"], "")  # --quiet: the result, no noise
    assert (run / "emb.node_ids.csv").read_text() == "id\n" + "".join(f"{i}\n" for i in ids)  # rows follow nodes.csv

    # the run's dataset, root, split and max length come from its config.json (failed before: the defaults)
    code, out, err = cli(tmp_path, "downstream", "downstream", "--embeddings", str(run / "emb.npy"), "--gnn", "mlp",
                         "train.downstream_epochs=3")
    assert code == 0, err
    result = json.loads(out)
    assert (result["dataset"], result["split"], result["gnn"]) == ("custom", "given", "mlp")
    assert err.splitlines() == [f"fastleading: settings of the run in {run} (its config.json); --run or flags "
                                "change them"]


def test_train_method_quiet_prints_nothing(setup, tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    root, model, _ = setup
    cfg = apply_overrides(Config(), ["data.dataset=custom", f"data.root={root / 'data'}", f"model.name={model}",
                                     f"data.cache_dir={tmp_path / 'cache'}", "data.max_length=16", "train.epochs=1",
                                     "train.device=cpu", "train.batch_size=16", "model.head_hidden=16"])
    had_bars = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()  # as in a fresh process (an earlier --quiet must not decide this test)
    try:
        capfd.readouterr()
        train_method(cfg, tmp_path / "run", quiet=True)
        out, err = capfd.readouterr()
        assert (out, err) == ("", "")  # failed before: transformers' "Loading weights" bar
        assert hf_logging.is_progress_bar_enabled()  # given back after the call
    finally:
        (hf_logging.enable_progress_bar if had_bars else hf_logging.disable_progress_bar)()


def test_the_training_bar_shows_each_evaluation_as_it_happens(setup, tmp_path):
    root, model, _ = setup
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))  # a 200-column terminal
    args = [sys.executable, "-m", "fastleading.cli", "train", "--out", str(tmp_path / "run"),
            *train_args(root / "data", tmp_path / "cache", model, "train.log_every=1000")]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, env=env(tmp_path))
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=600) == 0
    screen = b"".join(chunks).decode(errors="replace")
    # failed before: the bar's postfix was set at logging points only (step 1 here): valid=nan throughout
    history = json.loads((tmp_path / "run" / "summary.json").read_text())["history"]
    for h in history:
        assert f"valid={h['valid']:.3f}" in screen, screen[-2000:]


def test_a_study_shows_each_runs_progress_when_redirected(setup, tmp_path, capfd):
    root, model, _ = setup
    args = ["study", "--dataset", "custom", "--methods", "leading,shallow", "--seeds", "1", "--downstream", "none",
            "--out", str(tmp_path / "study"), "--model", model, "--epochs", "2", "--device", "cpu",
            "--override", f"data.root={root / 'data'}", f"data.cache_dir={tmp_path / 'cache'}", "data.max_length=16",
            "train.batch_size=16", "train.eval_batch_size=128", "model.head_hidden=16", "train.downstream_epochs=5"]
    capfd.readouterr()
    assert main(args) == 0
    out, err = capfd.readouterr()
    assert_clean(out, err)
    runs = tmp_path / "study" / "runs"
    lines = out.splitlines()
    # failed before: no line until a run had finished, and the runs trained silently
    assert f"[1/2] seed 0 given leading: training in {runs / 'leading-given-seed0'}" in lines
    assert f"[2/2] seed 0 given shallow: training in {runs / 'shallow-given-seed0'}" in lines
    assert [line[:26] for line in lines if "(trained" in line] == ["[1/2] seed 0 given leading",
                                                                   "[2/2] seed 0 given shallow"]
    err_lines = err.splitlines()
    assert START_LINE.match(err_lines[0]).group(1) == str(runs / "leading-given-seed0"), err_lines[0]
    # the default head warm-up (train.downstream_epochs=5 epochs, full batch): its start and end lines
    assert err_lines[1] == "leading: head warm-up, 5 epochs of the head on the frozen LM's embeddings (full batch)"
    assert err_lines[2].startswith("leading: head warm-up done: 5 epochs in "), err_lines[2]
    assert [PROGRESS_LINE.match(line).group(1) for line in err_lines[3:]] == ["1", "2"]


WARMUP_EPOCH_LINE = re.compile(r"^leading: head warm-up epoch (\d)/3: valid [01]\.\d{4}, best [01]\.\d{4} "
                               r"\(epoch \d\)$")
WARMUP_DONE_LINE = re.compile(r"^leading: head warm-up done: 3 epochs in \d+ s; the kept head \(epoch 0 of the "
                              r"run\): valid ([01]\.\d{4})$")


def test_the_head_warmup_shows_its_progress_in_plain_lines_when_redirected(setup, tmp_path, capfd, monkeypatch):
    """The head warm-up was silent (95-155 s on small data): no line between the start line and
    the first step's. Redirected, it now says when it starts, how its epochs go (at most one line
    a minute; every epoch here) and what it keeps, in plain lines."""
    from fastleading.trainer import display

    root, model, _ = setup
    monkeypatch.setattr(display, "PLAIN_SECONDS", 0.0)  # a line at every chance, not one a minute
    run = tmp_path / "run"
    capfd.readouterr()
    assert main(["train", "--out", str(run), *train_args(root / "data", tmp_path / "cache", model, "--epochs", "1",
                                                         "train.head_warmup_epochs=3")]) == 0
    out, err = capfd.readouterr()
    assert_clean(out, err)
    lines = err.splitlines()
    assert START_LINE.match(lines[0]), lines[0]
    assert lines[1] == "leading: head warm-up, 3 epochs of the head on the frozen LM's embeddings (full batch)"
    assert [WARMUP_EPOCH_LINE.match(line).group(1) for line in lines[2:5]] == ["1", "2", "3"], lines
    kept = json.loads((run / "summary.json").read_text())["history"][0]
    assert WARMUP_DONE_LINE.match(lines[5]).group(1) == f"{kept['valid']:.4f}" and kept["epoch"] == 0
    assert lines[6:] and all(line.startswith("leading: step ") for line in lines[6:]), lines[6:]


def test_the_head_warmup_bar_shows_the_last_and_the_best_value_on_a_terminal(monkeypatch):
    import io

    from fastleading.trainer.display import WarmupDisplay

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    shown = WarmupDisplay("leading", 3, "full batch", quiet=False)
    for epoch, valid in ((1, 0.5), (2, 0.7), (3, 0.6)):
        shown.evaluated(epoch, {"valid": valid})
    shown.close({"valid": 0.7})
    text = terminal.getvalue()
    assert "leading head warm-up" in text and "3/3" in text and "valid=0.600, best=0.700" in text, text
    assert "epochs of the head" not in text  # a bar, no plain lines
