"""Mixing noise into speech at a chosen signal-to-noise ratio."""

from __future__ import annotations

import numpy as np


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`clean` plus `noise` scaled so that 10·log10(P_clean / P_noise) = `snr_db`.

    Args:
        clean: [samples] signal.
        noise: [any] noise, tiled or cut to `clean`'s length.
        snr_db: target ratio of mean powers, in dB.

    Returns:
        [samples] in `clean`'s dtype; `clean` unchanged when either signal is silent.
    """
    if noise.size != clean.size:
        noise = np.resize(noise, clean.size)
    clean_power = np.mean(clean.astype(np.float64) ** 2)
    noise_power = np.mean(noise.astype(np.float64) ** 2)
    if clean_power <= 0 or noise_power <= 0:
        return clean.copy()
    scale = np.sqrt(clean_power / (noise_power * 10 ** (snr_db / 10)))
    return (clean + scale * noise).astype(clean.dtype, copy=False)
