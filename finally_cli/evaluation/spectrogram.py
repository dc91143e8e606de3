"""Spectrogram images for the listening report: mel-spaced 0–24 kHz, encoded as PNG by hand."""

from __future__ import annotations

import functools
import struct
import zlib

import numpy as np

RATE = 48000
N_FFT, HOP = 1024, 256
# Dark → purple → red → orange → pale yellow: brightness grows with level, so the image reads
# the same in grey.
_ANCHORS = np.array(
    [[0, 0, 0], [30, 10, 80], [110, 20, 120], [190, 40, 90], [240, 100, 40], [255, 190, 60],
     [255, 255, 200]],
    dtype=np.float64,
)  # fmt: skip
COLORS = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)), c) for c in _ANCHORS.T],
    axis=1,
).astype(np.uint8)  # [256, 3]


def _mel(hz: np.ndarray) -> np.ndarray:
    return 2595 * np.log10(1 + hz / 700)


def mel_fraction(hz: float) -> float:
    """Height (0 = bottom, 1 = top) at which `hz` sits on the images' mel axis."""
    return float(_mel(np.array(hz)) / _mel(np.array(RATE / 2)))


@functools.lru_cache(maxsize=4)
def band_matrix(rows: int, bins: int = N_FFT // 2 + 1) -> np.ndarray:
    """Averaging weights [rows, bins]: row r covers a mel-spaced band of 0–24 kHz (row 0 lowest).

    Narrow low bands that hold no FFT bin take their nearest bin, so no row is empty.
    """
    edges = 700 * (10 ** (np.linspace(0, _mel(np.array(RATE / 2)), rows + 1) / 2595) - 1)
    freqs = np.arange(bins) * RATE / N_FFT
    weights = np.zeros((rows, bins))
    for row in range(rows):
        inside = (freqs >= edges[row]) & (freqs < edges[row + 1])
        if not inside.any():
            inside[np.argmin(np.abs(freqs - (edges[row] + edges[row + 1]) / 2))] = True
        weights[row, inside] = 1 / inside.sum()
    return weights


def power_db(audio48: np.ndarray, rows: int, width: int) -> np.ndarray:
    """Level in dB (re full scale) on a [rows, ≤ width] grid: mel rows × pooled STFT frames.

    Args:
        audio48: mono samples at 48 kHz, [samples].
        rows: image height (mel bands).
        width: most columns; longer signals average neighbouring frames into one column.
    """
    audio48 = np.asarray(audio48, dtype=np.float64)
    if audio48.size < N_FFT:
        audio48 = np.pad(audio48, (0, N_FFT - audio48.size))
    frames = 1 + (audio48.size - N_FFT) // HOP
    columns = min(width, frames)
    column_of = np.arange(frames) * columns // frames  # frame → image column
    window = np.hanning(N_FFT)
    sums = np.zeros((columns, N_FFT // 2 + 1))
    for first in range(0, frames, 512):  # frames pooled as they come: bounded memory
        index = np.arange(first, min(first + 512, frames))
        power = np.abs(np.fft.rfft(audio48[index[:, None] * HOP + np.arange(N_FFT)] * window)) ** 2
        cols = column_of[index]
        starts = np.flatnonzero(np.r_[True, np.diff(cols) != 0])
        sums[cols[starts]] += np.add.reduceat(power, starts, axis=0)
    pooled = sums / np.bincount(column_of, minlength=columns)[:, None]
    pooled /= (window.sum() / 2) ** 2  # a full-scale sine reads 0 dB
    return 10 * np.log10(band_matrix(rows) @ pooled.T + 1e-12)  # [rows, columns]


def to_png(level_db: np.ndarray, top_db: float, range_db: float = 80.0) -> bytes:
    """Colour-map [rows, columns] dB (row 0 = lowest band, drawn at the bottom) into a PNG."""
    scaled = np.clip((level_db - (top_db - range_db)) / range_db, 0, 1)
    rgb = COLORS[np.round(scaled[::-1] * 255).astype(np.uint8)]  # [rows, columns, 3]
    return encode_png(rgb)


def encode_png(rgb: np.ndarray) -> bytes:
    """A truecolour PNG of uint8 [height, width, 3] (filter 0 on every scanline)."""
    height, width, _ = rgb.shape
    raw = np.concatenate([np.zeros((height, 1), np.uint8), rgb.reshape(height, -1)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
        + chunk(b"IEND", b"")
    )
