"""One gain per file: an active-speech level measured in a cheap first pass."""

from __future__ import annotations

import math

import numpy as np

TARGET_DBFS = -23.0  # active level the models are trained and run at
PEAK_LIMIT = 0.95  # gained peak ceiling, below a tanh output's range (None: models without one)
MAX_GAIN_DB = 40.0
FRAME_SECONDS = 0.05
ACTIVE_RANGE_DB = 40.0  # frames within this range of the loudest count as active
SPIKE_DB = 40.0  # a frame this much louder than every frame 100-150 ms either side is a spike
SPIKE_REACH = (2, 3)  # the frame distances compared: a word spans more than 100 ms
INPUT_LIMIT = 2.0  # gained model input is clamped here: only an excluded spike reaches it
# (peak-limited input stays below PEAK_LIMIT, plus what resampling overshoots)
OVERSHOOT = 1.25  # headroom over a gained peak for resampling's overshoot


class LevelMeter:
    """Accumulates 50 ms frame energies and peaks over blocks of a signal.

    Isolated spikes (a frame > SPIKE_DB above its neighbours 100-150 ms away, e.g. one
    sample of 1e6 in a float file) count neither towards the active level nor the peak, so
    one bad sample cannot turn the whole file's gain down to nothing.
    """

    def __init__(self, sample_rate: int) -> None:
        self.frame = max(1, int(round(FRAME_SECONDS * sample_rate)))
        self.energies: list[float] = []
        self.peaks: list[float] = []
        self._rest = np.zeros((2, 0), dtype=np.float64)  # [mono, |sample| max over channels]

    def update(self, block: np.ndarray) -> None:
        """Add samples: [samples] mono, or [samples, channels] (level of the channel mean,
        peak over every channel)."""
        block = np.asarray(block)
        if block.shape[0] == 0:
            return
        mono = block if block.ndim == 1 else block.mean(axis=1)
        magnitude = np.abs(block) if block.ndim == 1 else np.abs(block).max(axis=1)
        data = np.concatenate([self._rest, np.stack([mono, magnitude]).astype(np.float64)], 1)
        whole = data.shape[1] // self.frame * self.frame
        if whole:
            frames = data[:, :whole].reshape(2, -1, self.frame)
            self.energies.extend(np.mean(frames[0] ** 2, axis=1).tolist())
            self.peaks.extend(frames[1].max(axis=1).tolist())
        self._rest = data[:, whole:]

    def _frames(self) -> tuple[np.ndarray, np.ndarray]:
        """(energies, peaks) of the frames that are not isolated spikes."""
        energies, peaks = list(self.energies), list(self.peaks)
        if self._rest.shape[1]:
            energies.append(float(np.mean(self._rest[0] ** 2)))
            peaks.append(float(self._rest[1].max()))
        values, tops = np.asarray(energies), np.asarray(peaks)
        if values.size == 0:
            return values, tops
        padded = np.pad(values, SPIKE_REACH[1], constant_values=np.nan)
        count = values.size
        around = np.stack(
            [
                padded[SPIKE_REACH[1] + shift : SPIKE_REACH[1] + shift + count]
                for distance in range(SPIKE_REACH[0], SPIKE_REACH[1] + 1)
                for shift in (-distance, distance)
            ]
        )
        has_neighbour = ~np.isnan(around).all(axis=0)
        louder = np.nanmax(np.where(has_neighbour, around, 0.0), axis=0)
        spike = has_neighbour & (values > louder * 10 ** (SPIKE_DB / 10)) & (values > 0)
        return values[~spike], tops[~spike]

    @property
    def peak(self) -> float:
        """Largest absolute sample outside isolated spikes."""
        _, tops = self._frames()
        return float(tops.max()) if tops.size else 0.0

    def active_rms(self) -> float:
        values, _ = self._frames()
        if not values.size:
            return 0.0
        loudest = values.max()
        if loudest <= 0:
            return 0.0
        active = values[values >= loudest * 10 ** (-ACTIVE_RANGE_DB / 10)]
        return float(math.sqrt(active.mean()))

    def gain(self, peak_limit: float | None = PEAK_LIMIT) -> float:
        """Linear gain taking the active level to TARGET_DBFS; 1 for silence.

        With `peak_limit`, the gained peak stays at or below it: what a model whose output
        passes a tanh needs (its output cannot reach past ±1), and what a file written at the
        gained level needs. A model whose output scales with its input (the spectral
        restorer) gets None: one click at full scale in a quiet recording would otherwise
        hold the speech 15-20 dB under the level the model learnt, and the model takes
        speech that quiet for noise (docs/training.md, item 26).
        """
        rms = self.active_rms()
        peak = self.peak
        if rms <= 1e-9 or peak <= 0:
            return 1.0
        gain = min(10 ** (TARGET_DBFS / 20) / rms, 10 ** (MAX_GAIN_DB / 20))
        if peak_limit is not None:
            gain = min(gain, peak_limit / peak)
        return float(gain)

    def input_limit(self, gain: float, peak_limit: float | None = PEAK_LIMIT) -> float:
        """Where the gained input is clamped: INPUT_LIMIT under a peak ceiling; without one,
        above the gained peak (with headroom for resampling), so that only an isolated spike
        the level pass left out is clamped, never a loud sound that belongs to the recording
        (a laugh, a door in a quiet room)."""
        if peak_limit is not None:
            return INPUT_LIMIT
        return max(INPUT_LIMIT, OVERSHOOT * gain * self.peak)
