"""Window geometry and plans on a reflection-padded signal, complementary fades, overlap-add."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowPlan:
    """Windows over a signal of `samples`, in padded coordinates.

    Padded coordinate p maps to signal index p - edge; indices outside [0, samples) read
    the signal mirrored at its ends. Window k covers [starts[k], starts[k] + lengths[k]);
    neighbours share `overlap` samples.
    """

    samples: int
    edge: int
    overlap: int
    starts: tuple[int, ...]
    lengths: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.starts)


def round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


MIN_EDGE_SECONDS = 0.128  # mirrored context at each end of a file (2048 samples at 16 kHz)


@dataclass(frozen=True)
class WindowSpec:
    """How a model cuts signals into windows: rates and lengths, fixed for a run.

    Lengths are in samples at `input_rate`. Built by `WindowSpec.for_model` from what the
    model says about itself (rates, length multiple) and the user's window/overlap seconds.

    Attributes:
        input_rate: the model's input sample rate (16 kHz for FINALLY).
        output_rate: the model's output sample rate (48 or 16 kHz).
        window: window length, a multiple of `multiple`.
        overlap: samples shared (cross-faded) by neighbouring windows, ≤ window / 2.
        edge: mirrored context before the first and after the last sample.
        multiple: every window length is a multiple of this (no padding inside the model).
    """

    input_rate: int
    output_rate: int
    window: int
    overlap: int
    edge: int
    multiple: int

    @classmethod
    def for_model(cls, model: object, window_seconds: float, overlap_seconds: float) -> WindowSpec:
        """The spec of `model` (its `config` rates and `length_multiple`) for these lengths.

        The window is rounded up to the length multiple; the overlap is capped at half a
        window; the edge is at least `MIN_EDGE_SECONDS` or half the overlap.
        """
        config = model.config  # type: ignore[attr-defined]
        rate = int(config.input_sample_rate)
        multiple = int(model.length_multiple)  # type: ignore[attr-defined]
        window = max(multiple, round_up(int(round(window_seconds * rate)), multiple))
        overlap = min(int(round(overlap_seconds * rate)), window // 2)
        edge = max(int(round(MIN_EDGE_SECONDS * rate)), overlap // 2)
        return cls(rate, int(config.output_sample_rate), window, overlap, edge, multiple)

    @property
    def factor(self) -> int:
        """Output samples per input sample."""
        return self.output_rate // self.input_rate

    @property
    def window_seconds(self) -> float:
        return self.window / self.input_rate

    @property
    def overlap_seconds(self) -> float:
        return self.overlap / self.input_rate

    def plan(self, samples: int) -> WindowPlan:
        """Windows over a signal of `samples` input-rate samples."""
        return plan_windows(samples, self.window, self.overlap, self.edge, self.multiple)


def plan_windows(samples: int, chunk: int, overlap: int, edge: int, multiple: int) -> WindowPlan:
    """Cut [−edge, samples + edge) into windows of `chunk` samples sharing `overlap`.

    A signal that fits one chunk gets a single window rounded up to `multiple` (so
    short files are not padded to a full chunk). Longer signals get equal windows; the
    last one runs past the end into the mirrored tail, which is trimmed after.

    Args:
        samples: signal length (≥ 1).
        chunk: window length, a multiple of `multiple`.
        overlap: samples shared by neighbouring windows, 0 ≤ overlap ≤ chunk / 2.
        edge: mirrored context before the first and after the last sample.
        multiple: window lengths are multiples of this.
    """
    if chunk % multiple or chunk <= 0:
        raise ValueError(f"chunk={chunk} must be a positive multiple of {multiple}")
    if not 0 <= overlap <= chunk // 2:
        raise ValueError(f"overlap={overlap} must be within [0, chunk / 2 = {chunk // 2}]")
    padded = samples + 2 * edge
    if padded <= chunk:
        return WindowPlan(samples, edge, overlap, (0,), (round_up(padded, multiple),))
    hop = chunk - overlap
    count = int(math.ceil((padded - overlap) / hop))
    starts = tuple(k * hop for k in range(count))
    return WindowPlan(samples, edge, overlap, starts, (chunk,) * count)


def mirror_indices(indices: np.ndarray, samples: int) -> np.ndarray:
    """Map any integer indices into [0, samples) by mirroring at the ends (no edge repeat)."""
    if samples == 1:
        return np.zeros_like(indices)
    period = 2 * (samples - 1)
    folded = np.mod(indices, period)
    return np.where(folded >= samples, period - folded, folded)


def fade_in(length: int) -> np.ndarray:
    """Raised-cosine fade 0 → 1 over `length` samples; `1 - fade_in` is its exact complement."""
    t = (np.arange(length, dtype=np.float64) + 0.5) / max(length, 1)
    return 0.5 - 0.5 * np.cos(np.pi * t)


class OverlapAdder:
    """Streams the overlap-add of window outputs for one signal with `tracks` channels.

    Window outputs arrive in order (all tracks of window k before window k+1). Fades over
    each shared region sum to exactly one, so a model that returns its input gives the
    input back. Samples before the next window's start are final and are returned.

    Args:
        plan: the window plan (input rate).
        factor: output samples per input sample (3 for 16 → 48 kHz).
        tracks: channels processed independently.
    """

    def __init__(self, plan: WindowPlan, factor: int, tracks: int) -> None:
        self.plan = plan
        self.factor = factor
        self.tracks = tracks
        self.fade = fade_in(plan.overlap * factor).astype(np.float64)
        self.buffer = np.zeros((tracks, 0), dtype=np.float64)
        self.buffer_start = 0  # padded output coordinate of buffer[:, 0]
        self.emitted = plan.edge * factor  # next output coordinate to emit
        self.end = (plan.edge + plan.samples) * factor
        self._pending: dict[int, np.ndarray] = {}

    def add(self, window: int, track: int, output: np.ndarray) -> np.ndarray:
        """Add one window's output [samples · factor]; return newly final samples [tracks, n]."""
        self._pending[track] = output
        if len(self._pending) < self.tracks:
            return np.zeros((self.tracks, 0), dtype=np.float32)
        stacked = np.stack([self._pending.pop(t) for t in range(self.tracks)]).astype(np.float64)
        return self._add_window(window, stacked)

    def _add_window(self, window: int, output: np.ndarray) -> np.ndarray:
        plan, factor = self.plan, self.factor
        start = plan.starts[window] * factor
        length = plan.lengths[window] * factor
        output = output[:, :length].copy()
        fade_length = self.fade.size
        if window > 0 and fade_length:
            output[:, :fade_length] *= self.fade
        if window < plan.count - 1 and fade_length:
            output[:, length - fade_length : length] *= 1.0 - self.fade
        end = start + length
        needed = end - self.buffer_start
        if needed > self.buffer.shape[1]:
            grown = np.zeros((self.tracks, needed), dtype=np.float64)
            grown[:, : self.buffer.shape[1]] = self.buffer
            self.buffer = grown
        offset = start - self.buffer_start
        self.buffer[:, offset : offset + length] += output
        final_until = plan.starts[window + 1] * factor if window < plan.count - 1 else end
        return self._emit(min(final_until, self.end))

    def _emit(self, until: int) -> np.ndarray:
        if until <= self.emitted:
            return np.zeros((self.tracks, 0), dtype=np.float32)
        lo = self.emitted - self.buffer_start
        hi = until - self.buffer_start
        out = self.buffer[:, lo:hi].astype(np.float32)
        self.buffer = self.buffer[:, hi:]
        self.buffer_start = until
        self.emitted = until
        return out

    @property
    def done(self) -> bool:
        return self.emitted >= self.end
