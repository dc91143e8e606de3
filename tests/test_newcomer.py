"""What a new user meets first (issue 17): install, help text, inputs, outputs, messages."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from finally_cli.cli.app import app
from tests.conftest import speechlike, write

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def invoke(*args: object, width: int = 80):  # noqa: ANN201
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": str(width)})


def one_error_line(result) -> str:  # noqa: ANN001
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# -- the default model travels with the package ----------------------------------------------
def test_wheel_carries_the_default_model_and_finds_it(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "finally_cli", "weights"):
        copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy
        copy(REPO / name, source / name)
    for cache in source.rglob("__pycache__"):
        shutil.rmtree(cache)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist")],
        cwd=source, check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for file in ("config.json", "model.safetensors", "README.md"):
        assert f"finally_cli/weights/finally-small/{file}" in names
    # Every package of the source tree is listed in pyproject.toml (the list is explicit).
    packages = {str(p.parent.relative_to(REPO)).replace("/", ".")
                for p in (REPO / "finally_cli").rglob("__init__.py")}  # fmt: skip
    assert packages <= {n.rsplit("/", 1)[0].replace("/", ".") for n in names if "/" in n}
    # Installed (unpacked) away from any checkout, the name resolves to the packaged copy.
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "from finally_cli.models.hub import resolve_model; "
        "print(resolve_model('finally-small').folder)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert Path(done.stdout.strip()) == site / "finally_cli" / "weights" / "finally-small"


def test_unknown_model_says_where_it_looked_and_what_a_preset_is(tmp_path: Path) -> None:
    clip = write(tmp_path / "in.wav", speechlike(0.3, 16000), 16000)
    result = invoke("enhance", clip, "-o", tmp_path / "o.wav", "--model", "tiny")
    assert result.exit_code == 2
    line = one_error_line(result)
    assert "weights" in line and "is a preset" in line and "models create tiny" in line
    assert not (tmp_path / "o.wav").exists()


# -- help text -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "command", [["enhance"], ["batch"], ["bench"], ["eval"], ["train"], ["models", "create"]]
)
def test_help_shows_flags_without_values_and_plain_usage(command: list[str]) -> None:
    result = invoke(*command, "--help", width=100)
    assert result.exit_code == 0
    text = result.output
    assert "<bool>" not in text and "<list[" not in text
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "}" not in usage, usage
    assert all(line.count("default") <= 1 for line in text.splitlines())


def test_help_states_the_real_defaults() -> None:
    enhance = invoke("enhance", "--help", width=200).output
    assert "_enhanced.wav" in enhance and "IN_enhanced.wav" not in enhance
    assert "[default: 10.24]" in enhance and "[default: 1.0]" in enhance
    assert "Usage: finally train [OPTIONS] [COMMAND [ARGS]...]" in invoke("train", "--help").output
    workers = [line for line in invoke("eval", "--help", width=200).output.splitlines()
               if "--workers" in line]  # fmt: skip
    assert len(workers) == 1 and workers[0].count("default") == 1
    assert invoke("enhance", "x.wav", "--overwrite", "true").exit_code == 2  # a flag takes no value


# -- outputs -------------------------------------------------------------------------------
def test_output_folder_and_default_name(tmp_path: Path, tiny_dir: Path) -> None:
    clip = write(tmp_path / "talk.flac", speechlike(0.4, 16000), 16000)
    folder = tmp_path / "out"
    result = invoke("enhance", clip, "-o", f"{folder}/", "--model", tiny_dir, "-q")
    assert result.exit_code == 0, result.output
    assert (folder / "talk_enhanced.wav").is_file()
    result = invoke("enhance", clip, "-o", folder, "--model", tiny_dir, "-q")  # existing folder
    assert result.exit_code == 1 and "output exists" in one_error_line(result)
    result = invoke("enhance", clip, "--model", tiny_dir, "-q")  # beside the input, as WAV
    assert result.exit_code == 0 and (tmp_path / "talk_enhanced.wav").is_file()
    result = invoke("enhance", clip, "-o", tmp_path / "noext", "--model", tiny_dir)
    assert result.exit_code == 2 and "no extension" in one_error_line(result)


def test_quiet_prints_nothing(tmp_path: Path, tiny_dir: Path) -> None:
    clip = write(tmp_path / "in.wav", speechlike(0.3, 16000), 16000)
    result = invoke("enhance", clip, "-o", tmp_path / "o.wav", "--model", tiny_dir, "-q")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    result = invoke("batch", tmp_path, "-o", tmp_path / "b", "--model", tiny_dir, "-q")
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""


# -- inputs through ffmpeg --------------------------------------------------------------------
def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@needs_ffmpeg
def test_m4a_and_video_soundtracks_decode_through_ffmpeg(tmp_path: Path, tiny_dir: Path) -> None:
    m4a, video = tmp_path / "talk.m4a", tmp_path / "clip.mp4"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=1.3:sample_rate=44100", "-ac", "2",
            "-c:a", "aac", str(m4a))  # fmt: skip
    _ffmpeg("-f", "lavfi", "-i", "color=c=black:s=16x16:d=1.1", "-f", "lavfi", "-i",
            "sine=frequency=200:duration=1.1:sample_rate=48000", "-shortest", "-c:v", "mpeg4",
            "-c:a", "aac", str(video))  # fmt: skip
    for source, seconds in ((m4a, 1.3), (video, 1.1)):
        out = tmp_path / f"{source.stem}.wav"
        result = invoke("enhance", source, "-o", out, "--model", tiny_dir, "-q")
        assert result.exit_code == 0, result.output
        audio, rate = sf.read(str(out))
        assert rate == 48000 and abs(audio.shape[0] / rate - seconds) < 0.05
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0.01
    bad = tmp_path / "bad.m4a"
    bad.write_bytes(b"not audio at all" * 10)
    result = invoke("enhance", bad, "-o", tmp_path / "bad.wav", "--model", tiny_dir)
    assert result.exit_code == 1 and "bad.m4a: cannot read" in one_error_line(result)


@needs_ffmpeg
def test_without_ffmpeg_one_line_says_it_is_needed(
    tmp_path: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m4a = tmp_path / "talk.m4a"
    _ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", "-c:a", "aac", str(m4a))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    result = invoke("enhance", m4a, "-o", tmp_path / "o.wav", "--model", tiny_dir)
    assert result.exit_code == 1
    assert "install ffmpeg" in one_error_line(result)
    assert not (tmp_path / "o.wav").exists()


def test_ffmpeg_decoding_is_streamed(tmp_path: Path) -> None:
    from finally_cli.audio.io import read_buffers, read_info

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    m4a = tmp_path / "long.m4a"
    _ffmpeg("-f", "lavfi", "-i", "sine=duration=20:sample_rate=16000", "-c:a", "aac", str(m4a))
    info = read_info(m4a)
    assert info.decoder == "ffmpeg"
    sizes = [b.shape[0] for b in read_buffers(info, buffer_frames=16000)]
    assert max(sizes) <= 16000 and abs(sum(sizes) - 20 * 16000) < 4096


# -- batch -----------------------------------------------------------------------------------
def test_batch_reports_once_rounds_keeps_earlier_results_and_counts_unread(
    tmp_path: Path, tiny_dir: Path
) -> None:
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    write(src / "a.wav", speechlike(0.5, 16000), 16000)
    (src / "bad.wav").write_text("garbage")
    (src / "notes.txt").write_text("x")
    (src / "cover.jpg").write_bytes(b"x")
    result = invoke("batch", src, "-o", dst, "--model", tiny_dir, "--ext", "wav")
    assert result.exit_code == 1
    assert result.stderr.count("bad.wav") == 1, result.stderr
    assert "2 other files (1 .jpg, 1 .txt) not read" in result.stdout
    rows = list(csv.DictReader((dst / "finally-report.csv").open()))
    ok = next(r for r in rows if r["status"] == "ok")
    assert len(ok["seconds"].partition(".")[2]) <= 3 and float(ok["seconds"]) > 0
    # A re-run keeps the earlier result of the finished file, and still reports the failure.
    result = invoke("batch", src, "-o", dst, "--model", tiny_dir, "--ext", "wav")
    assert "0 enhanced, 1 skipped, 1 failed" in result.stdout
    again = {r["input"]: r for r in csv.DictReader((dst / "finally-report.csv").open())}
    assert again[ok["input"]] == ok
    # A report file that batch did not write is never replaced.
    foreign = tmp_path / "mine.json"
    foreign.write_text('{"not": "a report"}')
    result = invoke("batch", src, "-o", dst, "--model", tiny_dir, "--report", foreign)
    assert result.exit_code == 1 and "not a finally batch report" in one_error_line(result)
    assert foreign.read_text() == '{"not": "a report"}'


def test_batch_empty_folder_fails_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "readme.txt").write_text("x")
    result = invoke("batch", tmp_path / "in", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "no audio files" in one_error_line(result) and "1 other file (1 .txt)" in result.stderr


# -- start-up, --compile, models, eval -----------------------------------------------------------
def test_enhance_without_ssl_never_imports_transformers(tmp_path: Path, small_dir: Path) -> None:
    clip = write(tmp_path / "in.wav", speechlike(0.1, 16000), 16000)
    code = (
        "import sys\nfrom finally_cli.cli.app import app\n"
        f"try:\n    app(['enhance', {str(clip)!r}, '-o', {str(tmp_path / 'o.wav')!r}, "
        f"'--model', {str(small_dir)!r}, '-q'])\nexcept SystemExit as e:\n    assert not e.code\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'scipy')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout


def test_compile_on_cpu_warns_with_the_measured_reason(
    small_model,
    capsys: pytest.CaptureFixture,  # noqa: ANN001
) -> None:
    from finally_cli.cli.app import _show_warning
    from finally_cli.errors import FinallyWarning
    from finally_cli.inference.enhancer import Enhancer, EnhancerOptions

    with pytest.warns(FinallyWarning, match=r"173 s"):
        Enhancer(small_model, EnhancerOptions(device="cpu", compile=True))
    _show_warning("--compile on CPU: ...", FinallyWarning, "enhancer.py", 1)
    assert capsys.readouterr().err == "warning: --compile on CPU: ...\n"


def test_models_list_and_info_fit_80_columns_with_licence(tmp_path: Path) -> None:
    listing = invoke("models", "list")
    assert listing.exit_code == 0 and "…" not in listing.output
    assert max(map(len, listing.output.splitlines())) <= 80
    assert "weights/finally-small" in listing.output.replace("\n", "").replace(" ", "").replace(
        "│", ""
    )
    info = invoke("models", "info", "finally-small")
    assert info.exit_code == 0 and "licence: apache-2.0" in info.output
    as_json = json.loads(invoke("models", "info", "finally-small", "--json").output)
    assert as_json["card"]["licence"] == "apache-2.0"


def test_eval_table_is_readable_at_80_columns() -> None:
    from rich.console import Console

    from finally_cli.evaluation.report import rich_table

    columns = ["dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808", "pesq", "estoi", "sisdr"]
    systems = ["noisy", "finally-small", "rnnoise", "deepfilternet3", "nsnet2", "dtln"]
    summary = {
        s: {c: {"mean": 1.5 + i, "ci95": 0.05, "delta": 0.25 if i else None} for c in columns}
        for i, s in enumerate(systems)
    }
    console = Console(width=80, record=True)
    console.print(rich_table(summary, columns, "t", width=80))
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 80 and "…" not in text
    assert text.count("6.500") == len(columns) and text.count("+0.250") == 5 * len(columns)
