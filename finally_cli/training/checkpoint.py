"""Training checkpoints without pickles: safetensors for tensors, JSON for everything else."""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from finally_cli.errors import CheckpointError

log = logging.getLogger(__name__)
STEP_NAME = re.compile(r"step_(\d+)")  # a finished checkpoint; `.tmp` ones are half-written


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Split an optimizer state dict into tensors (safetensors) and JSON metadata."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> dict:
    return {
        "python": _jsonable_python(random.getstate()),
        "numpy": np.random.get_state()[1].tolist(),
        "numpy_pos": int(np.random.get_state()[2]),
        "torch": torch.random.get_rng_state().tolist(),
    }


def _jsonable_python(state: tuple) -> list:
    return [state[0], list(state[1]), state[2]]


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(
        ("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0)
    )
    torch.random.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def save_checkpoint(
    folder: Path,
    modules: dict[str, torch.nn.Module],
    optimizers: dict[str, torch.optim.Optimizer],
    state: dict,
) -> Path:
    """Write into `<folder>.tmp` and rename, so a crash never leaves half a checkpoint."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, module in modules.items():
        tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        save_file(tensors, str(tmp / f"{name}.safetensors"))
    for name, optimizer in optimizers.items():
        tensors, meta = optimizer_to_files(optimizer)
        save_file(tensors, str(tmp / f"{name}.safetensors"))
        (tmp / f"{name}.json").write_text(json.dumps(meta))
    state = dict(state, rng=rng_state())
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def read_tensors(folder: Path, name: str, check_finite: bool = True) -> dict[str, torch.Tensor]:
    """`folder/name.safetensors`, refused in one line when unreadable or (for module weights)
    holding NaN/Inf."""
    path = folder / f"{name}.safetensors"
    try:
        tensors = load_file(str(path))
    except Exception as err:  # noqa: BLE001 (SafetensorError derives from Exception only)
        raise CheckpointError(f"{path}: unreadable ({_reason(err)})") from err
    if check_finite:
        for key, tensor in tensors.items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise CheckpointError(f"{path}: {key} holds non-finite values (NaN or Inf)")
    return tensors


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: unreadable ({_reason(err)})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: unreadable (not a JSON object)")
    return data


def _reason(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def load_checkpoint(
    folder: Path, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> dict:
    """Restore modules (strict), optimizers and RNG; returns the saved state dict.

    Every file is read and checked before anything is restored, so a corrupt checkpoint
    raises `CheckpointError` and leaves the modules as they were.
    """
    weights = {name: read_tensors(folder, name) for name in modules}
    optimizer_files = {
        name: (read_tensors(folder, name, check_finite=False), _read_json(folder / f"{name}.json"))
        for name in optimizers
    }
    state = _read_json(folder / "state.json")
    if not isinstance(state.get("step"), int) or "rng" not in state:
        raise CheckpointError(f"{folder / 'state.json'}: unreadable (no step or RNG state)")
    try:
        for name, module in modules.items():
            module.load_state_dict(weights[name], strict=True)
        for name, optimizer in optimizers.items():
            optimizer_from_files(optimizer, *optimizer_files[name])
        set_rng_state(state["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{folder}: cannot resume: {_reason(err)}") from err
    return state


def load_newest(
    run_dir: Path, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer]
) -> tuple[Path, dict] | None:
    """Resume from the newest checkpoint that reads back whole; newer unreadable ones (a
    truncated file, NaN weights) are logged and skipped. None when the run has none yet.

    Raises:
        CheckpointError: checkpoints exist but none is readable.
    """
    return _newest_readable(
        run_dir, lambda folder: load_checkpoint(folder, modules, optimizers), "resuming from"
    )


def model_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The generator a checkpoint stands for: its moving average when the run kept one
    (`optim.ema`), else its raw weights."""
    name = "ema" if (folder / "ema.safetensors").is_file() else "generator"
    return read_tensors(folder, name)


def newest_weights(run_dir: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """The generator of the newest checkpoint that reads back whole (`model_weights`; for
    `init_from` and export)."""
    found = _newest_readable(run_dir, model_weights, "starting from")
    if found is None:
        raise CheckpointError(f"{run_dir}: run has no checkpoint to start from")
    return found


def _newest_readable(
    run_dir: Path, read: Callable[[Path], Any], verb: str
) -> tuple[Path, Any] | None:
    failures = []
    for folder in reversed(checkpoints(run_dir)):
        try:
            result = read(folder)
        except CheckpointError as err:
            failures.append(err)
            continue
        for err in failures:
            log.warning("%s; %s %s", err, verb, folder.name)
        return folder, result
    if failures:
        raise CheckpointError(
            f"{run_dir}: no readable checkpoint ({len(failures)} found; newest: {failures[0]})"
        )
    return None


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run (renamed into place, state.json written), oldest first;
    the `.tmp` folder a kill can leave is not one."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(
        (
            p
            for p in root.iterdir()
            if p.is_dir() and STEP_NAME.fullmatch(p.name) and (p / "state.json").is_file()
        ),
        key=lambda p: int(p.name[5:]),
    )


def remove_stale_tmp(run_dir: Path) -> list[Path]:
    """Remove the half-written `step_N.tmp` folders a kill left behind; returns them."""
    root = Path(run_dir) / "checkpoints"
    stale = [
        p
        for p in (root.iterdir() if root.is_dir() else [])
        if p.is_dir() and p.suffix == ".tmp" and STEP_NAME.fullmatch(p.stem)
    ]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def prune(run_dir: Path, keep: int, step: int | None = None) -> None:
    """Keep the newest `keep` checkpoints up to `step`; any newer one is what a resume skipped
    as unreadable (the run is past it now), and goes too."""
    found = checkpoints(run_dir)
    if step is not None:
        for ahead in [p for p in found if int(p.name[5:]) > step]:
            shutil.rmtree(ahead, ignore_errors=True)
        found = [p for p in found if int(p.name[5:]) <= step]
    for old in found[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
