"""Metric functions: DNSMOS (no reference); WB-PESQ, ESTOI, SI-SDR, LSD (with a reference)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from finally_cli.errors import ConfigError


@dataclass(frozen=True)
class Metric:
    """A metric, the columns it fills and what it needs.

    Attributes:
        name: the name used in --metrics.
        columns: result columns (a metric may give several, e.g. DNSMOS).
        needs_reference: whether it compares against a clean reference.
        higher_is_better: direction, for deltas and plots.
    """

    name: str
    columns: tuple[str, ...]
    needs_reference: bool
    higher_is_better: bool = True


METRICS: dict[str, Metric] = {
    "dnsmos": Metric("dnsmos", ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"), False),
    "utmos": Metric("utmos", ("utmos",), False),
    "wvmos": Metric("wvmos", ("wvmos",), False),
    "pesq": Metric("pesq", ("pesq",), True),
    "estoi": Metric("estoi", ("estoi",), True),
    "sisdr": Metric("sisdr", ("sisdr",), True),
    "lsd": Metric("lsd", ("lsd",), True, higher_is_better=False),
}
DEFAULT_METRICS = ("dnsmos", "utmos", "wvmos", "pesq", "estoi", "sisdr", "lsd")


def column_direction(column: str) -> bool:
    """True when higher values of `column` are better."""
    return not column.startswith("lsd")


def parse_metrics(text: str | None) -> list[Metric]:
    names = DEFAULT_METRICS if not text else [n.strip().lower() for n in text.split(",")]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ConfigError(f"--metrics: unknown {unknown}; known: {', '.join(METRICS)}")
    return [METRICS[n] for n in names]


def unavailable_reason(name: str) -> str | None:
    """Why a metric cannot run here, or None when it can."""
    if name == "dnsmos":
        missing = [
            m
            for m in ("speechmos", "onnxruntime", "librosa")
            if importlib.util.find_spec(m) is None
        ]
        if missing:
            return f"needs {', '.join(missing)} (pip install 'finally-cli[eval]')"
    if name == "utmos":
        return (
            "UTMOS weights (tarepan/SpeechMOS utmos22_strong) are fetched from GitHub/the Hub "
            "at run time and are not available offline"
        )
    if name == "wvmos":
        return "WV-MOS weights (Zenodo 6201162) are not available offline"
    if name == "pesq" and importlib.util.find_spec("pesq") is None:
        return "needs pesq (pip install pesq)"
    if name == "estoi" and importlib.util.find_spec("pystoi") is None:
        return "needs pystoi (pip install pystoi)"
    return None


def dnsmos(estimate_16k: np.ndarray) -> dict[str, float]:
    """DNSMOS P.835 SIG/BAK/OVRL and P.808 (ONNX models shipped in `speechmos`)."""
    from speechmos import dnsmos as speechmos_dnsmos

    audio = np.clip(estimate_16k.astype(np.float64), -1.0, 1.0)
    scores = speechmos_dnsmos.run(audio, sr=16000)
    return {
        "dnsmos_sig": float(scores["sig_mos"]),
        "dnsmos_bak": float(scores["bak_mos"]),
        "dnsmos_ovrl": float(scores["ovrl_mos"]),
        "dnsmos_p808": float(scores["p808_mos"]),
    }


def pesq_wb(reference_16k: np.ndarray, estimate_16k: np.ndarray) -> float:
    """Wide-band PESQ (ITU-T P.862.2) at 16 kHz; NaN when no utterance is detected."""
    from pesq import NoUtterancesError, pesq

    try:
        return float(
            pesq(16000, reference_16k.astype(np.float64), estimate_16k.astype(np.float64), "wb")
        )
    except NoUtterancesError:
        return float("nan")


def estoi(reference_16k: np.ndarray, estimate_16k: np.ndarray) -> float:
    """Extended STOI (pystoi, extended=True)."""
    from pystoi import stoi

    return float(stoi(reference_16k, estimate_16k, 16000, extended=True))


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SDR in dB (means removed; the reference is scaled to fit)."""
    reference = reference.astype(np.float64) - reference.mean()
    estimate = estimate.astype(np.float64) - estimate.mean()
    energy = np.dot(reference, reference)
    if energy <= 0:
        return float("nan")
    target = np.dot(estimate, reference) / energy * reference
    noise = estimate - target
    return float(
        10 * np.log10(max(np.dot(target, target), 1e-20) / max(np.dot(noise, noise), 1e-20))
    )


def lsd(
    reference_48k: np.ndarray, estimate_48k: np.ndarray, n_fft: int = 2048, hop: int = 512
) -> float:
    """Log-spectral distance (dB) at 48 kHz: frame mean of the RMS log-power difference."""
    from scipy import signal

    def log_power(x: np.ndarray) -> np.ndarray:
        _, _, spec = signal.stft(
            x.astype(np.float64), nperseg=n_fft, noverlap=n_fft - hop, boundary=None, padded=True
        )
        return np.log10(np.abs(spec) ** 2 + 1e-10)

    ref, est = log_power(reference_48k), log_power(estimate_48k)
    return float(np.mean(np.sqrt(np.mean((10 * (ref - est)) ** 2, axis=0))))


REFERENCE_FUNCTIONS: dict[str, Callable[..., float]] = {
    "pesq": pesq_wb,
    "estoi": estoi,
    "sisdr": si_sdr,
    "lsd": lsd,
}
