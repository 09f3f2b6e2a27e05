"""A run folder on disk: what ``train`` writes there, and the rules for writing into one again.

A run folder holds ``config.json``, ``metrics.jsonl``, ``summary.json``, ``checkpoint.pt`` (or
DeepSpeed's ``deepspeed/``) and ``best.pt`` (:data:`RUN_FILES`). The rules
(:func:`prepare_run_folder`, called by :func:`fastleading.commands.methods.train_method` before anything
is built):

- **a new run never lands on an old one**: a folder holding any of :data:`RUN_FILES` is
  refused, unless the call resumes it or overwrites it;
- **overwrite** removes the old run's files first (and only those): a new run starts a new
  ``metrics.jsonl``, never appends to the old one;
- **resume** reads the run's own ``config.json``; the settings of :data:`RESUME_CHANGES` may
  differ in the call (more epochs extend a finished run; the learning-rate schedule follows the
  new ``train.epochs``, see :meth:`fastleading.trainer.optim.Optimization.follow_schedule`);
  any other difference is refused with one line naming the key. Nothing in the folder changes
  until the resumed run is under way (its checkpoint loaded, :func:`resume_run_folder`): then
  the changed ``config.json`` is written, and the old ``summary.json`` and the files made from
  the old best weights (:data:`STALE_ON_RESUME`) are removed; a resume that fails before
  leaves the run as it was. **overwrite** and a run that starts over also remove the tracker
  folders of the old run (:data:`DERIVED_FILES`), whose events would mix with the new run's. A finished run whose
  checkpoint is gone (``train.keep=best``, ``fastleading clean``) cannot be resumed; a run killed before its first
  checkpoint starts over.

Paths in ``config.json`` (:func:`start_run_folder`): ``data.root`` and ``data.cache_dir`` are
stored resolved (absolute; the default data root included), ``data.root`` relative to the run
folder when it lies inside it (the Python API's ``graph/``), so that a run folder works from
any directory and after being moved or copied; :func:`read_run_config` resolves a relative
``data.root`` against the run folder.

Keeping less on disk (:func:`apply_keep`): once a run has finished, the optimizer's moments
leave its ``checkpoint.pt`` (two thirds of it with AdamW) unless ``train.keep_optimizer_state``;
a resume that extends the run starts them afresh. :func:`drop_checkpoint` removes a finished
run's ``checkpoint.pt`` altogether, by ``train.keep=best`` when the run finishes or
``fastleading clean RUN`` afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from fastleading.config import Config, apply_overrides, from_dict
from fastleading.errors import FastleadingError
from fastleading.run.checkpoint import BEST, CHECKPOINT, drop_optimizer_state
from fastleading.run.io import atomic_write_text

DEEPSPEED_DIR = "deepspeed"  # the engine's checkpoint folder (fastleading.trainer.state.DEEPSPEED_DIR)
# every node's LM embedding under best.pt and what it was computed from, written by the first
# prediction (fastleading.commands.predict.TrainedRun.embeddings) and reused while best.pt is unchanged
BEST_EMBEDDINGS, BEST_EMBEDDINGS_META = "best-embeddings.npy", "best-embeddings.json"
# what `train` writes into a run folder (trace.json only with train.profile), and predict's cache
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", CHECKPOINT, BEST, DEEPSPEED_DIR, "trace.json",
             BEST_EMBEDDINGS, BEST_EMBEDDINGS_META)
# settings a resumed run may change: how long it trains, how often it evaluates, logs and
# checkpoints, what it keeps, where the dataset and its cache live; nothing that changes a step
RESUME_CHANGES = ("train.epochs", "train.max_steps", "train.patience", "train.eval_every", "train.log_every",
                  "train.checkpoint_every", "train.checkpoint_minutes", "train.profile", "train.keep",
                  "train.keep_optimizer_state", "train.report_to", "data.root", "data.cache_dir")
# files made from a run's best weights or its metrics by other commands (predict, plot) or by its
# trackers: stale once the run is replaced (--overwrite); the first three once it trains on (--resume)
DERIVED_FILES = ("predictions.csv", "link-scores.csv", "curves.png", "tensorboard", "wandb", "wandb-run-id")
STALE_ON_RESUME = DERIVED_FILES[:3]
# how each caller names the two ways past a folder that holds a run
OPTIONS = {"cli": ("--resume {run}", "--overwrite", "--out"), "api": ("resume=True", "overwrite=True", "out")}


def _is_rank0() -> bool:
    """Rank 0 of a launch (or a plain process): the one that writes run files. Read from the
    environment, so it holds before the process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def read_run_config(run_dir: Path, what: str = "not a run folder", overrides: Sequence[str] = ()) -> Config:
    """The run's ``config.json`` as a checked :class:`Config`, then ``overrides``
    (``section.key=value``: where the data is now, the device to use); ``what`` opens the error
    when the file is missing (``cannot resume``)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FastleadingError(f"{path}: {what} (expected the config.json of a run folder written by "
                               "`fastleading train`)")
    try:
        saved = json.loads(path.read_text(encoding="utf-8-sig"))
    except ValueError as e:
        raise FastleadingError(f"{path}: not valid JSON ({e})") from None
    cfg = from_dict(saved, source=str(path))
    root = cfg.data.root
    if root and not Path(root).expanduser().is_absolute() and (Path(run_dir) / root).exists():
        cfg.data.root = str((Path(run_dir) / root).resolve())  # a folder inside the run (moved with it)
    return apply_overrides(cfg, list(overrides)) if overrides else cfg


def require_run_device(run_dir: Path, cfg: Config) -> None:
    """Check that this machine has the device a command that reads the run uses,
    ``cfg.train.device`` (the run's, or the ``--device`` given; the caller resolves it with
    :func:`fastleading.engine.precision.resolve_device`). A GPU run on a machine without one is one
    line saying how to choose another."""
    import torch

    name = cfg.train.device
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FastleadingError(f"{run_dir}: the run's train.device is {name} (its config.json) and this machine has "
                               "no CUDA device; pass --device cpu (Python: fastleading.load_run(run, device='cpu'))")


def stored_config(run_dir: Path, cfg: Config, default_split: str = "") -> Config:
    """``cfg`` as ``config.json`` stores it (see the module docstring): ``data.cache_dir`` and
    ``data.root`` absolute (the default root resolved now), ``data.root`` relative to
    ``run_dir`` when inside it, and ``data.split`` the one the run uses (``default_split``, the
    dataset's, when ``cfg`` leaves it empty)."""
    from fastleading.config import default_data_root

    out = from_dict(cfg.to_dict())
    out.data.split = cfg.data.split or default_split
    root = Path(cfg.data.root or default_data_root()).expanduser().resolve()
    try:
        out.data.root = str(root.relative_to(Path(run_dir).resolve()))
    except ValueError:
        out.data.root = str(root)
    out.data.cache_dir = str(Path(cfg.data.cache_dir).expanduser().resolve())
    return out


def start_run_folder(run_dir: Path, cfg: Config, default_split: str = "") -> None:
    """A run starts from nothing in ``run_dir`` (new, overwritten, or resumed with no checkpoint
    to continue; rank 0): write its ``config.json`` (:func:`stored_config`) and remove the
    :data:`DERIVED_FILES` of an earlier attempt (its tracker events would mix with the new run's)."""
    run_dir = Path(run_dir)
    atomic_write_text(run_dir / "config.json", stored_config(run_dir, cfg, default_split).to_json())
    _remove_present(run_dir, DERIVED_FILES)


def note_exports(run_dir: Path, why: str) -> None:
    """Say which exports inside ``run_dir`` (``export --out`` files with their ``.run.json``,
    ``export --lm`` folders with their ``fastleading.json``) were made from the best weights the
    run had before; they stay (their names are yours), marked by those records."""
    from fastleading.run import console

    made = sorted([p.name[:-len(".run.json")] + ".npy" for p in run_dir.glob("*.run.json")]
                  + [p.parent.name + "/" for p in run_dir.glob("*/fastleading.json")])
    if made:
        console.notice(f"{run_dir}: {', '.join(made)} kept, made from the best.pt of the run before it {why} "
                       "(their records say which; `predict --embeddings` refuses such a file)")


def _remove_present(run_dir: Path, names) -> None:
    for name in names:
        if (run_dir / name).exists() or (run_dir / name).is_symlink():
            _remove(run_dir / name)


def settings_for_embeddings(run_dir: str | Path | None, embeddings: str | Path) -> Config | None:
    """The settings of the run an embeddings file comes from: ``run_dir``'s ``config.json``,
    else that of the run folder the file is in (when its folder holds a ``config.json``; said
    in a notice), else None (the defaults)."""
    if run_dir is not None:
        return read_run_config(Path(run_dir))
    folder = Path(embeddings).parent
    if not (folder / "config.json").is_file():
        return None
    from fastleading.run import console

    console.notice(f"settings of the run in {folder} (its config.json); --run or flags change them")
    return read_run_config(folder)


def provenance_path(embeddings: Path) -> Path:
    """Where an embeddings file says which run and ``best.pt`` made it: ``emb.npy`` -> ``emb.run.json``."""
    return Path(embeddings).with_suffix(".run.json")


def best_digest(run_dir: Path) -> str | None:
    """SHA-256 of ``run_dir/best.pt`` (None without one: the fixed-feature methods)."""
    import hashlib

    path = Path(run_dir) / BEST
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def provenance(run_dir: Path) -> str:
    """The text of :func:`provenance_path` for embeddings made now from ``run_dir``."""
    return json.dumps({"run": str(Path(run_dir).resolve()), "best_sha256": best_digest(run_dir)}, indent=2) + "\n"


def check_provenance(embeddings: Path, run_dir: Path) -> None:
    """Refuse, in one line, an embeddings file that was not made from ``run_dir``'s current
    ``best.pt`` (another run's, this run's before it trained on, or a file that does not say)."""
    embeddings, path = Path(embeddings), provenance_path(embeddings)
    export = f"write it with `fastleading export --run {run_dir} --out {embeddings}`"
    try:
        made = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FastleadingError(f"{embeddings}: no {path.name} beside it says which run's {BEST} made it; "
                               f"{export}") from None
    except (OSError, ValueError) as e:
        raise FastleadingError(f"{path}: cannot read it ({e}); {export}") from None
    if not isinstance(made, dict) or made.get("best_sha256") != best_digest(run_dir):
        source = made.get("run") if isinstance(made, dict) else None
        raise FastleadingError(f"{embeddings}: made from the {BEST} of {source}, which is not {Path(run_dir) / BEST} "
                               f"as it is now (another run, or this one before it trained on); {export}")


def held_run_files(run_dir: Path) -> list[str]:
    """The names of :data:`RUN_FILES` present in ``run_dir``."""
    return [name for name in RUN_FILES if (Path(run_dir) / name).exists()]


def require_best(run_dir: Path) -> Path:
    """``run_dir/best.pt``, or one line saying why it is not there (checked before any model loads)."""
    run_dir = Path(run_dir)
    path = run_dir / BEST
    if path.is_file():
        return path
    if has_checkpoint(run_dir):
        raise FastleadingError(f"{path}: not found; {CHECKPOINT} is there: the run stopped before its first "
                               f"evaluation, which writes {BEST} (continue it with `fastleading train --resume "
                               f"{run_dir}`)")
    raise FastleadingError(f"{path}: not found (expected the best weights of a run of an LM method written by "
                           "`fastleading train`)")


def has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / CHECKPOINT).is_file() or (run_dir / DEEPSPEED_DIR).is_dir()


