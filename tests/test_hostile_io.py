"""Hostile inputs for the inference wing (issue 18 items 1-6, 8, 11): files never lost,
mislabelled or half-written by enhance, batch and eval; every failure one line."""

from __future__ import annotations

import csv
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from finally_cli.errors import AudioError, FinallyError, OutputError
from tests.conftest import invoke, one_error_line, speechlike, write


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def report_rows(path: Path) -> dict[str, dict]:
    with path.open(newline="") as handle:
        return {Path(r["input"]).name: r for r in csv.DictReader(handle)}


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "in"
    src.mkdir()
    for i, name in enumerate(("a", "b")):
        write(src / f"{name}.wav", speechlike(0.3 + 0.1 * i, 16000, seed=i), 16000)
    return src, tmp_path / "out"


@pytest.fixture
def staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary folder every staging folder goes into, for this test alone."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def batch(src: Path, out: Path, model: Path, *extra: str):  # noqa: ANN201
    return invoke("batch", str(src), "-o", str(out), "--model", str(model), "--device", "cpu",
                  "--workers", "1", "-q", *extra)  # fmt: skip


# -- item 1: eval --work-dir never deletes what eval did not write --------------------------
def _eval_sets(tmp_path: Path) -> tuple[Path, Path]:
    clean, noisy = tmp_path / "clean", tmp_path / "noisy"
    clean.mkdir()
    noisy.mkdir()
    x = speechlike(0.5, 16000)[:, 0] * 0.5
    write(clean / "s0.wav", x, 16000)
    write(noisy / "s0.wav", x + 0.05 * np.random.default_rng(0).standard_normal(x.size), 16000)
    return clean, noisy


def test_eval_keeps_the_users_files_in_the_work_dir(tmp_path: Path) -> None:
    from finally_cli.models.hub import create_model, save_model

    clean, noisy = _eval_sets(tmp_path)
    work = tmp_path / "work"
    (work / "enhanced").mkdir(parents=True)
    mine = {"notes.txt": b"my notes", "s0.wav": b"RIFF-not-really-mine"}
    for name, data in mine.items():
        (work / "enhanced" / name).write_bytes(data)
    model = tmp_path / "model"
    for seed in (0, 1, 0):  # a retrained model, then the first again
        save_model(create_model("tiny", seed=seed), model)
        result = invoke("eval", "--noisy", str(noisy), "--reference", str(clean), "--model",
                        str(model), "--metrics", "sisdr", "--work-dir", str(work), "--device",
                        "cpu", "--workers", "1", "-q")  # fmt: skip
        assert result.exit_code == 0, result.output
    for name, data in mine.items():
        assert (work / "enhanced" / name).read_bytes() == data
    made = sorted(p.parent.name for p in work.rglob("s0.wav") if p.parent.name != "enhanced")
    assert len(made) == 2 and all(name.startswith("enhanced-") for name in made), made


def test_eval_removes_the_part_files_a_killed_eval_left(tmp_path: Path) -> None:
    from finally_cli.models.hub import create_model, fingerprint, load_model, save_model

    clean, noisy = _eval_sets(tmp_path)
    work, model = tmp_path / "work", tmp_path / "model"
    save_model(create_model("tiny", seed=0), model)
    out = work / f"enhanced-{fingerprint(load_model(str(model)))[:12]}"  # as eval names it
    out.mkdir(parents=True)
    stale, alive = out / f".s0.wav.{dead_pid()}.part", out / f".s0.wav.{os.getppid()}.part"
    for path in (stale, alive):
        path.write_bytes(b"half a file")
    result = invoke("eval", "--noisy", str(noisy), "--reference", str(clean), "--model",
                    str(model), "--metrics", "sisdr", "--work-dir", str(work), "--device",
                    "cpu", "--workers", "1", "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not stale.exists() and alive.exists()  # a live process's temporary is not touched
    assert sf.info(str(out / "s0.wav")).frames > 0


@pytest.fixture
def halving_baseline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Path, Path]:
    """noisereduce replaced by a halving stub: (a noisy input file, the baseline's folder)."""
    from finally_cli.evaluation import baselines

    monkeypatch.setitem(baselines.RUNNERS, "noisereduce", lambda audio, rate: (audio * 0.5, rate))
    noisy = write(tmp_path / "a.wav", np.full(1600, 0.1, np.float32), 16000)
    return noisy, tmp_path / "work" / "noisereduce"


