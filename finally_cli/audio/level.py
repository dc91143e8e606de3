"""One gain per file: an active-speech level measured in a cheap first pass."""

from __future__ import annotations

import math

import numpy as np

TARGET_DBFS = -23.0  # active level the models are trained and run at
PEAK_LIMIT = 0.95  # gained peak ceiling, below the generator's tanh output range
MAX_GAIN_DB = 40.0
FRAME_SECONDS = 0.05
ACTIVE_RANGE_DB = 40.0  # frames within this range of the loudest count as active


class LevelMeter:
    """Accumulates peak and 50 ms frame energies over blocks of a mono signal."""

    def __init__(self, sample_rate: int) -> None:
        self.frame = max(1, int(round(FRAME_SECONDS * sample_rate)))
        self.peak = 0.0
        self.energies: list[float] = []
        self._rest = np.zeros(0, dtype=np.float64)

    def update(self, mono: np.ndarray) -> None:
        if mono.size == 0:
            return
        self.peak = max(self.peak, float(np.max(np.abs(mono))))
        data = np.concatenate([self._rest, mono.astype(np.float64)])
        whole = data.size // self.frame * self.frame
        if whole:
            frames = data[:whole].reshape(-1, self.frame)
            self.energies.extend(np.mean(frames**2, axis=1).tolist())
        self._rest = data[whole:]

    def active_rms(self) -> float:
        energies = list(self.energies)
        if self._rest.size:
            energies.append(float(np.mean(self._rest**2)))
        if not energies:
            return 0.0
        values = np.asarray(energies)
        loudest = values.max()
        if loudest <= 0:
            return 0.0
        active = values[values >= loudest * 10 ** (-ACTIVE_RANGE_DB / 10)]
        return float(math.sqrt(active.mean()))

    def gain(self) -> float:
        """Linear gain taking the active level to TARGET_DBFS, peak-limited; 1 for silence."""
        rms = self.active_rms()
        if rms <= 1e-9 or self.peak <= 0:
            return 1.0
        gain = 10 ** (TARGET_DBFS / 20) / rms
        gain = min(gain, PEAK_LIMIT / self.peak, 10 ** (MAX_GAIN_DB / 20))
        return float(gain)
