"""The command line as a new user meets it: help that lists what applies, arguments checked
before anything loads, `info` that writes nothing and says which token length it shows, and a
notice when a left-out --max-length tokenizes at another length than the one prepared."""

from __future__ import annotations

import pytest
from custom_graph import custom_graph_and_model, data_args

from fastleading.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return custom_graph_and_model(tmp_path_factory.mktemp("cli"))


def help_text(capsys, *args: str) -> str:
    with pytest.raises(SystemExit):
        main([*args, "--help"])
    return capsys.readouterr().out


def test_help_lists_what_applies_and_has_no_markup(capsys):
    top = help_text(capsys)
    assert "``" not in top and "fastleading" in top  # failed before: "The ``fastleading`` command line."
    for command in ("prepare", "info"):
        text = help_text(capsys, command)
        for flag in ("--dataset", "--root", "--max-length", "--model", "--cache-dir"):
            assert flag in text, (command, flag)
        for flag in ("--method", "--deepspeed", "--gnn", "--epochs", "--batch-size", "--precision"):
            assert flag not in text, (command, flag)  # failed before: every training flag was listed
    train = help_text(capsys, "train")
    assert "--overwrite" in train and "--method" in train


def fake_run(folder, model: str, *files: str):
    """A run folder of an LM method with only a config.json and ``files`` (empty)."""
    from fastleading.config import Config, apply_overrides

    folder.mkdir(parents=True)
    cfg = apply_overrides(Config(), [f"model.name={model}", "data.dataset=custom", f"data.root={folder}"])
    (folder / "config.json").write_text(cfg.to_json())
    for name in files:
        (folder / name).write_bytes(b"")


