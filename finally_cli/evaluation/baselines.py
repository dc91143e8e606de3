"""Baseline systems users would reach for instead: the input itself, noisereduce, RNNoise."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from finally_cli.errors import ConfigError

BASELINES = ("input", "noisereduce", "rnnoise")
_EXTRAS = {"noisereduce": "noisereduce", "rnnoise": "pyrnnoise"}


def check_baseline(name: str) -> None:
    if name not in BASELINES:
        raise ConfigError(f"--baseline {name!r}: expected one of {', '.join(BASELINES)}")
    module = _EXTRAS.get(name)
    if module and importlib.util.find_spec(module) is None:
        raise ConfigError(f"--baseline {name} needs {module}: pip install {module}")


def noisereduce(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """Spectral gating (noisereduce, non-stationary defaults)."""
    import noisereduce as nr

    return nr.reduce_noise(y=audio, sr=sample_rate).astype(np.float32), sample_rate


def rnnoise(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """RNNoise (pyrnnoise), which runs on 48 kHz 16-bit frames."""
    import soxr
    from pyrnnoise import RNNoise

    audio48 = soxr.resample(audio, sample_rate, 48000)
    pcm = (np.clip(audio48, -1, 1) * 32767).astype(np.int16)[None, :]
    denoiser = RNNoise(48000)
    frames = [frame for _, frame in denoiser.denoise_chunk(pcm, partial=True)]
    out = np.concatenate(frames, axis=-1).reshape(-1).astype(np.float32) / 32767
    out = out[: audio48.size]
    if out.size < audio48.size:
        out = np.pad(out, (0, audio48.size - out.size))
    return out, 48000


RUNNERS: dict[str, Callable[[np.ndarray, int], tuple[np.ndarray, int]]] = {
    "noisereduce": noisereduce,
    "rnnoise": rnnoise,
}


def run_baseline(
    name: str, noisy: dict[str, Path], out_dir: Path, progress: Callable[[], None] | None = None
) -> Path:
    """Process every noisy file (key → path) into `out_dir/<key>.wav`; existing ones are kept."""
    import soundfile as sf

    from finally_cli.evaluation.runner import load_mono

    out_dir.mkdir(parents=True, exist_ok=True)
    for key, path in noisy.items():
        target = out_dir / f"{key}.wav"
        if not target.exists():
            audio, rate = load_mono(path)
            result, out_rate = RUNNERS[name](audio, rate)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.part")
            sf.write(str(tmp), result, out_rate, subtype="FLOAT", format="WAV")
            tmp.replace(target)
        if progress:
            progress()
    return out_dir
