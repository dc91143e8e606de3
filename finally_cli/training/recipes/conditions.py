"""A fixed test set with one degradation per condition (for `finally eval --manifest`).

    python -m finally_cli.training.recipes.conditions --clean data/offline/clean/test \
        --noise data/offline/noise --rooms data/offline/rooms -o data/testset --per-condition 20

Conditions: noise at 0 / 5 / 10 dB SNR, reverb + noise (10 dB), band-limited to 8 kHz, MP3 at
24 kbit/s, clipping (12 dB drive), babble (5 dB). Writes noisy/ and clean/
(48 kHz FLAC, same relative names) and manifest.csv (file, condition). Seeded: the same
arguments give the same files.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np
import soundfile as sf

from finally_cli.audio.mixing import mix_at_snr
from finally_cli.training.data import active_db, index_folders, read_mono
from finally_cli.training.degradations import RATE, apply_ir, band_limit, clip

CONDITIONS = (
    "noise_0dB",
    "noise_5dB",
    "noise_10dB",
    "reverb_noise",
    "lowpass_8k",
    "mp3_24k",
    "clipping",
    "babble",
)


def mp3_24k(audio: np.ndarray) -> tuple[np.ndarray, float]:
    """MP3 round trip at ≈ 24 kbit/s CBR (MPEG-2 layer III at 24 kHz, as low-rate encoders do).

    Returns (audio at 48 kHz, measured kbit/s).
    """
    import soxr

    low = soxr.resample(audio, RATE, 24000)
    peak = max(1e-9, float(np.max(np.abs(low))))
    buffer = io.BytesIO()
    sf.write(
        buffer,
        (low / peak * 0.9).astype(np.float32),
        24000,
        format="MP3",
        subtype="MPEG_LAYER_III",
        compression_level=0.9,
        bitrate_mode="CONSTANT",
    )
    kbps = len(buffer.getvalue()) * 8 / (low.size / 24000) / 1000
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float64")
    decoded = soxr.resample(decoded * peak / 0.9, 24000, RATE)
    # libsndfile does not trim the encoder delay at 24 kHz: remove it so the pair stays aligned.
    from finally_cli.evaluation.align import find_lag

    lag = find_lag(audio, decoded, RATE // 10)
    decoded = decoded[lag:] if lag > 0 else np.pad(decoded, (-lag, 0))
    decoded = np.resize(decoded, audio.size) if decoded.size < audio.size else decoded[: audio.size]
    return decoded, kbps


def degrade(
    condition: str,
    clean: np.ndarray,
    noises: list[np.ndarray],
    babbles: list[np.ndarray],
    rooms: list[np.ndarray],
    rng: np.random.Generator,
) -> np.ndarray:
    def noise() -> np.ndarray:
        clip_ = noises[rng.integers(len(noises))]
        start = int(rng.integers(0, max(1, clip_.size - clean.size)))
        return clip_[start : start + clean.size]

    if condition.startswith("noise_"):
        return mix_at_snr(clean, noise(), float(condition[6:-2]))
    if condition == "reverb_noise":
        return mix_at_snr(apply_ir(clean, rooms[rng.integers(len(rooms))]), noise(), 10.0)
    if condition == "lowpass_8k":
        return band_limit(clean, 8000)
    if condition == "mp3_24k":
        return mp3_24k(clean)[0]
    if condition == "clipping":
        return clip(clean, 12.0)
    if condition == "babble":
        return mix_at_snr(clean, babbles[rng.integers(len(babbles))], 5.0)
    raise ValueError(f"unknown condition {condition!r}")


def build(
    clean_dir: Path,
    noise_dir: Path,
    rooms_dir: Path,
    out: Path,
    per_condition: int,
    seed: int = 0,
    seconds: float = 6.0,
) -> int:
    import soxr

    rng = np.random.default_rng(seed)
    clips = index_folders([str(clean_dir)], "clean")
    noise_clips = index_folders([str(noise_dir)], "noise")
    noises = [
        soxr.resample(read_mono(c), c.sample_rate, RATE)
        for c in noise_clips
        if "babble" not in c.path.name
    ]
    babbles = [
        soxr.resample(read_mono(c), c.sample_rate, RATE)
        for c in noise_clips
        if "babble" in c.path.name
    ] or noises
    rooms = [
        soxr.resample(read_mono(c), c.sample_rate, RATE)
        for c in index_folders([str(rooms_dir)], "rooms")
    ]
    order = rng.permutation(len(clips))
    rows, used = [], 0
    for condition in CONDITIONS:
        made = 0
        while made < per_condition and used < len(order):
            clip_ = clips[order[used]]
            used += 1
            clean = soxr.resample(read_mono(clip_), clip_.sample_rate, RATE)[: int(seconds * RATE)]
            if clean.size < RATE or active_db(clean) < -45:
                continue
            clean = clean * 10 ** (-23 / 20) / np.sqrt(np.mean(clean**2) + 1e-12) * 0.5
            noisy = degrade(condition, clean, noises, babbles, rooms, rng)
            peak = max(1.0, float(np.max(np.abs(noisy))) / 0.99)
            name = f"{condition}/{clip_.path.stem}.flac"
            for kind, audio in (("noisy", noisy / peak), ("clean", clean / peak)):
                (out / kind / condition).mkdir(parents=True, exist_ok=True)
                sf.write(str(out / kind / name), audio.astype(np.float32), RATE)
            rows.append({"file": name, "condition": condition})
            made += 1
    with (out / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "condition"])
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clean", type=Path, required=True)
    parser.add_argument("--noise", type=Path, required=True)
    parser.add_argument("--rooms", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--per-condition", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    count = build(args.clean, args.noise, args.rooms, args.output, args.per_condition, args.seed)
    print(f"{args.output}: {count} pairs over {len(CONDITIONS)} conditions")


if __name__ == "__main__":
    main()