def config_changes(saved: dict, wanted: dict, ignore: tuple[str, ...] = ()) -> list[tuple[str, object, object]]:
    """``[(section.key, saved value, wanted value)]`` for every key where two config dicts
    differ (``'<missing>'`` for a key one of them lacks), sorted; keys in ``ignore`` skipped."""
    changes = []
    for section in sorted(set(saved) | set(wanted)):
        a, b = saved.get(section, {}), wanted.get(section, {})
        for key in sorted(set(a) | set(b)):
            name = f"{section}.{key}"
            if name not in ignore and a.get(key, "<missing>") != b.get(key, "<missing>"):
                changes.append((name, a.get(key, "<missing>"), b.get(key, "<missing>")))
    return changes


def _remove(path: Path) -> int:
    """Delete a file or folder; the bytes it held."""
    if path.is_dir() and not path.is_symlink():
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        shutil.rmtree(path)
        return size
    size = path.lstat().st_size  # a link: the link itself
    path.unlink()
    return size


def refuse_held(run_dir: Path, resume: bool = False, overwrite: bool = False, caller: str = "cli") -> None:
    """Refuse ``resume`` with ``overwrite``, and a new run (neither) into a folder that holds
    one; the message names the options of ``caller`` (``cli`` flags or ``api`` parameters)."""
    run_dir = Path(run_dir)
    resume_opt, overwrite_opt, out_opt = (o.format(run=run_dir) for o in OPTIONS[caller])
    if resume and overwrite:
        raise FastleadingError(f"{run_dir}: give {resume_opt} (continue the run) or {overwrite_opt} (replace it), "
                               "not both")
    held = held_run_files(run_dir)
    if held and not (resume or overwrite):
        raise FastleadingError(f"{run_dir}: holds a run ({', '.join(held)}); pass {resume_opt} to continue it "
                               f"or {overwrite_opt} to replace it (or choose another {out_opt})")


