"""Time alignment of an estimate to its reference by cross-correlation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal


@dataclass(frozen=True)
class Alignment:
    """An aligned pair and the lag that aligned it.

    Attributes:
        reference, estimate: equal-length aligned signals.
        lag: samples the estimate was late (positive) or early (negative).
        length_difference: len(estimate) - len(reference) before alignment, samples.
    """

    reference: np.ndarray
    estimate: np.ndarray
    lag: int
    length_difference: int


def find_lag(reference: np.ndarray, estimate: np.ndarray, max_lag: int) -> int:
    """Lag (samples) maximising the cross-correlation, searched within ±max_lag."""
    corr = signal.correlate(estimate, reference, mode="full", method="fft")
    lags = signal.correlation_lags(len(estimate), len(reference), mode="full")
    window = np.abs(lags) <= max_lag
    if not np.any(np.abs(corr[window]) > 0):
        return 0
    return int(lags[window][np.argmax(corr[window])])


def align(
    reference: np.ndarray, estimate: np.ndarray, sample_rate: int, max_lag_seconds: float = 0.5
) -> Alignment:
    """Shift `estimate` by the best lag and crop both to their common span."""
    lag = find_lag(reference, estimate, int(max_lag_seconds * sample_rate))
    difference = len(estimate) - len(reference)
    if lag > 0:
        estimate = estimate[lag:]
    elif lag < 0:
        reference = reference[-lag:]
    n = min(len(reference), len(estimate))
    return Alignment(reference[:n], estimate[:n], lag, difference)
