"""Training pairs: random clean segments from folders, degraded on the fly, fully seeded."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch
from scipy import signal

from finally_cli.audio.files import find_audio
from finally_cli.audio.level import PEAK_LIMIT, LevelMeter
from finally_cli.errors import ConfigError
from finally_cli.training.degradations import (
    RATE,
    DegradationConfig,
    Degrader,
    Sources,
    unit_energy,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clip:
    path: Path
    frames: int
    sample_rate: int


def index_folders(folders: tuple[str, ...] | list[str], what: str) -> list[Clip]:
    """Readable audio files under `folders` (recursive, sorted); unreadable ones are logged."""
    clips = []
    for folder in folders:
        root = Path(folder)
        if not root.is_dir():
            raise ConfigError(f"data.{what}: {root} is not a folder")
        for path in find_audio(root).files:
            try:
                info = sf.info(str(path))
            except (sf.LibsndfileError, RuntimeError) as err:
                log.warning("skipping %s: %s", path, err)
                continue
            if info.frames > 0:
                clips.append(Clip(path, int(info.frames), int(info.samplerate)))
    return clips


def bandwidth_hz(audio: np.ndarray, rate: int, floor_db: float = 50.0) -> float:
    """Highest frequency whose smoothed long-term level is within `floor_db` of the speech band's.

    The speech-band reference is the 90th percentile of the 200 Hz - 4 kHz levels; 0 for
    silent or very short audio. A 16 kHz recording resampled to 44.1 kHz measures about 8 kHz.
    """
    from scipy import signal

    if audio.size < 4096 or not np.any(audio):
        return 0.0
    freqs, power = signal.welch(audio, rate, nperseg=2048)
    level = np.pad(10 * np.log10(power + 1e-20), 4, mode="edge")  # no zeros (0 dB) at the ends
    level = np.convolve(level, np.ones(9) / 9, mode="valid")
    speech = (freqs > 200) & (freqs < 4000)
    reference = np.percentile(level[speech], 90)
    above = np.nonzero(level > reference - floor_db)[0]
    return float(freqs[above[-1]]) if above.size else 0.0


def noise_floor_db(audio: np.ndarray, rate: int) -> float:
    """A recording's noise floor relative to its speech, in dB (≤ 0).

    The 2nd percentile of 20 ms frame levels minus the 95th: about −30 dB for a home
    recording with audible hiss or room noise, below −50 dB for a studio prompt. 0 for audio
    shorter than 0.5 s (too few pauses to tell).
    """
    frames, level = frame_levels(audio, rate)
    if len(frames) < 25:
        return 0.0
    return float(np.percentile(level, 2) - np.percentile(level, 95))


def frame_levels(audio: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """`audio` cut into 20 ms frames ([n, samples]) and each frame's level in dB."""
    hop = int(0.02 * rate)
    frames = audio[: audio.size // hop * hop].reshape(-1, hop) if hop else audio[:0].reshape(0, 1)
    return frames, 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def measurement_cache(name: str) -> Path:
    """Where per-file measurements are kept between runs ($XDG_CACHE_HOME/finally-cli)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "finally-cli" / f"{name}.json"


def measured(
    clips: list[Clip], name: str, measure: Callable[[np.ndarray, int], float], seconds: float
) -> list[float]:
    """`measure(audio, rate)` of each clip's first `seconds`, cached by path, size and
    modification time, so only new or changed files are read again by the next run."""
    from concurrent.futures import ThreadPoolExecutor

    def key(clip: Clip) -> str:
        stat = clip.path.stat()
        return f"{clip.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{seconds:g}"

    def run(clip: Clip) -> float:
        frames = min(clip.frames, int(seconds * clip.sample_rate))
        return measure(read_mono(clip, 0, frames), clip.sample_rate)

    cache_file = measurement_cache(name)
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    keys = [key(clip) for clip in clips]
    todo = [(clip, k) for clip, k in zip(clips, keys) if k not in cache]
    if todo:
        log.info("measuring the %s of %d clean files", name.replace("_", " "), len(todo))
        with ThreadPoolExecutor(max_workers=4) as pool:
            values = list(pool.map(run, [clip for clip, _ in todo]))
        cache.update({k: value for (_, k), value in zip(todo, values)})
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            partial = cache_file.with_suffix(f".{os.getpid()}.tmp")
            partial.write_text(json.dumps(cache))
            partial.replace(cache_file)
        except OSError as err:
            log.warning("measurement cache not written (%s): %s", cache_file, err)
    return [cache[k] for k in keys]


def keep_wideband(clips: list[Clip], min_hz: float, seconds: float = 20.0) -> list[Clip]:
    """The clips whose measured bandwidth (first `seconds`) reaches `min_hz`."""
    widths = measured(clips, "bandwidth", bandwidth_hz, seconds)
    kept = [clip for clip, width in zip(clips, widths) if width >= min_hz]
    log.info("data.min_bandwidth_hz=%g: kept %d of %d clean files", min_hz, len(kept), len(clips))
    if not kept:
        raise ConfigError(
            f"data.min_bandwidth_hz={min_hz:g}: none of the {len(clips)} clean files reaches it"
        )
    return kept


def keep_quiet(clips: list[Clip], max_floor_db: float, seconds: float = 20.0) -> list[Clip]:
    """The clips whose noise floor (`noise_floor_db`, first `seconds`) is at most
    `max_floor_db` under their speech."""
    floors = measured(clips, "noise_floor", noise_floor_db, seconds)
    kept = [clip for clip, floor in zip(clips, floors) if floor <= max_floor_db]
    log.info("data.max_floor_db=%g: kept %d of %d clean files", max_floor_db, len(kept), len(clips))
    if not kept:
        raise ConfigError(
            f"data.max_floor_db={max_floor_db:g}: none of the {len(clips)} clean files is that "
            "quiet between words"
        )
    return kept


def read_mono(clip: Clip, start: int = 0, frames: int = -1) -> np.ndarray:
    audio, _ = sf.read(str(clip.path), start=start, frames=frames, dtype="float64", always_2d=True)
    return audio.mean(axis=1)


def load_sources(
    noise: list[Clip], rooms: list[Clip], mics: list[Clip], max_seconds: float
) -> Sources:
    """Noises and impulse responses in memory at 48 kHz (noises capped at `max_seconds`).

    Impulse responses are scaled to unit energy, so a room or microphone changes the speech's
    colour and tail but not its level. Unscaled, the recipe's rooms made reverberant input
    2-19 dB louder than its dry target, and the model learned to turn all speech down a
    little whenever it suspected a room (docs/training.md, session 8).
    """

    def load(clips: list[Clip], cap: float | None) -> list[np.ndarray]:
        out = []
        for clip in clips:
            frames = int(cap * clip.sample_rate) if cap else -1
            audio = soxr.resample(read_mono(clip, 0, frames), clip.sample_rate, RATE)
            out.append(audio.astype(np.float32))  # hours of noise: half the memory of float64
        return out

    def load_irs(clips: list[Clip]) -> list[np.ndarray]:
        return [unit_energy(ir) for ir in load(clips, None)]

    return Sources(load(noise, max_seconds), load_irs(rooms), load_irs(mics))


def active_db(audio: np.ndarray) -> float:
    meter = LevelMeter(RATE)
    meter.update(audio)
    rms = meter.active_rms()
    return 20 * np.log10(rms) if rms > 0 else -200.0


class PairDataset(torch.utils.data.Dataset):
    """Item i is a deterministic function of (seed, i): the same index gives the same pair.

    Each item: {"noisy": [1, samples16] float32 at 16 kHz, "clean": [1, samples16 · factor]
    at the stage's rate}, both multiplied by the one gain that brings the noisy segment's
    active level to the inference engine's target level (so training sees what inference
    feeds the model).

    Args:
        clean: clean speech clips.
        degrader: the degradation chain.
        samples16: segment length at 16 kHz.
        factor: 1 (16 kHz target) or 3 (48 kHz target).
        length: nominal number of items.
        seed: base seed.
        silence_db: minimum clean active level of a segment.
        speed_perturb: each segment is played at a speed drawn from [1 − s, 1 + s] (speed and
            pitch change together, like a tape), 0 = off.
        targets: per clean clip, the file its target is read from (the same frames; e.g. its
            `recipes.quieten` copy): the input is degraded from the clip, the target is the
            copy. None: the clip is its own target.
        pairs: fixed (noisy, target) 48 kHz file pairs, e.g. a `recipes.teacher` set.
        p_pairs: share of the items that are a random segment of a random one of `pairs`.
        clean_highpass_hz: high-pass corner applied to every clean segment and its target,
            and to the targets of `pairs` (zero phase; 0 = off). A pair's input is left as it
            is: its rumble is noise to remove.
        peak_limit: the gain's peak ceiling, as the engine applies it for the model being
            trained (`FinallyGenerator.peak_limit`; None: the active level alone sets the
            gain), and the input clamped where the engine clamps it (`input_limit`).
    """

    def __init__(
        self,
        clean: list[Clip],
        degrader: Degrader,
        samples16: int,
        factor: int,
        length: int,
        seed: int,
        silence_db: float = -50.0,
        speed_perturb: float = 0.0,
        targets: list[Clip] | None = None,
        pairs: list[tuple[Path, Path]] | None = None,
        p_pairs: float = 0.0,
        clean_highpass_hz: float = 0.0,
        peak_limit: float | None = PEAK_LIMIT,
    ) -> None:
        if not clean:
            raise ConfigError("data.clean: no readable clean audio files")
        if targets is not None and len(targets) != len(clean):
            raise ValueError(f"{len(targets)} targets for {len(clean)} clean clips")
        self.clean = clean
        self.degrader = degrader
        self.samples16 = samples16
        self.factor = factor
        self.length = length
        self.seed = seed
        self.silence_db = silence_db
        self.speed_perturb = speed_perturb
        self.targets = targets
        self.pairs, self.p_pairs = pairs or [], p_pairs
        self.peak_limit = peak_limit
        self.highpass = None
        if clean_highpass_hz > 0:
            self.highpass = signal.butter(2, clean_highpass_hz, "highpass", fs=RATE, output="sos")
        seconds = np.array([c.frames / c.sample_rate for c in clean])
        self.weights = seconds / seconds.sum()

    def __len__(self) -> int:
        return self.length

    def clean_segment(self, rng: np.random.Generator) -> np.ndarray:
        """A random non-silent 48 kHz clean segment (zero-padded when the file is short)."""
        return self.source_and_target(rng)[0]

    def source_and_target(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A random non-silent 48 kHz clean segment and the same stretch of its target file
        (`targets`; the segment itself when there are none)."""
        samples48 = self.samples16 * 3
        segment = np.zeros(samples48)
        target = segment
        for _ in range(20):
            index = rng.choice(len(self.clean), p=self.weights)
            clip = self.clean[index]
            speed = 1.0
            if self.speed_perturb > 0:
                speed = rng.uniform(1 - self.speed_perturb, 1 + self.speed_perturb)
            # Read as if recorded at speed · rate: resampling to 48 kHz then plays it faster.
            rate = clip.sample_rate * speed
            need = int(np.ceil(samples48 * rate / RATE)) + 1
            start = int(rng.integers(0, max(1, clip.frames - need)))
            segment = self._read48(clip, start, need, rate)
            target = segment
            if self.targets:
                target = self._read48(self.targets[index], start, need, rate)
            if active_db(segment) > self.silence_db:
                return segment, target
        return segment, target

    def _read48(self, clip: Clip, start: int, frames: int, rate: float) -> np.ndarray:
        audio = self._highpassed(soxr.resample(read_mono(clip, start, frames), rate, RATE))
        samples48 = self.samples16 * 3
        return np.pad(audio, (0, max(0, samples48 - audio.size)))[:samples48]

    def _fixed_pair(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A random segment of a random one of `pairs` (zero-padded when shorter)."""
        noisy_path, target_path = self.pairs[rng.integers(len(self.pairs))]
        noisy, rate = sf.read(str(noisy_path), dtype="float64")
        target, target_rate = sf.read(str(target_path), dtype="float64")
        if rate != RATE or target_rate != RATE or noisy.ndim != 1 or target.ndim != 1:
            raise ConfigError(f"data.pairs: {noisy_path} and its target must be mono {RATE} Hz")
        samples48 = self.samples16 * 3
        length = min(noisy.size, target.size)
        start = int(rng.integers(0, max(1, length - samples48 + 1)))

        def cut(audio: np.ndarray) -> np.ndarray:
            audio = audio[start : start + samples48]
            return np.pad(audio, (0, samples48 - audio.size))

        return cut(noisy), self._highpassed(cut(target))

    def _highpassed(self, audio: np.ndarray) -> np.ndarray:
        """`audio` through the clean high-pass (zero phase), when there is one."""
        if self.highpass is None or audio.size <= 64:
            return audio
        return signal.sosfiltfilt(self.highpass, audio)

    def pair(self, index: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(noisy 48 kHz, clean 48 kHz, applied degradations), gained, for item `index`."""
        rng = np.random.default_rng([self.seed, index])
        if self.pairs and rng.random() < self.p_pairs:
            noisy, target = self._fixed_pair(rng)
            clean, applied = target, ["pairs"]
        else:
            clean, target = self.source_and_target(rng)
            noisy, applied = self.degrader(clean, rng)
        meter = LevelMeter(RATE)
        meter.update(noisy)
        gain = meter.gain(self.peak_limit)
        limit = meter.input_limit(gain, self.peak_limit)
        noisy = np.clip(noisy * gain, -limit, limit)
        return noisy, target * gain, applied

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        noisy48, clean48, _ = self.pair(index)
        noisy16 = soxr.resample(noisy48, RATE, 16000)[: self.samples16]
        noisy16 = np.pad(noisy16, (0, self.samples16 - noisy16.size))
        target = clean48 if self.factor == 3 else soxr.resample(clean48, RATE, 16000)
        target = np.pad(target, (0, max(0, self.samples16 * self.factor - target.size)))
        return {
            "noisy": torch.from_numpy(noisy16.astype(np.float32))[None],
            "clean": torch.from_numpy(target[: self.samples16 * self.factor].astype(np.float32))[
                None
            ],
        }


def target_clips(clean: list[Clip], root: Path, targets: Path) -> list[Clip]:
    """Each clean clip's counterpart under `targets`, a `recipes.quieten` copy of `root`: the
    same relative path, as written (a link) or as FLAC (a quietened file); same length and
    rate."""
    if not targets.is_dir():
        raise ConfigError(f"data.targets: {targets} is not a folder")
    out = []
    for clip in clean:
        relative = clip.path.relative_to(root)
        candidates = [targets / relative.with_suffix(".flac"), targets / relative]
        path = next((c for c in candidates if c.exists()), None)
        if path is None:
            raise ConfigError(f"data.targets: {targets} has no copy of {relative}")
        info = sf.info(str(path))
        if (info.frames, info.samplerate) != (clip.frames, clip.sample_rate):
            raise ConfigError(
                f"data.targets: {path} is {info.frames} frames at {info.samplerate} Hz, its "
                f"clean file {clip.path} {clip.frames} at {clip.sample_rate} Hz"
            )
        out.append(Clip(path, clip.frames, clip.sample_rate))
    return out


def build_degrader(
    config: DegradationConfig,
    noise: list[Clip],
    rooms: list[Clip],
    mics: list[Clip],
    max_noise_seconds: float,
) -> Degrader:
    return Degrader(config, load_sources(noise, rooms, mics, max_noise_seconds))


def pair_dataset(
    config,
    length: int,
    factor: int,
    multiple: int,  # noqa: ANN001
    seed: int | None = None,
    peak_limit: float | None = PEAK_LIMIT,
) -> PairDataset:
    """The seeded pair stream a TrainConfig describes (segment rounded up to `multiple`),
    levelled as the engine levels the input of a model with this `peak_limit`."""
    data = config.data
    degrader = build_degrader(
        config.degradation,
        index_folders(data.noise, "noise"),
        index_folders(data.rooms, "rooms"),
        index_folders(data.mics, "mics"),
        data.max_noise_seconds,
    )
    samples16 = int(np.ceil(data.segment_seconds * 16000 / multiple) * multiple)
    clean = index_folders(data.clean, "clean")
    if data.min_bandwidth_hz > 0 and clean:
        clean = keep_wideband(clean, data.min_bandwidth_hz)
    if data.max_floor_db < 0 and clean:
        clean = keep_quiet(clean, data.max_floor_db)
    targets = None
    if data.targets:
        if len(data.clean) != 1:
            raise ConfigError(
                f"data.targets: needs exactly one data.clean folder (got {len(data.clean)})"
            )
        targets = target_clips(clean, Path(data.clean[0]), Path(data.targets))
    pairs = None
    if data.pairs and data.p_pairs > 0:
        folders = (data.pairs,) if isinstance(data.pairs, str) else data.pairs
        pairs = [pair for folder in folders for pair in fixed_pairs(Path(folder))]
    return PairDataset(
        clean,
        degrader,
        samples16,
        factor,
        length,
        config.seed if seed is None else seed,
        data.silence_db,
        data.speed_perturb,
        targets,
        pairs,
        data.p_pairs,
        data.clean_highpass_hz,
        peak_limit,
    )


def fixed_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(noisy, target) paths of a folder in `prepare-val`'s layout: noisy/ and clean/ files
    of the same names."""
    noisy_dir, clean_dir = folder / "noisy", folder / "clean"
    if not noisy_dir.is_dir() or not clean_dir.is_dir():
        raise ConfigError(f"data.pairs: {folder} has no noisy/ and clean/ folders")
    pairs = []
    for noisy in sorted(noisy_dir.iterdir()):
        target = clean_dir / noisy.name
        if not target.exists():
            raise ConfigError(f"data.pairs: {target} is missing (the target of {noisy})")
        pairs.append((noisy, target))
    if not pairs:
        raise ConfigError(f"data.pairs: {noisy_dir} is empty")
    return pairs
