"""What a command does as a process: SIGTERM ends it like Ctrl-C, and it dies with its launcher."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so that the same clean-up runs (temporary
    outputs discarded, reports written)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def follow_launcher() -> None:
    """Under torchrun / `accelerate launch` (torch elastic), ask the kernel for SIGTERM when
    the launcher dies.

    The elastic agent starts each worker in a session of its own: a SIGKILL of the launcher
    (an OOM kill, a lost node) would leave the workers running on, writing checkpoints that
    race a `--resume` of the same run. A SIGTERM of the launcher is forwarded by the agent.
    """
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher was already gone before the request
        os.kill(os.getpid(), signal.SIGTERM)


def single_cpu_launch() -> str | None:
    """A warning when `accelerate launch --cpu` was asked for several processes.

    With `--cpu`, accelerate starts one process unless `--mpirun_hostfile` is given; it
    still sets MASTER_ADDR when more processes or machines were asked for.
    """
    env = os.environ
    use_cpu = env.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    launched = any(k in env for k in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))
    if use_cpu and "MASTER_ADDR" in env and not launched:
        return (
            "warning: `accelerate launch --cpu` started a single process (it needs "
            "--mpirun_hostfile for more); for several CPU processes use `accelerate launch "
            "--multi_gpu --num_processes N` (gloo on CPU) or `torchrun --nproc_per_node N`"
        )
    return None


@contextlib.contextmanager
def command_process() -> Iterator[None]:
    """SIGTERM raises `Terminated` while a command runs; workers of a launcher follow it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    follow_launcher()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
