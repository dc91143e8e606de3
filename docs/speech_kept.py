"""How much of the speech a system keeps, and how far under it the pauses go, per band.

    python docs/speech_kept.py SET CONDITION NAME=OUTPUT_DIR [NAME=OUTPUT_DIR ...]

SET is a `recipes.conditions` folder (SET/clean/CONDITION/*); each OUTPUT_DIR holds a system's
outputs under CONDITION/ with the same file stems (a `finally eval --work-dir` folder does).
Everything is compared at 16 kHz on a 512-point STFT. Per band (0–250–500–1k–2k–4k–8k Hz):

- speech kept: output over clean energy in the frames where the clean speech is active (within
  30 dB of its loudest frame) and the band is within 30 dB of its own peak there, in dB; 0 is
  all of it, negative is speech taken away (residual noise counts towards the output);
- pauses: the output's mean power in the frames where the speech is not active, against the
  clean speech's mean power in the active ones, in dB (lower: more noise removed).

Means over the condition's files. docs/training.md item 23 has the numbers that made the case.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

EDGES = (0, 250, 500, 1000, 2000, 4000, 8000)
RATE, N_FFT, HOP = 16000, 512, 128


def load(path: Path) -> np.ndarray:
    audio, rate = sf.read(str(path), dtype="float64", always_2d=True)
    audio = audio.mean(axis=1)
    return soxr.resample(audio, rate, RATE) if rate != RATE else audio


def power(audio: np.ndarray) -> np.ndarray:
    """[frames, bins] power spectrogram."""
    window = np.hanning(N_FFT)
    starts = range(0, max(1, audio.size - N_FFT), HOP)
    frames = np.array(
        [np.pad(audio[i : i + N_FFT], (0, max(0, i + N_FFT - audio.size))) for i in starts]
    )
    return np.abs(np.fft.rfft(frames * window, axis=1)) ** 2


def measure(clean: np.ndarray, output: np.ndarray) -> tuple[list[float], list[float]]:
    length = min(clean.size, output.size)
    clean_power, out_power = power(clean[:length]), power(output[:length])
    freqs = np.fft.rfftfreq(N_FFT, 1 / RATE)
    level = clean_power.sum(1)
    active = level > level.max() * 1e-3
    kept, pauses = [], []
    for low, high in zip(EDGES[:-1], EDGES[1:]):
        band = (freqs >= low) & (freqs < high)
        clean_band, out_band = clean_power[:, band].sum(1), out_power[:, band].sum(1)
        strong = active & (clean_band > clean_band[active].max() * 1e-3)
        kept.append(
            10 * np.log10((out_band[strong].sum() + 1e-12) / (clean_band[strong].sum() + 1e-12))
        )
        pause = out_band[~active].mean() if (~active).any() else np.nan
        pauses.append(10 * np.log10((pause + 1e-12) / (clean_band[active].mean() + 1e-12)))
    return kept, pauses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("set", type=Path)
    parser.add_argument("condition")
    parser.add_argument("systems", nargs="+", help="NAME=OUTPUT_DIR")
    args = parser.parse_args()
    print("bands (Hz):", " ".join(f"{a}-{b}" for a, b in zip(EDGES[:-1], EDGES[1:])))
    for spec in args.systems:
        name, folder = spec.split("=", 1)
        kept, pauses = [], []
        for clean_path in sorted((args.set / "clean" / args.condition).iterdir()):
            found = sorted((Path(folder) / args.condition).glob(clean_path.stem + ".*"))
            if found:
                k, p = measure(load(clean_path), load(found[0]))
                kept.append(k)
                pauses.append(p)
        if not kept:
            print(f"{name}: no outputs under {folder}/{args.condition}")
            continue
        print(f"{name} ({len(kept)} files)")
        print("  speech kept (dB):", " ".join(f"{v:6.1f}" for v in np.nanmean(kept, 0)))
        print("  pauses (dB):     ", " ".join(f"{v:6.1f}" for v in np.nanmean(pauses, 0)))


if __name__ == "__main__":
    main()
