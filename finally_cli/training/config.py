"""Training configuration: frozen dataclasses, YAML stage files as sparse overrides, --set."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finally_cli.errors import ConfigError
from finally_cli.models.config import _from_dict, merge
from finally_cli.training.degradations import DegradationConfig

CONFIG_ROOT = Path(__file__).parent / "configs"
PRECISIONS = ("no", "bf16", "fp16")


@dataclass(frozen=True)
class DataConfig:
    """Folders (recursive, any libsndfile format) and segmenting.

    Attributes:
        clean, noise, rooms, mics: source folders; missing noise/IRs are synthesised.
        validation: a folder written by `finally train prepare-val`.
        segment_seconds: training segment length (rounded up to the model's length multiple).
        silence_db: segments whose clean active level is below this are skipped.
        min_bandwidth_hz: clean files whose measured bandwidth is below this are left out
            (0: keep all). Stage 3 learns the band above 8 kHz from its references, so a
            16 kHz recording resampled to 44.1 kHz would teach it to leave that band empty.
        max_floor_db: clean files whose noise floor (`data.noise_floor_db`: quietest frames
            against the speech) is above this are left out (0: keep all). A target with
            hiss at −25 dB teaches the model to leave noise at that level in its output.
        speed_perturb: speed (and pitch) perturbation of the clean speech, ±fraction.
        clean_highpass_hz: when > 0, every clean segment (input source and target alike) is
            high-passed at this corner first (zero phase, 4th-order Butterworth magnitude).
            Many recordings carry a DC offset or rumble below the voice (in the offline
            recipe's clean speech a median of −36 dB of the energy lies below 50 Hz, up to
            −3 dB in some voices); as a target it teaches the model to keep rumble. The
            targets of `pairs` (a teacher keeps the rumble it was given) are filtered too.
        targets: a `recipes.quieten` copy of the one `clean` folder: inputs are degraded from
            the original files, targets read from their copies, so a recording's own hiss
            becomes noise to remove (None: each clean file is its own target).
        pairs: a folder of fixed noisy/clean pairs in `prepare-val`'s layout, typically a
            `recipes.teacher` set whose targets are a peer's output, or a list of such
            folders (their pairs pooled, each pair drawn alike).
        p_pairs: share of the training items drawn from `pairs` (a random one, a random
            segment of it) instead of degraded from `clean`.
    """

    clean: tuple[str, ...] = ()
    noise: tuple[str, ...] = ()
    rooms: tuple[str, ...] = ()
    mics: tuple[str, ...] = ()
    validation: str | None = None
    segment_seconds: float = 4.096
    num_workers: int = 2
    silence_db: float = -50.0
    max_noise_seconds: float = 60.0
    min_bandwidth_hz: float = 0.0
    max_floor_db: float = 0.0
    speed_perturb: float = 0.0
    clean_highpass_hz: float = 0.0
    targets: str | None = None
    pairs: str | tuple[str, ...] | None = None
    p_pairs: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.p_pairs <= 1:
            raise ConfigError(f"data.p_pairs={self.p_pairs}: expected 0 (off) to 1")
        if self.p_pairs > 0 and not self.pairs:
            raise ConfigError(f"data.p_pairs={self.p_pairs}: needs data.pairs (a pairs folder)")
        if not 0 <= self.speed_perturb < 0.5:
            raise ConfigError(f"data.speed_perturb={self.speed_perturb}: expected 0 (off) to 0.5")
        if not -120 <= self.max_floor_db <= 0:
            raise ConfigError(
                f"data.max_floor_db={self.max_floor_db}: expected 0 (off) down to -120"
            )
        if not 0 <= self.clean_highpass_hz <= 1000:
            raise ConfigError(
                f"data.clean_highpass_hz={self.clean_highpass_hz}: expected 0 (off) to 1000"
            )
        if not 0 <= self.min_bandwidth_hz <= 24000:
            raise ConfigError(
                f"data.min_bandwidth_hz={self.min_bandwidth_hz}: expected 0 (off) to 24000"
            )


@dataclass(frozen=True)
class LossConfig:
    """Loss weights per stage (SPEC §6) and the perceptual feature space.

    Attributes:
        features: the LMOS feature space φ: "auto" (WavLM conv encoder when WavLM weights
            load, else the best probe-ranked installed pretrained layer, else the
            multi-resolution STFT fallback), "wavlm" (required), "mrstft", or a pretrained
            layer NAME:LAYER (e.g. "whisper-tiny.en:conv"; not dnsmos, the yardstick).
        lmos: weight of the LMOS loss (0: not computed).
        spectral: weight of the compressed-spectrum MSE (`CompressedSpectralLoss`), the
            predictive models' regression loss; added to LMOS.
        spectral_complex: share of its complex (phase-aware) term.
        spectral_exponent: its power-law compression c (|X|^c): lower counts quiet bins
            (fricatives, but also residual noise) more against loud ones.
        spectral_asymmetry: extra weight on the magnitude error where the estimate is quieter
            than the target (speech taken away), so the model keeps weak speech when unsure
            instead of removing it with the noise; 0 = symmetric.
        spectral_distance: "mse" (squared errors: under doubt the model answers with the
            mean of what a bin might hold, so a bin that is speech with probability p comes
            out at p^(1/c) of the speech's level, −6 dB at p = 0.8 with c = 0.3) or "l1"
            (absolute errors: the median, so it keeps what is more likely speech whole and
            removes what is more likely noise).
        spectral_erb: exponent p of its frequency weighting by the density of ERB bands,
            (1 / ERB(f))^p: 0 weighs every bin alike, 1 every ERB band alike (the low band,
            a few bins, then counts as much as hearing resolves in it).
        sisdr: weight of the negative SI-SDR in dB (`SiSdrLoss`, capped at `sisdr_max_db`),
            added to the others: a logarithmic error that counts a nearly clean example's
            small damage as much as a noisy example's residual noise (0: not computed).
        sisdr_max_db: the SI-SDR beyond which an example stops counting.
    """

    lmos: float = 1.0
    spectral: float = 0.0
    spectral_complex: float = 0.3
    spectral_exponent: float = 0.3
    spectral_asymmetry: float = 0.0
    spectral_distance: str = "mse"
    spectral_erb: float = 0.0
    sisdr: float = 0.0
    sisdr_max_db: float = 30.0
    lmos_feature: float = 100.0
    lmos_stft: float = 1.0
    features: str = "auto"
    gan: float = 0.0
    fm: float = 0.0
    utmos: float = 0.0
    pesq: float = 0.0
    disc_filters: int = 32

    def __post_init__(self) -> None:
        if self.features not in ("auto", "wavlm", "mrstft"):
            _check_pretrained_features(self.features)
        if not 0 < self.spectral_exponent <= 1:
            raise ConfigError(f"loss.spectral_exponent={self.spectral_exponent}: expected (0, 1]")
        if not 0 <= self.spectral_asymmetry <= 10:
            raise ConfigError(
                f"loss.spectral_asymmetry={self.spectral_asymmetry}: expected 0 (off) to 10"
            )
        if self.spectral_distance not in ("mse", "l1"):
            raise ConfigError(
                f"loss.spectral_distance={self.spectral_distance!r}: expected 'mse' or 'l1'"
            )
        if not 0 <= self.spectral_erb <= 1:
            raise ConfigError(f"loss.spectral_erb={self.spectral_erb}: expected 0 (off) to 1")
        if self.sisdr < 0:
            raise ConfigError(f"loss.sisdr={self.sisdr}: expected ≥ 0 (0 = off)")
        if not 0 < self.sisdr_max_db <= 100:
            raise ConfigError(f"loss.sisdr_max_db={self.sisdr_max_db}: expected (0, 100] dB")


def _check_pretrained_features(spec: str) -> None:
    from finally_cli.models.pretrained import PRETRAINED

    name, sep, layer = spec.rpartition(":")
    trainable = [n for n, p in PRETRAINED.items() if p.trainable]
    if sep and layer and name in PRETRAINED and not PRETRAINED[name].trainable:
        raise ConfigError(
            f"loss.features={spec!r}: {name} is the evaluation yardstick, never a training loss"
        )
    if not (sep and layer and name in trainable):
        raise ConfigError(
            f"loss.features={spec!r}: expected auto, wavlm, mrstft or NAME:LAYER with NAME one "
            f"of {', '.join(trainable)}"
        )


@dataclass(frozen=True)
class OptimConfig:
    """AdamW for generator and discriminator, exponential decay every `decay_every` steps.

    `ema` > 0 keeps an exponential moving average of the generator's weights (decay per step,
    e.g. 0.999 ≈ the last 1 000 steps): validation, `best/`, `finally train export` and a later
    stage's `init_from` then use the averaged weights, which wander less than the raw ones.
    """

    lr: float = 2e-4
    lr_d: float = 2e-4
    betas_g: tuple[float, float] = (0.8, 0.99)
    betas_d: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = 0.01
    gamma: float = 0.996
    decay_every: int = 200
    grad_clip: float = 10.0
    d_steps: int = 2
    ema: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.ema < 1:
            raise ConfigError(f"optim.ema={self.ema}: expected 0 (off) up to, not including, 1")


BEST_METRICS = ("pesq", "estoi", "dnsmos_ovrl", "lsd")


@dataclass(frozen=True)
class TrainConfig:
    """One training stage.

    Attributes:
        stage: 1 (LMOS, 16 kHz), 2 (+ GAN/FM, 16 kHz), 3 (+ Upsample WaveUNet, 48 kHz).
        model: preset name or model folder defining the architecture.
        overlays: generator-config YAML overlays (e.g. SSL normalisation ablations).
        init_from: model folder or run folder of the previous stage (weights to start from).
        init: how a fresh generator (no init_from) starts: "random", or "identity" (output ≈
            input through a residual path; `FinallyGenerator.identity_init_`).
        freeze: generator blocks (`FinallyGenerator.blocks()` names: spectral_unet, upsampler,
            wave_unet, spectral_mask, conv_post, …) whose loaded weights are not trained — e.g.
            a stage 3 that learns only the upper band (`upsample_wave_unet`) and keeps stage 2's
            in-band output as it is.
        best_metric: the validation score whose best checkpoint is exported to `<run>/best`:
            "pesq", "estoi", "dnsmos_ovrl" (needs `validation_dnsmos`) or "lsd" (48 kHz
            log-spectral distance, lower is better; stage 3). The GAN stages trade PESQ for
            perceptual quality, so they are better judged by DNSMOS.
    """

    stage: int = 1
    model: str = "finally-small"
    overlays: tuple[str, ...] = ()
    init_from: str | None = None
    init: str = "random"
    freeze: tuple[str, ...] = ()
    steps: int = 100_000
    batch_size: int = 32
    grad_accum: int = 1
    precision: str = "no"
    device: str = "auto"
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    validate_every: int = 5000
    validation_files: int = 16
    validation_dnsmos: bool = False
    best_metric: str = "pesq"
    audio_samples: int = 2
    data: DataConfig = field(default_factory=DataConfig)
    degradation: DegradationConfig = field(default_factory=DegradationConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self) -> None:
        if self.stage not in (1, 2, 3):
            raise ConfigError(f"stage={self.stage}: expected 1, 2 or 3")
        if self.init not in ("random", "identity"):
            raise ConfigError(f"init={self.init!r}: expected 'random' or 'identity'")
        if self.best_metric not in BEST_METRICS:
            raise ConfigError(f"best_metric={self.best_metric!r}: expected one of {BEST_METRICS}")
        if self.best_metric == "dnsmos_ovrl" and not self.validation_dnsmos:
            raise ConfigError("best_metric=dnsmos_ovrl needs validation_dnsmos=true")
        if self.best_metric == "lsd" and self.stage != 3:
            raise ConfigError("best_metric=lsd needs stage 3 (48 kHz output)")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}: expected one of {PRECISIONS}")
        for name in ("steps", "batch_size", "grad_accum", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}: must be ≥ 1")

    @property
    def sample_rate(self) -> int:
        return 48000 if self.stage == 3 else 16000

    def to_dict(self) -> dict[str, Any]:
        from finally_cli.models.config import _jsonable

        return _jsonable(dataclasses.asdict(self))


_SECTIONS = {
    ("TrainConfig", "data"): DataConfig,
    ("TrainConfig", "degradation"): DegradationConfig,
    ("TrainConfig", "loss"): LossConfig,
    ("TrainConfig", "optim"): OptimConfig,
}


def from_dict(data: dict[str, Any]) -> TrainConfig:
    return _from_dict(TrainConfig, data, prefix="", nested=_SECTIONS)


def resolve_config_path(name: str) -> Path:
    """A YAML path, or a shipped name such as `finally-small/stage1`."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = CONFIG_ROOT / f"{name.removesuffix('.yaml')}.yaml"
    if shipped.is_file():
        return shipped
    known = sorted(
        str(p.relative_to(CONFIG_ROOT).with_suffix("")) for p in CONFIG_ROOT.rglob("*.yaml")
    )
    raise ConfigError(f"--config {name}: no such file or shipped config ({', '.join(known)})")


def parse_set(items: list[str]) -> dict[str, Any]:
    """`a.b=value` pairs (values parsed as YAML) → nested dict."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        node[parts[-1]] = parsed
    return out


def load_config(name: str, overrides: list[str] | None = None) -> TrainConfig:
    import yaml

    path = resolve_config_path(name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    data = merge(data, parse_set(overrides or []))
    try:
        return from_dict(data)
    except (ConfigError, TypeError) as err:
        raise ConfigError(f"{path}: {err}") from err


def diff(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    keys = []
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            keys += diff(left, right, f"{prefix}{key}.")
        elif left != right:
            keys.append(f"{prefix}{key}")
    return keys