def prepare_run_folder(run_dir: Path, cfg: Config, resume: bool = False, overwrite: bool = False,
                       checkpoints: bool = True, caller: str = "cli") -> None:
    """Apply the rules of the module docstring to ``run_dir`` before a run of ``cfg`` starts
    (``checkpoints``: whether the method writes any; the fixed-feature ones do not; ``caller``:
    see :func:`refuse_held`). Only rank 0 deletes anything; nothing is written."""
    run_dir = Path(run_dir)
    refuse_held(run_dir, resume, overwrite, caller)
    if resume:
        check_resume(run_dir, cfg, checkpoints)
        return
    held = held_run_files(run_dir)
    if held and _is_rank0():
        from fastleading.run.io import remove_stale_temp_files

        _remove_present(run_dir, held + list(DERIVED_FILES))
        remove_stale_temp_files(run_dir)
        note_exports(run_dir, "was replaced")


def check_resume(run_dir: Path, cfg: Config, checkpoints: bool = True) -> None:
    """Refuse a resume of ``run_dir`` with ``cfg`` that changes a setting outside
    :data:`RESUME_CHANGES`, of a method that keeps no checkpoint (``checkpoints`` False), or of
    a finished run without its checkpoint; otherwise say what changes. An empty
    ``data.split`` in ``cfg`` is set to the run's own. Writes nothing: the resumed run does,
    once under way (:func:`resume_run_folder`)."""
    from fastleading.run import console

    saved = read_run_config(run_dir, "cannot resume")
    if not cfg.data.split:  # left out (a config made anew, e.g. in Python): the run's own, as stored
        cfg.data.split = saved.data.split
    changes = config_changes(stored_config(run_dir, saved).to_dict(), stored_config(run_dir, cfg).to_dict())
    for key, old, new in changes:
        if key not in RESUME_CHANGES:
            raise FastleadingError(f"{run_dir}: cannot resume with {key}={new!r}: the run has {key}={old!r}, and a "
                                   f"resumed run may change only {', '.join(RESUME_CHANGES)} (start a new run with "
                                   "--out or --overwrite)")
    if not has_checkpoint(run_dir):
        if not checkpoints:
            raise FastleadingError(f"{run_dir}: method '{cfg.train.method}' trains in one go and keeps no checkpoint; "
                                   "there is nothing to resume (train it again with --overwrite)")
        if (run_dir / "summary.json").is_file():
            raise FastleadingError(f"{run_dir}: the run finished and its {CHECKPOINT} was removed (train.keep=best or "
                                   "`fastleading clean`); it cannot be resumed or extended")
        if _is_rank0():
            console.notice(f"{run_dir}: no checkpoint yet (the run stopped before its first one); starting it over")
    if changes and _is_rank0():
        console.notice(f"{run_dir}: resuming with " + ", ".join(f"{k} {old!r} -> {new!r}" for k, old, new in changes))


