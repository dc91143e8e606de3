"""One rank of launched `finally` commands, recording what it did (for test_distributed).

Run as `accelerate launch ... tests/launch_probe.py ARGS... [--then ARGS...]` with PROBE_DIR
(where the records go) and PROBE_WATCH (the folder whose writes are recorded); the commands
run one after the other in the same processes (one launch's start-up serves them all). For
command K, each rank R writes: writes.K.R (every write, rename, mkdir or removal under
PROBE_WATCH, one per line); items.K.R (the pair indices its data loader fetched);
weights.K.R.safetensors (its generator after `Trainer.fit`); exit.K.R (its exit code); and
pid.R. In the last command, PROBE_HOLD_AT_STEP=N parks each rank after the checkpoint of
step N, PROBE_HOLD_WRITES=1 after the first block of its first output file (held.R marks
it), so a test can kill or terminate the launch at a known point.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

PROBE = Path(os.environ["PROBE_DIR"])
WATCH = str(Path(os.environ["PROBE_WATCH"]).resolve())
RANK = int(os.environ.get("RANK", "0"))
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PATH_EVENTS = {"os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"}

COMMANDS: list[list[str]] = [[]]
for word in sys.argv[1:]:
    if word == "--then":
        COMMANDS.append([])
    else:
        COMMANDS[-1].append(word)
state = {"command": 0, "last": False}
(PROBE / f"pid.{RANK}").write_text(str(os.getpid()))


def _record_file(kind: str):  # noqa: ANN202
    return (PROBE / f"{kind}.{state['command']}.{RANK}").open("a", encoding="utf-8")


def _record(event: str, path: object) -> None:
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not isinstance(path, (str, os.PathLike)):
        return
    full = os.path.abspath(os.fspath(path))
    if full == WATCH or full.startswith(WATCH + os.sep):
        with _record_file("writes") as writes:
            writes.write(f"{event}\t{os.path.relpath(full, WATCH)}\n")


def _audit(event: str, args: tuple) -> None:
    if event == "open":
        path, mode, flags = args
        if (mode is not None and any(c in mode for c in "wax+")) or (
            mode is None and flags & WRITE_FLAGS
        ):
            _record(event, path)
    elif event in PATH_EVENTS:
        _record(event, args[0])
        if event == "os.rename":
            _record(event, args[1])


def _hold() -> None:
    (PROBE / f"held.{RANK}").touch()
    time.sleep(600)


def _instrument() -> None:
    from finally_cli.audio.io import AtomicWriter
    from finally_cli.training.data import PairDataset
    from finally_cli.training.trainer import Trainer

    getitem, fit, save, write = (
        PairDataset.__getitem__,
        Trainer.fit,
        Trainer.save,
        AtomicWriter.write,
    )

    def recorded_getitem(self, index: int):  # noqa: ANN001, ANN202
        with _record_file("items") as items:
            items.write(f"{index}\n")
        return getitem(self, index)

    def recorded_fit(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        from safetensors.torch import save_file

        step = fit(self, *args, **kwargs)
        tensors = self.accelerator.unwrap_model(self.generator).state_dict()
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
            str(PROBE / f"weights.{state['command']}.{RANK}.safetensors"),
        )
        return step

    def held_save(self):  # noqa: ANN001, ANN202
        folder = save(self)
        if state["last"] and self.step == int(os.environ.get("PROBE_HOLD_AT_STEP", "0")):
            _hold()
        return folder

    def held_write(self, block):  # noqa: ANN001, ANN202
        write(self, block)
        if state["last"] and os.environ.get("PROBE_HOLD_WRITES"):
            _hold()

    PairDataset.__getitem__ = recorded_getitem
    Trainer.fit = recorded_fit
    Trainer.save = held_save
    AtomicWriter.write = held_write


if __name__ == "__main__":
    sys.addaudithook(_audit)
    _instrument()
    from finally_cli.cli.app import app

    for number, command in enumerate(COMMANDS):
        state.update(command=number, last=number == len(COMMANDS) - 1)
        code = app(command, prog_name="finally", standalone_mode=False) or 0
        (PROBE / f"exit.{number}.{RANK}").write_text(str(code))
    sys.exit(code)
