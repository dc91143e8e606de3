"""A training run folder: the files `finally train` writes there, and what a new run may do."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from finally_cli.errors import ConfigError
from finally_cli.training.checkpoint import STEP_NAME

log = logging.getLogger(__name__)

# Everything a run writes, by name; --overwrite removes these and nothing else.
RUN_FILES = (
    "config.json",
    "model_config.json",
    "lmos_features.txt",
    "metrics.jsonl",
    "validation.jsonl",
)
LOGS = ("metrics.jsonl", "validation.jsonl")
CHECKPOINT_FILE_SUFFIXES = (".safetensors", ".json")
BEST_FILES = ("config.json", "model.safetensors", "README.md")  # hub.save_model's
TENSORBOARD_FILES = "events.out.tfevents.*"


def previous_run(run_dir: Path) -> list[str]:
    """The run files and folders already in `run_dir` (empty for a fresh folder)."""
    names = [name for name in RUN_FILES if (run_dir / name).is_file()]
    names += [name for name in ("checkpoints", "best", "tensorboard") if (run_dir / name).is_dir()]
    return names


def check_new_run(run_dir: Path, overwrite: bool) -> list[str]:
    """Refuse to start a run over a previous one unless `overwrite`; returns what is there.

    Raises:
        ConfigError: a previous run without `overwrite`, or a config.json that is not ours.
    """
    found = previous_run(run_dir)
    if not found:
        return found
    if not overwrite:
        raise ConfigError(
            f"{run_dir}: holds a previous run ({', '.join(found)}); pass --resume to continue "
            "it, --overwrite to start over (removes only the run's own files) or choose another "
            "--run-dir"
        )
    saved = run_dir / "config.json"
    if saved.is_file() and not _is_train_config(saved):
        raise ConfigError(
            f"{saved}: not a finally training config; --overwrite removes only a run's own "
            "files, choose another --run-dir"
        )
    return found


def _is_train_config(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"stage", "optim", "data", "loss"} <= set(data)


def remove_run_files(run_dir: Path) -> None:
    """Remove what a previous run wrote (by name); anything else in the folder stays."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    checkpoints = run_dir / "checkpoints"
    if checkpoints.is_dir():
        for folder in checkpoints.iterdir():
            name = folder.name.removesuffix(".tmp")
            if folder.is_dir() and STEP_NAME.fullmatch(name):
                _remove_files(folder, [p.name for p in folder.iterdir() if _ours(p)])
    _remove_files(checkpoints, [])
    _remove_files(run_dir / "best", BEST_FILES)
    tensorboard = run_dir / "tensorboard"
    if tensorboard.is_dir():
        _remove_files(tensorboard, [p.name for p in tensorboard.glob(TENSORBOARD_FILES)])
    log.info("%s: removed the previous run's files (--overwrite)", run_dir)


def _ours(path: Path) -> bool:
    return path.is_file() and path.suffix in CHECKPOINT_FILE_SUFFIXES


def _remove_files(folder: Path, names: list[str] | tuple[str, ...]) -> None:
    """Remove `names` from `folder`, then the folder itself when that left it empty."""
    if not folder.is_dir():
        return
    for name in names:
        (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:  # not empty: something that is not ours stays, and so does its folder
        pass


def truncate_logs(run_dir: Path, step: int) -> None:
    """Drop log rows past `step` (logged after the checkpoint a resume starts from) and any
    line a kill cut short, so the resumed run logs every step once. Rows a step has twice
    (resumes before this rule) keep the last: the one on the path that reached `step`."""
    for name in LOGS:
        path = run_dir / name
        if not path.is_file():
            continue
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        last = {_step_of(line): i for i, line in enumerate(lines)}
        kept = [
            line
            for i, line in enumerate(lines)
            if _step_of(line) is not None and _step_of(line) <= step and last[_step_of(line)] == i
        ]
        if len(kept) == len(lines):
            continue
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)
        log.info("%s: dropped %d rows past step %d", path, len(lines) - len(kept), step)


def _step_of(line: str) -> int | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    step = row.get("step") if isinstance(row, dict) else None
    return step if isinstance(step, int) else None
