"""`finally train` and `finally batch` under `accelerate launch` with 2 CPU processes (gloo)."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import soundfile as sf
from typer.testing import CliRunner

from finally_cli.cli.app import app
from tests.conftest import speechlike, write

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("accelerate") is None, reason="accelerate is not installed"
)
PROBE = Path(__file__).with_name("launch_probe.py")
runner = CliRunner()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(args: list[str], probe: Path, watch: Path, **env: str) -> subprocess.Popen:
    """`accelerate launch` of 2 processes on the CPU running `finally ARGS` (instrumented).

    `--cpu` would start one process (accelerate needs mpirun for more); `--multi_gpu` starts
    two through torch elastic, and with no GPU visible accelerate uses gloo on the CPU.
    """
    probe.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
        "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(free_port()), str(PROBE), *args,
    ]  # fmt: skip
    environment = dict(
        os.environ,
        CUDA_VISIBLE_DEVICES="",
        OMP_NUM_THREADS="1",
        PYTHONHASHSEED="0",
        PROBE_DIR=str(probe),
        PROBE_WATCH=str(watch),
        **env,
    )
    return subprocess.Popen(
        command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[str, str]:
    stdout, stderr = proc.communicate(timeout=timeout)
    return stdout, stderr


def wait_for(paths: list[Path], proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not all(p.exists() for p in paths):
        if proc.poll() is not None:
            pytest.fail("the launch ended early:\n" + proc.stderr.read()[-3000:])
        time.sleep(0.05)
    assert all(p.exists() for p in paths), f"never appeared: {paths}"


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # an unreaped orphan has ended too


def workers_end(probe: Path, timeout: float = 60) -> bool:
    """Whether both ranks' processes are gone within `timeout` (survivors are killed)."""
    pids = [int((probe / f"pid.{rank}").read_text()) for rank in (0, 1)]
    deadline = time.time() + timeout
    while time.time() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    survivors = [pid for pid in pids if alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    return not survivors


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- train ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clean")
    for i in range(3):
        write(folder / f"spk{i}.wav", speechlike(2.0, 16000, seed=i), 16000)
    return folder


def read_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def assert_same_weights(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_train_two_processes_shard_sync_and_resume_exactly(tmp_path: Path, clean_dir: Path) -> None:
    val, runs = tmp_path / "val", tmp_path / "runs"
    result = runner.invoke(
        app,
        ["train", "prepare-val", "--config", "tiny/stage1", "--set",
         f"data.clean=[{clean_dir}]", "-o", str(val), "--count", "1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    steps, per_step = 4, 2 * 2  # tiny/stage1: batch_size 2 on each of 2 processes
    config = [
        "train", "--quiet", "--config", "tiny/stage1", "--set", f"data.clean=[{clean_dir}]",
        "--set", f"steps={steps}", "--set", "checkpoint_every=2", "--set", "log_every=1",
        "--set", f"data.validation={val}", "--set", "validate_every=4",
        "--set", "validation_files=1", "--set", "device=cpu",
    ]  # fmt: skip

    # One launch (one start-up) runs an uninterrupted run, then the same run again, whose
    # launcher is SIGKILLed after the step-2 checkpoint.
    reference, crashed, probe = runs / "reference", runs / "crashed", tmp_path / "probe-1"
    proc = launch(
        [*config, "--run-dir", str(reference), "--then", *config, "--run-dir", str(crashed)],
        probe,
        runs,
        PROBE_HOLD_AT_STEP="2",
    )
    try:
        wait_for([probe / "held.0", probe / "held.1"], proc)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        # Workers must not outlive their launcher (they would race the resume below).
        assert workers_end(probe), "workers outlived their SIGKILLed launcher"
    assert [lines(probe / f"exit.0.{rank}") for rank in (0, 1)] == [["0"], ["0"]]
    # Each rank took every 2nd item of the global pair stream, in order: disjoint shares.
    for rank in (0, 1):
        fetched = [int(i) for i in lines(probe / f"items.0.{rank}")]
        assert fetched == list(range(rank, steps * per_step, 2)), (rank, fetched)
    # Gradients were averaged: both ranks hold the same weights, the ones checkpointed.
    weights = read_weights(probe / "weights.0.0.safetensors")
    assert_same_weights(weights, read_weights(probe / "weights.0.1.safetensors"))
    saved = read_weights(reference / "checkpoints" / "step_00000004" / "generator.safetensors")
    assert_same_weights(weights, saved)
    # Only rank 0 wrote into the run folder: checkpoints, logs, validation, the best model.
    assert lines(probe / "writes.0.1") == [] and lines(probe / "writes.1.1") == []
    written = {
        part
        for line in lines(probe / "writes.0.0")
        for part in Path(line.split("\t")[1]).parts[1:2]
    }
    assert {"config.json", "checkpoints", "metrics.jsonl", "validation.jsonl", "best"} <= written
    assert len(lines(reference / "validation.jsonl")) == 1
    logged = [json.loads(line) for line in lines(reference / "metrics.jsonl")]
    assert [row["step"] for row in logged] == [1, 2, 3, 4]
    assert [p.name for p in (crashed / "checkpoints").iterdir()] == ["step_00000002"]

    # Resumed under 2 processes: the stream, the losses and the weights continue exactly.
    probe = tmp_path / "probe-2"
    proc = launch([*config, "--run-dir", str(crashed), "--resume"], probe, runs)
    _, stderr = finish(proc)
    assert proc.returncode == 0, stderr[-3000:]
    for rank in (0, 1):
        fetched = [int(i) for i in lines(probe / f"items.0.{rank}")]
        assert fetched == list(range(2 * per_step + rank, steps * per_step, 2)), (rank, fetched)
    resumed = {row["step"]: row for row in map(json.loads, lines(crashed / "metrics.jsonl"))}
    for row in logged:
        assert resumed[row["step"]]["loss_g"] == pytest.approx(row["loss_g"], rel=1e-6, abs=0)
    assert_same_weights(weights, read_weights(probe / "weights.0.0.safetensors"))
    assert_same_weights(weights, read_weights(probe / "weights.0.1.safetensors"))

    # Another process count would change the global batch and the pair order: refused.
    result = runner.invoke(app, [*config, "--run-dir", str(reference), "--resume"])
    assert result.exit_code != 0
    message = result.output.strip()
    assert "\n" not in message and "trained by 2 processes, this launch has 1" in message


# -- batch ----------------------------------------------------------------------------------
def test_batch_two_processes_each_file_once_one_report(tmp_path: Path, small_dir: Path) -> None:
    src, out, probe = tmp_path / "in", tmp_path / "out", tmp_path / "probe"
    (src / "sub").mkdir(parents=True)
    names = ["a.wav", "b.wav", "c.wav", "sub/d.wav", "sub/e.wav"]
    for i, name in enumerate(names):
        write(src / name, speechlike(0.4, 16000, seed=i), 16000)
    (src / "bad.wav").write_bytes(b"")  # fails on whichever rank gets it
    proc = launch(
        ["batch", str(src), "-o", str(out), "--model", str(small_dir), "--device", "cpu"],
        probe,
        out,
    )
    stdout, stderr = finish(proc)
    assert proc.returncode != 0, "a failed file must fail the launch"
    assert "bad.wav" in stderr
    # Every output was committed (renamed into place) by exactly one rank.
    committed = {
        rank: [
            line.split("\t")[1]
            for line in lines(probe / f"writes.0.{rank}")
            if line.startswith("os.rename") and line.endswith(".wav")
            and not os.path.basename(line).startswith(".")
        ]
        for rank in (0, 1)
    }  # fmt: skip
    assert committed[0] and committed[1], committed
    assert sorted(committed[0] + committed[1]) == sorted(names), committed
    for name in names:
        assert sf.info(str(out / name)).duration == pytest.approx(0.4, abs=1e-3)
    # One merged report, rank 0's summary of both ranks, no per-rank leftovers.
    with (out / "finally-report.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(Path(r["input"]).relative_to(src).as_posix() for r in rows) == sorted(
        [*names, "bad.wav"]
    )
    assert sorted(r["status"] for r in rows) == ["failed"] + ["ok"] * 5
    assert stdout.count("5 enhanced, 0 skipped, 1 failed (2 processes)") == 1, stdout
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == [
        "a.wav", "b.wav", "c.wav", "finally-report.csv",
    ]  # fmt: skip


def test_batch_sigterm_of_the_launcher_leaves_no_partial_output(
    tmp_path: Path, small_dir: Path
) -> None:
    src, out, probe = tmp_path / "in", tmp_path / "out", tmp_path / "probe"
    src.mkdir()
    for i in range(4):
        write(src / f"{i}.wav", speechlike(0.4, 16000, seed=i), 16000)
    proc = launch(
        ["batch", str(src), "-o", str(out), "--model", str(small_dir), "--device", "cpu", "-q"],
        probe,
        out,
        PROBE_HOLD_WRITES="1",
    )
    try:
        # Both ranks are parked inside their first output, its temporary file open (and, on
        # CPU, the second file of the round of windows each rank runs per forward).
        wait_for([probe / "held.0", probe / "held.1"], proc)
        assert 2 <= len(list(out.glob(".*.part"))) <= 4
        proc.send_signal(signal.SIGTERM)
        _, stderr = finish(proc, timeout=90)
    finally:
        assert workers_end(probe), "workers outlived the terminated launch"
    assert proc.returncode != 0
    assert stderr.count("terminated; no partial output was kept") == 2, stderr[-3000:]
    assert list(out.rglob("*.part")) == [] and list(out.rglob("*.wav")) == []


def test_shard_survives_another_rank_removing_the_empty_output_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the SIGTERM test above once lost: right after this rank made the output
    folder, the other rank, ending, removed it (empty, and made by it); the shard is still
    written."""
    from finally_cli.cli import shards

    report = tmp_path / "out" / "finally-report.csv"
    real_mkdir, calls = Path.mkdir, []

    def mkdir_then_lose_it(self: Path, *args: object, **kwargs: object) -> None:
        real_mkdir(self, *args, **kwargs)
        calls.append(self)
        if len(calls) == 1:
            self.rmdir()

    monkeypatch.setattr(Path, "mkdir", mkdir_then_lose_it)
    shards.write_shard(report, 1, [{"input": "a.wav", "status": "ok"}])
    monkeypatch.undo()
    assert len(calls) == 2
    assert json.loads(shards.shard_path(report, 1).read_text()) == [
        {"input": "a.wav", "status": "ok"}
    ]
    assert list(report.parent.glob("*.part")) == []


def test_cpu_launch_that_started_one_process_is_warned(monkeypatch: pytest.MonkeyPatch) -> None:
    # What `accelerate launch --cpu --num_processes 2` leaves a single process to see.
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0
    assert "started a single process" in result.stderr and "--multi_gpu" in result.stderr
    monkeypatch.setenv("WORLD_SIZE", "2")  # a real multi-process launch: no warning
    assert "single process" not in runner.invoke(app, ["models", "list"]).stderr
