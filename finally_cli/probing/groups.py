"""Groups of short clips of "the same speech sound": from folders, TTS, or synthetic tones."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finally_cli.audio.tts import TTS_PHRASES
from finally_cli.errors import ConfigError

SAMPLE_RATE = 16000


@dataclass
class GroupSet:
    """Equal-length 16 kHz segments and their group labels.

    Attributes:
        segments: [n, samples] float32.
        labels: [n] group index.
        names: group names, by index.
    """

    segments: np.ndarray
    labels: np.ndarray
    names: list[str]


def cut(audio: np.ndarray, samples: int) -> np.ndarray:
    """The first `samples` after leading silence, zero-padded when shorter."""
    level = np.abs(audio)
    active = np.nonzero(level > 0.02 * max(level.max(), 1e-9))[0]
    start = int(active[0]) if active.size else 0
    piece = audio[start : start + samples]
    return np.pad(piece, (0, samples - piece.size)).astype(np.float32)


def from_folders(root: Path, segment_seconds: float) -> GroupSet:
    """One sub-folder per group; every audio file in it is one member."""
    import soxr

    from finally_cli.audio.files import find_audio
    from finally_cli.audio.io import load_mono

    samples = int(round(segment_seconds * SAMPLE_RATE))
    segments, labels, names = [], [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = find_audio(folder).files
        if len(files) < 2:
            continue
        names.append(folder.name)
        for path in files:
            audio, rate = load_mono(path)
            segments.append(cut(soxr.resample(audio, rate, SAMPLE_RATE), samples))
            labels.append(len(names) - 1)
    if len(names) < 2:
        raise ConfigError(f"{root}: need at least 2 sub-folders (groups) with ≥ 2 clips each")
    return GroupSet(np.stack(segments), np.array(labels), names)


def harmonic_tones(
    groups: int, per_group: int, segment_seconds: float, seed: int = 0, jitter: float = 0.01
) -> GroupSet:
    """Synthetic groups: harmonic tones at distinct pitches, small random jitter and phase.

    Members of a group share f0 (±`jitter` relative) and harmonic weights; their phases
    are random, so the raw waveforms differ while magnitude spectra stay alike.
    """
    rng = np.random.default_rng(seed)
    samples = int(round(segment_seconds * SAMPLE_RATE))
    t = np.arange(samples) / SAMPLE_RATE
    pitches = 110.0 * 2 ** (np.arange(groups) * 5 / 12)  # a fourth apart
    segments, labels = [], []
    for g, f0 in enumerate(pitches):
        weights = rng.uniform(0.2, 1.0, size=8)
        for _ in range(per_group):
            f = f0 * (1 + rng.uniform(-jitter, jitter))
            wave = sum(
                w * np.sin(2 * np.pi * (k + 1) * f * t + rng.uniform(0, 2 * np.pi))
                for k, w in enumerate(weights)
            )
            segments.append((0.1 * wave / np.abs(wave).max()).astype(np.float32))
            labels.append(g)
    return GroupSet(np.stack(segments), np.array(labels), [f"{p:.0f}Hz" for p in pitches])


def tts_engine() -> str | None:
    for name in ("espeak-ng", "espeak"):
        if shutil.which(name):
            return name
    return None


def from_tts(groups: int, per_group: int, segment_seconds: float, seed: int = 0) -> GroupSet:
    """Groups from espeak-ng: fixed text and rate per group, members vary voice variant/pitch."""
    import soundfile as sf
    import soxr

    engine = tts_engine()
    if engine is None:
        raise ConfigError(
            "--generate tts needs espeak-ng (apt install espeak-ng); "
            "use --generate tones or a folder of groups"
        )
    if groups > len(TTS_PHRASES):
        raise ConfigError(f"--groups {groups}: at most {len(TTS_PHRASES)} TTS phrases")
    rng = np.random.default_rng(seed)
    variants = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5"]
    samples = int(round(segment_seconds * SAMPLE_RATE))
    segments, labels = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for g in range(groups):
            for i in range(per_group):
                voice = f"en+{variants[i % len(variants)]}"
                pitch = int(rng.integers(30, 70))
                path = Path(tmp) / f"{g}_{i}.wav"
                subprocess.run(
                    [
                        engine,
                        "-v",
                        voice,
                        "-s",
                        "150",
                        "-p",
                        str(pitch),
                        "-w",
                        str(path),
                        TTS_PHRASES[g],
                    ],
                    check=True,
                    capture_output=True,
                )
                audio, rate = sf.read(str(path), dtype="float32")
                segments.append(cut(soxr.resample(audio, rate, SAMPLE_RATE), samples))
                labels.append(g)
    return GroupSet(np.stack(segments), np.array(labels), TTS_PHRASES[:groups])


KTUBERLING_SOUNDS = Path("/usr/share/ktuberling/sounds")


def recorded_word_takes(root: Path, language: str) -> dict[str, list[Path]]:
    """Words that `language` has recorded more than once (distinct files), by word.

    ktuberling names each recording after its word, prefixed by the playground it belongs to
    (`patate_oeil.wav`, `oeil.wav`): the same word recorded again for another playground is a
    second take by the same speaker. Only languages whose file names are the local words (fr)
    give valid groups; where files carry English names, one name can stand for two words.
    """
    import hashlib

    from finally_cli.audio.files import SOUNDFILE_EXTENSIONS

    folder = root / language
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no recorded words (apt install ktuberling-data)")
    takes: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in SOUNDFILE_EXTENSIONS:
            word = path.stem.split("_", 1)[-1]
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            takes.setdefault(word, {}).setdefault(digest, path)
    return {word: sorted(t.values()) for word, t in sorted(takes.items()) if len(t) >= 2}


def from_recorded_words(
    groups: int,
    per_group: int,
    segment_seconds: float,
    seed: int = 0,
    root: Path = KTUBERLING_SOUNDS,
    language: str = "fr",
    speed_range: float = 0.04,
) -> GroupSet:
    """Groups of real recorded words: one word by one speaker, its takes as members.

    A group has 2–3 real takes; each member is a take at a random speed within
    ±`speed_range` (resampling: tempo and pitch together, as a speaker varies) and a random
    gain within ±3 dB, so a group of `per_group` mixes real and small synthetic variation.
    The groups with most takes come first.
    """
    import soxr

    from finally_cli.audio.io import load_mono

    words = recorded_word_takes(root, language)
    if len(words) < 2:
        raise ConfigError(f"{root / language}: fewer than 2 words with 2 or more takes")
    chosen = sorted(words, key=lambda w: (-len(words[w]), w))[:groups]
    rng = np.random.default_rng(seed)
    samples = int(round(segment_seconds * SAMPLE_RATE))
    segments, labels = [], []
    for g, word in enumerate(chosen):
        takes = [soxr.resample(*load_mono(p), SAMPLE_RATE) for p in words[word]]
        for i in range(per_group):
            speed = 1 + rng.uniform(-speed_range, speed_range)
            # Played `speed` times faster: resampled as if recorded at SAMPLE_RATE * speed.
            audio = soxr.resample(takes[i % len(takes)], SAMPLE_RATE * speed, SAMPLE_RATE)
            gain = 10 ** (rng.uniform(-3, 3) / 20)
            segments.append(cut(audio * gain, samples))
            labels.append(g)
    return GroupSet(np.stack(segments), np.array(labels), [f"{language}:{w}" for w in chosen])