def test_a_changed_baseline_removes_only_its_own_outputs(
    monkeypatch: pytest.MonkeyPatch, halving_baseline: tuple[Path, Path]
) -> None:
    from finally_cli.evaluation import baselines

    noisy, out_dir = halving_baseline
    baselines.run_baseline("noisereduce", {"a": noisy}, out_dir)
    (out_dir / "notes.txt").write_text("mine")
    monkeypatch.setitem(baselines.REVISIONS, "noisereduce", 99)
    baselines.run_baseline("noisereduce", {"a": noisy}, out_dir)
    assert (out_dir / "notes.txt").read_text() == "mine"
    assert sf.info(str(out_dir / "a.wav")).frames == 1600


def test_a_users_file_at_a_baseline_output_is_refused(
    halving_baseline: tuple[Path, Path],
) -> None:
    from finally_cli.evaluation import baselines

    noisy, out_dir = halving_baseline
    out_dir.mkdir(parents=True)
    (out_dir / "a.wav").write_bytes(b"the user's")
    with pytest.raises(OutputError, match="not written by finally eval"):
        baselines.run_baseline("noisereduce", {"a": noisy}, out_dir)
    assert (out_dir / "a.wav").read_bytes() == b"the user's"


# -- item 2: inputs that differ only in extension ------------------------------------------
def test_batch_inputs_that_share_an_output_are_refused_before_work(
    tmp_path: Path, tiny_dir: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    write(src / "x.wav", speechlike(0.3, 16000), 16000)
    write(src / "x.flac", speechlike(0.3, 16000, seed=1), 16000)
    result = batch(src, out, tiny_dir)
    assert result.exit_code == 2
    line = one_error_line(result.stderr)
    assert "x.flac" in line and "x.wav" in line and "--output-ext keep" in line
    assert not out.exists() or not any(out.rglob("*.wav"))
    result = batch(src, out, tiny_dir, "--output-ext", "keep")  # the documented way out
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("x.*")) == ["x.flac", "x.wav"]