def resume_run_folder(run_dir: Path, cfg: Config, default_split: str = "") -> None:
    """Once a resumed run is under way (its checkpoint loaded; rank 0): write the changed
    ``config.json`` and remove the summary of the run under its old settings (the resumed run
    writes its own when it ends; until then it is unfinished and `fastleading clean` keeps its
    checkpoint), and the files :data:`STALE_ON_RESUME` made from its old best weights."""
    run_dir = Path(run_dir)
    text = stored_config(run_dir, cfg, default_split).to_json()
    path = run_dir / "config.json"
    if not path.is_file() or path.read_text(encoding="utf-8-sig") != text:
        atomic_write_text(path, text)
        (run_dir / "summary.json").unlink(missing_ok=True)
    _remove_present(run_dir, STALE_ON_RESUME)
    note_exports(run_dir, "trained on")


def drop_checkpoint(run_dir: Path) -> int:
    """Remove ``checkpoint.pt`` (and a DeepSpeed ``deepspeed/`` folder) of a finished run;
    the bytes freed. ``best.pt``, the metrics and the summary stay: export, downstream and plot
    work as before, but the run can no longer be resumed or extended. An unfinished run (no
    ``summary.json``) is refused: its checkpoint is what ``--resume`` continues from."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FastleadingError(f"{run_dir}: not a run folder (no config.json)")
    if not (run_dir / "summary.json").is_file():
        raise FastleadingError(f"{run_dir}: the run has not finished (no summary.json); its {CHECKPOINT} is what "
                               "`fastleading train --resume` continues from, so it stays")
    freed = 0
    for name in (CHECKPOINT, DEEPSPEED_DIR):
        if (run_dir / name).exists():
            freed += _remove(run_dir / name)
    return freed


def apply_keep(run_dir: Path, keep: str, keep_optimizer_state: bool = True, stopped: str = "") -> None:
    """What a run keeps once it has ended (rank 0): ``train.keep=best`` drops the checkpoint;
    otherwise, unless ``train.keep_optimizer_state``, the optimizer moments leave
    ``checkpoint.pt`` (:func:`fastleading.run.checkpoint.drop_optimizer_state`) when the run has
    finished (``stopped`` is ``epochs`` or ``patience``): a run that ``train.max_steps`` stopped
    keeps them, so that its resume continues exactly. DeepSpeed's ``deepspeed/`` folder is kept
    whole (its optimizer shards are the engine's)."""
    if not _is_rank0():
        return
    if keep == "best":
        drop_checkpoint(run_dir)
    elif not keep_optimizer_state and stopped in ("epochs", "patience") and (run_dir / CHECKPOINT).is_file():
        drop_optimizer_state(run_dir / CHECKPOINT)
