"""Shared fixtures: tiny and random finally-small model folders, audio writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from finally_cli.models.hub import create_model, save_model

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "tiny"
    save_model(create_model("tiny", seed=0), folder)
    return folder


@pytest.fixture(scope="session")
def small_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models") / "finally-small"
    save_model(create_model("finally-small", seed=0), folder)
    return folder


@pytest.fixture(scope="session")
def small_model(small_dir: Path):  # noqa: ANN201
    from finally_cli.models.hub import load_model

    return load_model(str(small_dir))


def speechlike(
    seconds: float, sample_rate: int, channels: int = 1, seed: int = 0, max_hz: float | None = None
) -> np.ndarray:
    """Harmonics of a gliding f0 under a syllable envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    n = max(1, int(round(seconds * sample_rate)))
    t = np.arange(n) / sample_rate
    out = np.zeros((n, channels), dtype=np.float32)
    limit = max_hz or sample_rate / 2 * 0.9
    for c in range(channels):
        f0 = 110 + 20 * c + 25 * np.sin(2 * np.pi * 0.5 * t)
        phase = 2 * np.pi * np.cumsum(f0) / sample_rate
        voiced = sum(
            np.sin(k * phase + rng.uniform(0, 6)) / k for k in range(1, 30) if (k * 160) < limit
        )
        env = 0.3 + 0.7 * np.sin(2 * np.pi * 3 * t + c) ** 2
        out[:, c] = 0.2 * voiced * env
    return out


def write(path: Path, audio: np.ndarray, sample_rate: int, subtype: str | None = None) -> Path:
    sf.write(str(path), audio, sample_rate, subtype=subtype)
    return path


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference = np.asarray(reference, dtype=np.float64)
    error = reference - np.asarray(estimate, dtype=np.float64)
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum(error**2), 1e-30)))


def invoke(*args: str):  # noqa: ANN201
    """Run the `finally` CLI in-process (typer's CliRunner), stdout and stderr kept apart."""
    from typer.testing import CliRunner

    from finally_cli.cli.app import app  # imported late: a CLI module being edited fails alone

    return CliRunner().invoke(app, list(args))


def one_error_line(stderr: str) -> str:
    """The one non-empty line a refused command printed (asserts there is exactly one)."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]