# -- item 3: resume verifies an existing output before skipping it ---------------------------
def test_resume_redoes_truncated_empty_and_garbage_outputs(
    tree: tuple[Path, Path], tiny_dir: Path
) -> None:
    src, out = tree
    write(src / "c.wav", speechlike(0.2, 16000, seed=3), 16000)
    write(src / "d.wav", speechlike(0.2, 16000, seed=4), 16000)
    assert batch(src, out, tiny_dir).exit_code == 0
    good = {p.name: p.read_bytes() for p in out.glob("*.wav")}
    (out / "a.wav").write_bytes(good["a.wav"][: len(good["a.wav"]) // 2])  # truncated
    (out / "b.wav").write_bytes(b"")  # empty
    (out / "c.wav").write_bytes(os.urandom(3000))  # garbage
    short = sf.read(str(out / "d.wav"))[0][:-100]
    sf.write(str(out / "d.wav"), short, 48000, subtype="PCM_24")  # a whole file, too short
    result = invoke("batch", str(src), "-o", str(out), "--model", str(tiny_dir), "--device",
                    "cpu", "--workers", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    for name, data in good.items():
        assert (out / name).read_bytes() == data, name
    assert result.stderr.count("enhancing it again") == 4, result.stderr
    assert "4 enhanced, 0 skipped" in result.stdout
    rows = report_rows(out / "finally-report.csv")
    assert {r["status"] for r in rows.values()} == {"ok"}
    again = batch(src, out, tiny_dir, "-q")  # now finished: skipped, no warning
    assert again.exit_code == 0 and again.stderr == ""


# -- item 4: overlapping input and output trees ----------------------------------------------
@pytest.mark.parametrize("output", [".", ".."], ids=["same-folder", "input-inside-output"])
def test_batch_refuses_overlapping_trees(
    tree: tuple[Path, Path], tiny_dir: Path, output: str
) -> None:
    src, _ = tree
    out = (src / output).resolve()
    before = sorted(out.rglob("*"))
    result = batch(src, out, tiny_dir)
    assert result.exit_code == 2
    assert "output folder overlaps the input folder" in one_error_line(result.stderr)
    assert sorted(out.rglob("*")) == before


def test_batch_output_inside_the_input_is_skipped_when_scanning(
    tree: tuple[Path, Path], tiny_dir: Path
) -> None:
    src, _ = tree
    out = src / "restored"
    assert batch(src, out, tiny_dir).exit_code == 0
    result = batch(src, out, tiny_dir, "-q")
    assert result.exit_code == 0 and not (out / "restored").exists()


# -- item 5: SIGTERM, and what a SIGKILL left behind -----------------------------------------
def test_sigterm_in_batch_removes_part_and_staging_and_keeps_the_report(
    tree: tuple[Path, Path], tiny_dir: Path, monkeypatch: pytest.MonkeyPatch, staging: Path
) -> None:
    from finally_cli.inference.enhancer import Enhancer

    src, out = tree
    run_windows = Enhancer.run_windows
    seen: list[Path] = []

    def terminated_in_b(self: Enhancer, windows: np.ndarray) -> np.ndarray:
        if (out / "a.wav").exists():  # a is finished, b's .part is open
            seen.extend(out.glob(".b.wav.*.part"))
            seen.extend(staging.iterdir())
            os.kill(os.getpid(), signal.SIGTERM)
        return run_windows(self, windows)

    monkeypatch.setattr(Enhancer, "run_windows", terminated_in_b)
    result = batch(src, out, tiny_dir)
    assert result.exit_code == 143
    assert "terminated; no partial output was kept" in result.stderr
    assert len(seen) == 2, seen  # there was a .part and a staging folder to remove
    assert list(out.glob(".*.part")) == [] and list(staging.iterdir()) == []
    assert sorted(p.name for p in out.glob("*.wav")) == ["a.wav"]
    assert report_rows(out / "finally-report.csv")["a.wav"]["status"] == "ok"


def test_leftovers_of_a_killed_run_are_removed_by_the_next(
    tree: tuple[Path, Path], tiny_dir: Path, staging: Path
) -> None:
    src, out = tree
    out.mkdir()
    gone, alive = dead_pid(), os.getppid()
    host = socket.gethostname()
    stale = [out / f".a.wav.{gone}.part", staging / f"finally-{host}-{gone}-x1"]
    kept = [out / f".b.wav.{alive}.part", out / ".notes", staging / f"finally-{host}-{alive}-x2",
            staging / f"finally-other-host-{gone}-x3", staging / "unrelated"]  # fmt: skip
    for path in stale + kept:
        if path.name.startswith("finally-") or path.name == "unrelated":
            path.mkdir()
            (path / "stage.f32").write_bytes(b"\0" * 64)
        else:
            path.write_bytes(b"\0" * 64)
    result = batch(src, out, tiny_dir)
    assert result.exit_code == 0, result.output
    assert [p for p in stale if p.exists()] == []
    assert [p for p in kept if not p.exists()] == []


# -- item 6: OSError while staging; an unwritable report -------------------------------------
def test_a_file_size_limit_fails_one_file_and_the_batch_goes_on(
    tmp_path: Path, tiny_dir: Path
) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    write(src / "a.wav", speechlike(0.3, 16000), 16000)  # staged 19 KB, written 43 KB
    write(src / "big.wav", speechlike(6.0, 8000, seed=1), 8000)  # staged 384 KB
    limit = 200_000

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "finally_cli.cli", "batch", str(src), "-o", str(out), "--model",
         str(tiny_dir), "--device", "cpu", "--workers", "1", "-q"],  # fmt: skip
        capture_output=True, text=True, timeout=240, preexec_fn=limit_file_size, env=env,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc.stderr)
    assert "big.wav" in line and "File too large" in line, line
    assert sf.info(str(out / "a.wav")).frames == round(0.3 * 48000)
    rows = report_rows(out / "finally-report.csv")
    assert (rows["a.wav"]["status"], rows["big.wav"]["status"]) == ("ok", "failed")
    assert list(tmp_path.glob("finally-*")) == [] and list(out.glob(".*.part")) == []


def test_disk_full_while_staging_fails_that_file(
    tree: tuple[Path, Path], tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import finally_cli.inference.job as job

    src, out = tree
    make = tempfile.NamedTemporaryFile

    class Full:
        def __init__(self, *args: object, **kwargs: object) -> None:
            self.handle = make(*args, **kwargs)
            self.name = self.handle.name

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

        def write(self, data: bytes) -> int:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(job.tempfile, "NamedTemporaryFile", Full)
    result = batch(src, out, tiny_dir)
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all("No space left on device" in line for line in lines), lines
    assert {r["status"] for r in report_rows(out / "finally-report.csv").values()} == {"failed"}


def test_an_unwritable_report_is_refused_before_any_work(
    tree: tuple[Path, Path], tiny_dir: Path, tmp_path: Path
) -> None:
    src, out = tree
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = batch(src, out, tiny_dir, "--report", str(blocker / "report.csv"))
    assert result.exit_code == 1
    assert "report.csv" in one_error_line(result.stderr)
    assert not out.exists() or list(out.rglob("*.wav")) == []


# -- item 8 (output): non-finite model output ------------------------------------------------
def test_non_finite_model_output_is_refused_and_nothing_written(
    tmp_path: Path, tiny_dir: Path
) -> None:
    from finally_cli.inference.enhancer import Enhancer, EnhancerOptions
    from finally_cli.models.hub import load_model

    enhancer = Enhancer(load_model(str(tiny_dir)), EnhancerOptions(device="cpu", workers=1))
    model = enhancer._forward
    enhancer._forward = lambda tensor: model(tensor) * torch.tensor(float("nan"))
    src = write(tmp_path / "in.wav", speechlike(0.4, 16000), 16000)
    with pytest.raises(FinallyError, match="NaN/Inf") as caught:
        enhancer.enhance_file(src, tmp_path / "out.wav")
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.wav"]
    with pytest.raises(FinallyError, match="NaN/Inf"):
        enhancer.enhance_array(speechlike(0.4, 16000), 16000)


# -- item 11: input sample rates out of range ------------------------------------------------
@pytest.mark.parametrize("rate", [1, 999, 1_000_000])
def test_an_absurd_input_sample_rate_is_refused_at_the_header(tmp_path: Path, rate: int) -> None:
    from finally_cli.audio.io import read_info

    path = tmp_path / "odd.wav"
    sf.write(str(path), np.zeros(100, np.float32), rate)
    with pytest.raises(AudioError, match="sample rate") as caught:
        read_info(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_a_1_hz_header_is_one_line_on_the_command_line(tmp_path: Path, tiny_dir: Path) -> None:
    path = tmp_path / "odd.wav"
    sf.write(str(path), np.zeros(100, np.float32), 1)
    result = invoke("enhance", str(path), "--model", str(tiny_dir), "--device", "cpu", "-q")
    assert result.exit_code == 1
    assert "1 Hz" in one_error_line(result.stderr)
    assert list(tmp_path.iterdir()) == [path]
    with pytest.raises(AudioError, match="sample rate"):
        from finally_cli.inference.sources import ArraySource

        ArraySource(np.zeros(100, np.float32), 1)
