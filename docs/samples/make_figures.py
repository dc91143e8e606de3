"""Before/after spectrograms of the committed sample, as shown in the README.

    finally enhance docs/samples/noisy.wav -o docs/samples/enhanced.wav
    python docs/samples/make_figures.py

writes docs/samples/noisy.png and docs/samples/enhanced.png (and clean.png when the reference
docs/samples/clean.wav is present). Every panel uses the same 0–24 kHz axis and colour range,
so band-limiting and the restored upper band are visible at a glance.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
from scipy.signal import stft  # noqa: E402

HERE = Path(__file__).resolve().parent
TOP_HZ = 24000
FLOOR_DB = -100.0


def spectrogram_db(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    window = int(round(0.032 * rate))  # 32 ms frames at any rate
    freqs, times, spec = stft(mono, rate, nperseg=window, noverlap=window * 3 // 4)
    power = np.abs(spec) ** 2 + 1e-12
    return freqs, times, np.maximum(10 * np.log10(power), FLOOR_DB)


def plot(path: Path, out: Path, title: str) -> None:
    freqs, times, db = spectrogram_db(path)
    fig, ax = plt.subplots(figsize=(7, 2.6), dpi=90)
    mesh = ax.pcolormesh(
        times, freqs / 1000, db, shading="auto", cmap="magma", vmin=FLOOR_DB, vmax=-20
    )
    ax.set_ylim(0, TOP_HZ / 1000)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("kHz")
    ax.set_title(title)
    fig.colorbar(mesh, ax=ax, label="dB")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    print(f"wrote {out}")


def main() -> int:
    panels = [
        ("noisy.wav", "noisy.png", "input (noisy, 16 kHz)"),
        ("enhanced.wav", "enhanced.png", "finally-small (48 kHz)"),
        ("clean.wav", "clean.png", "clean reference"),
    ]
    for source, target, title in panels:
        path = HERE / source
        if not path.is_file():
            if source == "enhanced.wav":
                print(f"{path}: missing; run `finally enhance docs/samples/noisy.wav -o {path}`")
                return 1
            continue
        plot(path, HERE / target, title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
