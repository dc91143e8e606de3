"""The `finally` command: every error path is one line + exit code + no output file."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from finally_cli.cli.app import app
from tests.conftest import speechlike, write

runner = CliRunner()


def invoke(*args: str):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def clip(tmp_path: Path) -> Path:
    return write(tmp_path / "in.wav", speechlike(1.3, 44100), 44100)


def assert_one_line_error(result, *needles: str, code: int | None = None) -> None:  # noqa: ANN001
    assert result.exit_code != 0
    if code is not None:
        assert result.exit_code == code
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def outputs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(("out", ".out")))


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from finally_cli.cli.app import app; from typer.testing import CliRunner;"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0;"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _command_paths() -> list[list[str]]:
    import typer.main

    def walk(command, prefix: list[str]) -> list[list[str]]:  # noqa: ANN001
        paths = [prefix]
        for name, sub in getattr(command, "commands", {}).items():
            paths.extend(walk(sub, [*prefix, name]))
        return paths

    return walk(typer.main.get_command(app), [])


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "finally")
def test_every_help_page_renders(path: list[str]) -> None:
    # Square brackets in help texts are rich markup unless escaped: a bad one crashes --help.
    result = runner.invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_help_keeps_literal_brackets() -> None:
    result = runner.invoke(app, ["train", "--help"], terminal_width=200)
    assert "data.clean=[/data/speech]" in result.output
    assert "[default: runs/<config>]" in result.output
    result = runner.invoke(app, ["enhance", "--help"], terminal_width=200)
    assert "owner/name[@revision]" in result.output


def test_enhance_writes_48k(clip: Path, tiny_dir: Path) -> None:
    out = clip.parent / "out.wav"
    result = invoke("enhance", clip, "-o", out, "--model", tiny_dir, "--device", "cpu")
    assert result.exit_code == 0, result.output
    info = sf.info(str(out))
    assert info.samplerate == 48000 and info.frames == round(1.3 * 44100 * 48000 / 44100)
    assert outputs(clip.parent) == ["out.wav"]


def test_model_folder_without_weights_exits_2(clip: Path, tmp_path: Path) -> None:
    folder = tmp_path / "untrained"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"name": "finally-small"}))
    result = invoke("enhance", clip, "-o", clip.parent / "out.wav", "--model", folder)
    assert_one_line_error(result, "no model.safetensors", code=2)
    assert outputs(clip.parent) == []


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "nan", "inf", "missing"])
def test_bad_inputs(kind: str, tmp_path: Path, tiny_dir: Path) -> None:
    path = tmp_path / f"bad {kind}.wav"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        write(path, speechlike(2.0, 16000), 16000, subtype="PCM_16")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "text":
        path.write_text("this is not audio\n" * 20)
    elif kind in ("nan", "inf"):
        audio = speechlike(2.0, 16000)
        audio[20000, 0] = np.nan if kind == "nan" else np.inf
        write(path, audio, 16000, subtype="FLOAT")
    out = tmp_path / "out.wav"
    result = invoke("enhance", path, "-o", out, "--model", tiny_dir, "--device", "cpu")
    expected = {
        "empty": "file is empty",
        "truncated": "truncated",
        "text": "not an audio file",
        "nan": "NaN/Inf",
        "inf": "NaN/Inf",
        "missing": "no such file",
    }[kind]
    assert_one_line_error(result, path.name, expected)
    assert outputs(tmp_path) == []


def test_existing_output_needs_overwrite(clip: Path, tiny_dir: Path) -> None:
    out = clip.parent / "out.wav"
    out.write_bytes(b"keep me")
    result = invoke("enhance", clip, "-o", out, "--model", tiny_dir, "--device", "cpu")
    assert_one_line_error(result, "out.wav", "--overwrite")
    assert out.read_bytes() == b"keep me"
    result = invoke(
        "enhance", clip, "-o", out, "--model", tiny_dir, "--device", "cpu", "--overwrite"
    )
    assert result.exit_code == 0 and sf.info(str(out)).samplerate == 48000


def test_unwritable_output_folder(clip: Path, tiny_dir: Path) -> None:
    blocker = clip.parent / "not-a-folder"
    blocker.write_text("x")
    result = invoke("enhance", clip, "-o", blocker / "out.wav", "--model", tiny_dir)
    assert_one_line_error(result, "cannot write")
    if os.geteuid() != 0:  # root ignores folder permissions
        locked = clip.parent / "locked"
        locked.mkdir(mode=0o555)
        result = invoke("enhance", clip, "-o", locked / "out.wav", "--model", tiny_dir)
        assert_one_line_error(result, "not writable")


def test_unknown_model(clip: Path) -> None:
    result = invoke("enhance", clip, "-o", clip.parent / "out.wav", "--model", "no-such-model")
    assert_one_line_error(result, "unknown model 'no-such-model'", code=2)


def test_bad_option_values(clip: Path, tiny_dir: Path) -> None:
    result = invoke(
        "enhance", clip, "-o", clip.parent / "out.wav", "--model", tiny_dir, "--mix", "1.5"
    )
    assert_one_line_error(result, "--mix", code=2)
    result = invoke("enhance", clip, "-o", clip.parent / "out.xyz", "--model", tiny_dir)
    assert_one_line_error(result, "unsupported output extension", code=2)
    result = invoke(
        "enhance",
        clip,
        "-o",
        clip.parent / "out.wav",
        "--model",
        tiny_dir,
        "--device",
        "cpu",
        "--precision",
        "fp16",
    )
    assert_one_line_error(result, "fp16", code=2)


@pytest.mark.parametrize(
    "case",
    [
        "silence",
        "one-sample",
        "8ch-mix",
        "8ch-each",
        "8k",
        "384k",
        "unicode",
        "flac-ogg",
        "ogg-flac",
    ],
)
def test_unusual_inputs_work(case: str, tmp_path: Path, tiny_dir: Path) -> None:
    rate, channels, seconds, name, out_name, extra = 16000, 1, 1.0, "in.wav", "out.wav", []
    audio = None
    if case == "silence":
        audio = np.zeros((16000, 1), dtype=np.float32)
    elif case == "one-sample":
        audio = np.full((1, 1), 0.1, dtype=np.float32)
    elif case.startswith("8ch"):
        channels = 8
        extra = ["--channels", case.split("-")[1]]
    elif case == "8k":
        rate = 8000
    elif case == "384k":
        rate, seconds = 384000, 0.5
    elif case == "unicode":
        name, out_name = "grabación ñandú 録音.wav", "salida ñ 出力.wav"
    elif case == "flac-ogg":
        name, out_name = "in.flac", "out.ogg"
    elif case == "ogg-flac":
        name, out_name = "in.ogg", "out.flac"
    if audio is None:
        audio = speechlike(seconds, rate, channels=channels)
    write(tmp_path / name, audio, rate)
    out = tmp_path / out_name
    result = invoke(
        "enhance", tmp_path / name, "-o", out, "--model", tiny_dir, "--device", "cpu", *extra
    )
    assert result.exit_code == 0, result.output
    info = sf.info(str(out))
    assert info.samplerate == 48000
    assert info.channels == (8 if case == "8ch-each" else 1)
    assert abs(info.frames - round(audio.shape[0] * 48000 / rate)) <= (
        1 if out_name.endswith(".ogg") else 0
    )


def test_batch_mirrors_tree_reports_failures_and_resumes(tmp_path: Path, tiny_dir: Path) -> None:
    src = tmp_path / "in"
    (src / "a" / "b").mkdir(parents=True)
    for i, rel in enumerate(["one.wav", "a/two.flac", "a/b/three.ogg"]):
        write(src / rel, speechlike(0.7 + 0.3 * i, 22050, seed=i), 22050)
    (src / "a" / "corrupt.wav").write_text("garbage")
    (src / "empty.wav").write_bytes(b"")
    (src / "notes.txt").write_text("ignored")
    dst = tmp_path / "out"
    result = invoke(
        "batch", src, "-o", dst, "--model", tiny_dir, "--device", "cpu", "--batch-size", "4"
    )
    assert result.exit_code == 1, result.output
    produced = sorted(str(p.relative_to(dst)) for p in dst.rglob("*.wav"))
    assert produced == ["a/b/three.wav", "a/two.wav", "one.wav"]
    rows = list(csv.DictReader((dst / "finally-report.csv").open()))
    status = {Path(r["input"]).name: r["status"] for r in rows}
    assert status == {
        "one.wav": "ok",
        "two.flac": "ok",
        "three.ogg": "ok",
        "corrupt.wav": "failed",
        "empty.wav": "failed",
    }
    assert all(float(r["duration"]) > 0 for r in rows if r["status"] == "ok")
    assert "corrupt.wav" in result.stderr
    # A re-run skips finished outputs (resume) and reports as JSON when asked.
    result = invoke(
        "batch",
        src,
        "-o",
        dst,
        "--model",
        tiny_dir,
        "--device",
        "cpu",
        "--report",
        tmp_path / "r.json",
    )
    rows = json.loads((tmp_path / "r.json").read_text())
    assert sorted(r["status"] for r in rows) == [
        "failed",
        "failed",
        "skipped",
        "skipped",
        "skipped",
    ]


def test_batch_world_without_a_launcher_is_a_usage_error(
    tmp_path: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sharding itself runs under a real 2-process launch in test_distributed.py.
    src = tmp_path / "in"
    src.mkdir()
    write(src / "0.wav", speechlike(0.5, 16000), 16000)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    result = invoke("batch", src, "-o", tmp_path / "out", "--model", tiny_dir, "--device", "cpu")
    assert result.exit_code == 2
    assert_one_line_error(result, "MASTER_ADDR")
    assert not (tmp_path / "out").exists()


def test_models_create_list_info(tmp_path: Path) -> None:
    result = invoke("models", "create", "tiny", "-o", tmp_path / "m", "--seed", "3")
    assert result.exit_code == 0
    assert (tmp_path / "m" / "model.safetensors").is_file()
    result = invoke("models", "create", "tiny", "-o", tmp_path / "m")
    assert_one_line_error(result, "--overwrite")
    result = invoke("models", "info", "finally-large", "--json")
    report = json.loads(result.stdout)
    assert report["frozen"] > 3e8 and set(report["blocks"]) >= {"spectral_unet", "ssl", "fusion"}
    result = invoke("models", "list", "--json")
    names = {r["name"] for r in json.loads(result.stdout)}
    assert {"finally-large", "finally-small", "tiny"} <= names


def test_sigint_leaves_no_partial_output(tmp_path: Path) -> None:
    from finally_cli.models.hub import create_model, save_model

    # The HiFi++-width model (RTF ~0.15 here) keeps the run going well past the moment the
    # temporary file appears; the shipped finally-small could finish before SIGINT lands.
    slow_dir = save_model(create_model("hifipp", seed=0), tmp_path / "hifipp")
    src = write(tmp_path / "long.wav", speechlike(240.0, 16000), 16000)
    out = tmp_path / "out.wav"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "finally_cli.cli",
            "enhance",
            str(src),
            "-o",
            str(out),
            "--model",
            str(slow_dir),
            "--device",
            "cpu",
            "--batch-size",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # A shell's background job inherits SIGINT ignored, and Python then never raises
        # KeyboardInterrupt: give the child the default disposition, as a terminal would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(tmp_path.glob(".out.wav.*.part")):
        time.sleep(0.05)
    assert any(tmp_path.glob(".out.wav.*.part")), "the temporary output never appeared"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert outputs(tmp_path) == [], stderr.decode()