def test_export_checks_its_arguments_before_loading_anything(setup, tmp_path, monkeypatch, capsys):
    root, model = setup

    def loads(*args, **kwargs):
        raise AssertionError("a dataset or a model was loaded before the arguments were checked")

    import fastleading.data
    import fastleading.models.lm

    monkeypatch.setattr(fastleading.data, "prepare", loads)
    monkeypatch.setattr(fastleading.data, "load_dataset", loads)
    monkeypatch.setattr(fastleading.models.lm, "LMEncoder", loads)
    run = tmp_path / "run"
    fake_run(run, model, "checkpoint.pt")
    for args, fragments in (
            (["--out", str(tmp_path / "foo")], ["foo: embeddings are written as .npy"]),
            (["--out", str(run / "emb.npy")], ["best.pt: not found", "checkpoint.pt is there", "--resume"]),
            (["--lm", str(run / "lm")], ["best.pt: not found", "checkpoint.pt is there"]),
            (["--out", str(run / "emb.npy"), "--lm", str(run)], [f"{run}: folder exists and is not empty"])):
        assert main(["export", "--run", str(run), *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and all(f in err[0] for f in fragments), (args, err)
    (run / "checkpoint.pt").unlink()
    assert main(["export", "--run", str(run), "--out", str(run / "emb.npy")]) == 2
    assert "checkpoint.pt" not in capsys.readouterr().err  # said only where it is there


def test_info_writes_no_cache_and_says_which_token_length_it_shows(setup, tmp_path, capsys):
    root, model = setup
    cache = tmp_path / "cache"
    args = [*data_args(root / "data", cache, model)]
    no_length = [a for a in args if a not in ("--max-length", "16")]
    assert main(["info", *no_length]) == 0
    text = capsys.readouterr().out
    assert not cache.exists()  # failed before: the graph and a token cache at max_length 64 were written
    assert "not cached" in text and "max_length=64" in text
    assert "features     " in text and "per node (fixed features, the input of method shallow)" in text
    assert main(["prepare", *args]) == 0  # at max_length 16
    capsys.readouterr()
    written = sorted(p.relative_to(cache) for p in cache.rglob("*"))
    assert main(["info", *no_length]) == 0
    text = capsys.readouterr().out
    assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == written
    assert "also prepared at max_length 16" in text and "max_length=64 padding=right (counted now" in text
    assert main(["info", *args]) == 0
    assert "max_length=16 padding=right\n" in capsys.readouterr().out  # the prepared cache, read


def test_a_left_out_max_length_says_which_length_it_tokenizes_at(setup, tmp_path, capsys):
    root, model = setup
    args = data_args(root / "data", tmp_path / "cache", model)
    assert main(["prepare", *args]) == 0
    assert "fastleading:" not in capsys.readouterr().err  # the first length: nothing to say
    no_length = [a for a in args if a not in ("--max-length", "16")]
    assert main(["prepare", *no_length]) == 0
    err = capsys.readouterr().err
    # failed before: a new cache at 64 without a word
    assert "tokenizing custom at data.max_length=64 into a new cache; it is prepared at 16" in err
    assert main(["prepare", "--quiet", *args]) == 0
    assert capsys.readouterr().err == ""



def test_the_custom_data_page_example_runs_as_shown(tmp_path, capsys):
    """docs/custom-data.md's example folder, read by `fastleading info`, prints what the page shows."""
    import re
    from pathlib import Path

    page = (Path(__file__).parents[1] / "docs" / "custom-data.md").read_text()
    blocks = dict(re.findall(r'```\w+ title="([^"]+)"\n(.*?)```', page, re.S))
    for name in ("nodes.csv", "edges.csv", "classes.txt"):
        (tmp_path / "mydata").mkdir(exist_ok=True)
        (tmp_path / "mydata" / name).write_text(blocks[name])
    command = "fastleading info --dataset custom --root mydata"
    assert main([*command.split()[1:-1], str(tmp_path / "mydata"), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert capsys.readouterr().out == blocks[command]
    assert not (tmp_path / "cache").exists()


def test_overrides_may_stand_on_both_sides_of_a_flag(capsys):
    """`info data.synthetic_nodes=50 --dataset synthetic data.synthetic_classes=4` was refused as
    "unrecognized arguments: data.synthetic_classes=4", which reads like an unknown key."""
    assert main(["info", "data.synthetic_nodes=50", "--dataset", "synthetic", "data.synthetic_classes=4",
                 "--max-length", "16", "data.synthetic_words=5"]) == 0
    out = capsys.readouterr().out
    assert "nodes        50" in out and "classes      4:" in out and "max_length=16" in out
    with pytest.raises(SystemExit) as e:  # an unknown flag is still refused
        main(["info", "data.synthetic_nodes=50", "--bogus", "1"])
    assert e.value.code == 2 and "unrecognized arguments: --bogus 1" in capsys.readouterr().err


def test_version(capsys):
    import fastleading

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"fastleading {fastleading.__version__}"


def test_output_into_a_closed_pipe_ends_without_a_traceback():
    """`fastleading info --list | head -1`: the reader leaves early; this ended in a
    BrokenPipeError traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "fastleading.cli", "info", "--list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    assert proc.returncode == 141  # 128 + SIGPIPE, as `yes | head -1` ends


def test_the_final_line_says_when_the_best_epoch_is_the_head_warm_up():
    """A run whose best epoch was the warm-up's printed its scores as if fine-tuning had made
    them: the LM it exports is then the frozen one."""
    from pathlib import Path

    from fastleading.cli import result_lines

    summary = {"method": "leading", "dataset": "citeseer-tag", "best_valid_acc": 0.7, "test_acc": 0.68,
               "best_epoch": 0, "head_warmup_epochs": 200}
    lines = result_lines(summary, Path("runs/x"))
    assert lines[0] == "leading on citeseer-tag: best valid 0.7000, test 0.6800"
    assert "head warm-up on the frozen LM" in lines[1] and "pretrained LM unchanged" in lines[1]
    assert lines[2] == f"summary: {Path('runs/x') / 'summary.json'}"
    assert len(result_lines({**summary, "best_epoch": 3}, Path("runs/x"))) == 2
    assert len(result_lines({**summary, "head_warmup_epochs": 0}, Path("runs/x"))) == 2


def test_an_unknown_model_fails_fast_in_one_line(tmp_path):
    """An unknown --model retried the Hub for 46 s and printed 22 lines of warnings before its
    one-line error (offline); it is one line, before any download is tried. A fresh process
    without HF_HUB_OFFLINE (the tests set it), as a new user's."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["FASTLEADING_CACHE"] = str(tmp_path / "cache")
    proc = subprocess.run([sys.executable, "-m", "fastleading.cli", "info", "--dataset", "synthetic",
                           "data.synthetic_nodes=20", "--model", "no-such-org/no-such-model-xyz"], env=env,
                          capture_output=True, text=True, timeout=300)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, err
    assert err[0].startswith("fastleading: error: model 'no-such-org/no-such-model-xyz': not a local folder"), err
