"""Seeded degradation simulator: noise, room/mic IRs, EQ, codecs, band-limits, clipping, gain."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

from finally_cli.audio.mixing import mix_at_snr
from finally_cli.errors import ConfigError

RATE = 48000
EQ_PAD = RATE // 10  # zeros (0.1 s) on each side while the microphone colouration is applied


# libsndfile container, subtype and the lowest compression level drawn (1 = smallest file).
CODECS = {
    "mp3": ("MP3", "MPEG_LAYER_III", 0.5),
    "ogg": ("OGG", "VORBIS", 0.6),
    "opus": ("OGG", "OPUS", 0.6),
}


@dataclass(frozen=True)
class DegradationConfig:
    """Probabilities and ranges (the public re-implementation's values where it has them)."""

    p_clean: float = 0.03
    p_noise: float = 0.95
    snr_db: tuple[float, float] = (-5.0, 20.0)
    p_second_noise: float = 0.0
    p_stationary: float = 0.0
    p_noise_eq: float = 0.0
    noise_speed: float = 0.0
    p_room: float = 0.6
    p_mic: float = 0.4
    rt60_seconds: tuple[float, float] = (0.2, 1.0)
    p_codec: float = 0.5
    codecs: tuple[str, ...] = ("mp3", "ogg", "opus")
    p_bandlimit: float = 0.3
    cutoffs_hz: tuple[int, ...] = (4000, 8000, 11025, 16000)
    p_clip: float = 0.1
    clip_db: tuple[float, float] = (0.0, 12.0)
    p_gain: float = 0.5
    gain_db: tuple[float, float] = (-12.0, 6.0)
    shuffle: bool = True

    def __post_init__(self) -> None:
        for name in (
            "p_clean",
            "p_noise",
            "p_second_noise",
            "p_stationary",
            "p_noise_eq",
            "p_room",
            "p_mic",
            "p_codec",
            "p_bandlimit",
            "p_clip",
            "p_gain",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"degradation.{name}={value}: must be within [0, 1]")
        if not 0.0 <= self.noise_speed < 1.0:
            raise ConfigError(f"degradation.noise_speed={self.noise_speed}: must be within [0, 1)")
        unknown = set(self.codecs) - set(CODECS)
        if unknown:
            raise ConfigError(f"degradation.codecs: unknown {sorted(unknown)}")


@dataclass
class Sources:
    """Optional recorded material; synthetic stand-ins are used for what is missing."""

    noises: list[np.ndarray] = field(default_factory=list)  # 48 kHz mono
    rooms: list[np.ndarray] = field(default_factory=list)  # room IRs at 48 kHz
    mics: list[np.ndarray] = field(default_factory=list)  # microphone IRs at 48 kHz


def synthetic_noise(rng: np.random.Generator, samples: int) -> np.ndarray:
    """Coloured noise, mains hum with harmonics, or sparse clicks."""
    kind = rng.integers(0, 3)
    if kind == 0:
        white = rng.standard_normal(samples)
        exponent = rng.uniform(-1.0, 1.0)  # −1 ≈ brown-ish ... +1 ≈ blue-ish
        spectrum = np.fft.rfft(white)
        freqs = np.maximum(np.fft.rfftfreq(samples), 1.0 / samples)
        return np.fft.irfft(spectrum * freqs ** (exponent / 2), samples)
    if kind == 1:
        t = np.arange(samples) / RATE
        base = rng.choice([50.0, 60.0])
        return sum(np.sin(2 * np.pi * base * k * t + rng.uniform(0, 6)) / k for k in range(1, 8))
    clicks = np.zeros(samples)
    where = rng.integers(0, samples, size=max(1, samples // RATE * 20))
    clicks[where] = rng.standard_normal(where.size)
    return clicks + 0.01 * rng.standard_normal(samples)


def stationary_noise(rng: np.random.Generator, samples: int) -> np.ndarray:
    """Broadband noise of a random, smooth colour: fans, air conditioning, hiss, rain, wind.

    Gaussian noise under a power-law tilt (exponent in [−1.5, 1]: brownish to bluish) times a
    random envelope (±8 dB at 8 points spaced evenly in log frequency from 50 Hz to 24 kHz),
    half of the time with a slow level sway (0.1–1 Hz, up to ±4 dB). Such noise is the easiest
    kind for a suppressor, yet the recorded sets hold few clips of it: ≈ 6 % of the recipe's
    files are broadband at all (docs/training.md, item 19).
    """
    freqs = np.maximum(np.fft.rfftfreq(samples, 1 / RATE), 1.0)
    points = np.geomspace(50.0, RATE / 2, 8)
    envelope_db = np.interp(np.log(freqs), np.log(points), rng.uniform(-8.0, 8.0, points.size))
    shape = (freqs / 1000.0) ** (rng.uniform(-1.5, 1.0) / 2) * 10 ** (envelope_db / 20)
    noise = np.fft.irfft(np.fft.rfft(rng.standard_normal(samples)) * shape, samples)
    if rng.random() < 0.5:
        t = np.arange(samples) / RATE
        phase = 2 * np.pi * rng.uniform(0.1, 1.0) * t + rng.uniform(0.0, 2 * np.pi)
        sway_db = rng.uniform(0.0, 4.0) * np.sin(phase)
        noise = noise * 10 ** (sway_db / 20)
    return noise


def synthetic_room(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """Exponentially decaying noise tail after a direct path (−60 dB at rt60)."""
    length = int(rt60 * RATE)
    t = np.arange(length) / RATE
    tail = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
    tail[0] = 0.0
    ir = np.concatenate([[1.0], np.zeros(int(rng.uniform(0.002, 0.02) * RATE)), tail * 0.3])
    return unit_energy(ir)


def unit_energy(ir: np.ndarray) -> np.ndarray:
    """`ir` scaled so that Σ ir² = 1 (unchanged when silent)."""
    energy = float(np.sum(np.asarray(ir, dtype=np.float64) ** 2))
    return ir if energy <= 0 else (ir / np.sqrt(energy)).astype(ir.dtype, copy=False)


def random_eq(rng: np.random.Generator, audio: np.ndarray, highpass: bool = True) -> np.ndarray:
    """A cheap-microphone colouration: 3 random peaking biquads plus a gentle high-pass.

    With `highpass` False only the peaking biquads (a recorded noise recoloured: its rumble
    is kept).

    Only the chain's magnitude response is applied (zero phase): a restorer can learn to undo
    a colouration, but a random phase turn of the low band (the high-pass turns 90° at its
    cutoff) cannot be inferred from the input, and pairs that ask for it taught the model to
    scramble the phase below ≈ 600 Hz of clean speech too (docs/training.md, item 16).
    """
    sections = []
    for _ in range(3):
        f0 = rng.uniform(100, 8000)
        gain = rng.uniform(-12, 12)
        q = rng.uniform(0.5, 3.0)
        a = 10 ** (gain / 40)
        w0 = 2 * np.pi * f0 / RATE
        alpha = np.sin(w0) / (2 * q)
        b = [1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a]
        den = [1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a]
        sections.append(np.concatenate([b, den]) / den[0])
    if highpass:
        sections.extend(signal.butter(2, rng.uniform(60, 300), "highpass", fs=RATE, output="sos"))
    size = audio.size + 2 * EQ_PAD
    freqs = np.fft.rfftfreq(size, 1 / RATE)
    response = np.abs(signal.sosfreqz(np.array(sections), worN=freqs, fs=RATE)[1])
    # Zero-padded on both sides, so the (two-sided) filter does not wrap the ends round.
    spectrum = np.fft.rfft(np.pad(audio, EQ_PAD)) * response
    return np.fft.irfft(spectrum, size)[EQ_PAD : EQ_PAD + audio.size]


def apply_ir(audio: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Convolve, keeping the original length and alignment at the IR's peak."""
    peak = int(np.argmax(np.abs(ir)))
    wet = signal.fftconvolve(audio, ir)[peak : peak + audio.size]
    return np.pad(wet, (0, audio.size - wet.size))


def codec(audio: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """Encode and decode in memory with libsndfile (MP3, Ogg Vorbis, Ogg Opus)."""
    buffer = io.BytesIO()
    peak = max(1e-9, float(np.max(np.abs(audio))))
    scaled = (audio / peak * 0.9).astype(np.float32)
    container, subtype, lowest = CODECS[name]
    # libsndfile's MP3 encoder refuses levels above ≈ 0.9999 (no bit rate left): 0.999 at most.
    level = min(float(rng.uniform(lowest, 1.0)), 0.999)
    sf.write(buffer, scaled, RATE, format=container, subtype=subtype, compression_level=level)
    buffer.seek(0)
    decoded, rate = sf.read(buffer, dtype="float64")
    if rate != RATE:
        decoded = soxr.resample(decoded, rate, RATE)
    decoded = np.resize(decoded, audio.size) if decoded.size < audio.size else decoded[: audio.size]
    return decoded * peak / 0.9


def band_limit(audio: np.ndarray, cutoff_hz: float) -> np.ndarray:
    """Remove content above `cutoff_hz` by resampling down to 2·cutoff and back (soxr HQ)."""
    low = int(2 * cutoff_hz)
    if low >= RATE:
        return audio
    down = soxr.resample(audio, RATE, low, quality="VHQ")
    up = soxr.resample(down, low, RATE, quality="VHQ")
    return np.pad(up, (0, max(0, audio.size - up.size)))[: audio.size]


def clip(audio: np.ndarray, drive_db: float) -> np.ndarray:
    peak = max(1e-9, float(np.max(np.abs(audio))))
    threshold = peak / 10 ** (drive_db / 20)
    return np.clip(audio, -threshold, threshold)


class Degrader:
    """Applies a random, seeded chain of degradations to 48 kHz clean speech.

    Args:
        config: probabilities and ranges.
        sources: recorded noises and impulse responses (synthetic ones otherwise).
    """

    def __init__(self, config: DegradationConfig, sources: Sources | None = None) -> None:
        self.config = config
        self.sources = sources or Sources()

    def __call__(self, clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list]:
        """Returns (degraded signal, list of applied step names)."""
        cfg = self.config
        audio = clean.astype(np.float64)
        if rng.random() < cfg.p_clean:
            return audio, ["clean"]
        steps = []
        if rng.random() < cfg.p_room + cfg.p_mic:  # one impulse response, room or mic
            steps.append("room" if rng.random() < cfg.p_room / (cfg.p_room + cfg.p_mic) else "mic")
        for name, p in (
            ("noise", cfg.p_noise),
            ("codec", cfg.p_codec),
            ("bandlimit", cfg.p_bandlimit),
            ("clip", cfg.p_clip),
            ("gain", cfg.p_gain),
        ):
            if rng.random() < p:
                steps.append(name)
        if cfg.shuffle:
            steps = [steps[i] for i in rng.permutation(len(steps))]
        applied = []
        for name in steps:
            audio, label = getattr(self, f"_{name}")(audio, rng)
            applied.append(label)
        return audio, applied

    def _noise(self, audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        snr = rng.uniform(*self.config.snr_db)
        # The draw is skipped when off, so configurations without it keep their streams.
        if self.config.p_stationary and rng.random() < self.config.p_stationary:
            noise = stationary_noise(rng, audio.size)
        elif self.sources.noises:
            noise = self._recorded(audio.size, rng)
        else:
            noise = synthetic_noise(rng, audio.size)
        if self.sources.noises and rng.random() < self.config.p_second_noise:
            # Two scenes at once (traffic under music, wind over a crowd), the second 0-10 dB
            # below the first; the SNR is of the sum.
            other = np.resize(self._recorded(audio.size, rng), audio.size)
            noise = np.resize(noise, audio.size)
            scale = np.sqrt(np.mean(noise**2) / max(np.mean(other**2), 1e-12))
            noise = noise + other * scale * 10 ** (-rng.uniform(0, 10) / 20)
        return mix_at_snr(audio, noise, snr), f"noise{snr:.0f}dB"

    def _recorded(self, samples: int, rng: np.random.Generator) -> np.ndarray:
        """`samples` of a random recorded noise from a random start, varied when asked.

        `noise_speed` s plays the clip at a speed from [1 − s, 1 + s] (its spectrum and tempo
        shift together: an engine or a fan at another speed), and `p_noise_eq` recolours that
        share of the clips with 3 random peaking filters of ±12 dB, so a few hundred recordings
        stand for many more scenes (docs/training.md item 24). The draws are skipped when off,
        so configurations without them keep their streams.
        """
        noise = self.sources.noises[rng.integers(len(self.sources.noises))]
        speed = 1.0
        if self.config.noise_speed:
            speed = rng.uniform(1 - self.config.noise_speed, 1 + self.config.noise_speed)
        wanted = int(np.ceil(samples * speed))
        start = rng.integers(0, max(1, noise.size - wanted))
        noise = noise[start : start + wanted]
        if speed != 1.0:
            # Read as if recorded at speed · rate, so resampling to RATE plays it faster.
            noise = soxr.resample(noise, RATE * speed, RATE)[:samples]
        if self.config.p_noise_eq and rng.random() < self.config.p_noise_eq:
            noise = random_eq(rng, noise, highpass=False)
        return noise

    def _room(self, audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        if self.sources.rooms:
            ir = self.sources.rooms[rng.integers(len(self.sources.rooms))]
        else:
            ir = synthetic_room(rng, rng.uniform(*self.config.rt60_seconds))
        return apply_ir(audio, ir), "room"

    def _mic(self, audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        if self.sources.mics:
            return apply_ir(audio, self.sources.mics[rng.integers(len(self.sources.mics))]), "mic"
        return random_eq(rng, audio), "eq"

    def _codec(self, audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        name = self.config.codecs[rng.integers(len(self.config.codecs))]
        return codec(audio, name, rng), name

    def _bandlimit(self, audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        cutoff = self.config.cutoffs_hz[rng.integers(len(self.config.cutoffs_hz))]
        return band_limit(audio, cutoff), f"lowpass{cutoff // 1000}k"

    def _clip(self, audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        return clip(audio, rng.uniform(*self.config.clip_db)), "clip"

    def _gain(self, audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        db = rng.uniform(*self.config.gain_db)
        return audio * 10 ** (db / 20), "gain"
