"""Frozen generator configuration dataclasses and the named presets."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finally_cli.errors import ConfigError

# Hyper-parameters of `microsoft/wavlm-large`, written out so the architecture can be
# built (and its size counted) without a download. Keys are `transformers.WavLMConfig` fields.
WAVLM_LARGE_ARCH: dict[str, Any] = {
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "conv_dim": [512] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": True,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "num_buckets": 320,
    "max_bucket_distance": 800,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
}

# A WavLM small enough for unit tests (hidden 32, 2 layers).
WAVLM_TINY_ARCH: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [16, 16],
    "conv_kernel": [10, 8],
    "conv_stride": [5, 64],
    "conv_bias": True,
    "feat_extract_norm": "layer",
    "do_stable_layer_norm": True,
    "num_buckets": 16,
    "max_bucket_distance": 64,
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
}

SSL_WEIGHT_SOURCES = ("hub", "checkpoint", "random")


# Bounds on a config.json read from anywhere: each field within its range keeps building the
# model fast, and MAX_PARAMETERS (checked on the meta device, hub.check_size) keeps it from
# exhausting memory. finally-large with WavLM-Large is 0.40 G parameters.
MAX_PARAMETERS = 1_000_000_000
MAX_CHANNELS = 8192
MAX_LEVELS = 12  # entries of a width or rate list
MAX_DEPTH = 32  # residual blocks per level
MAX_KERNEL = 1023
MAX_DILATION = 1024

# `transformers.WavLMConfig` integer fields we build from, and their upper bounds.
_SSL_ARCH_INTS = {
    "hidden_size": MAX_CHANNELS,
    "num_hidden_layers": 64,
    "num_attention_heads": 128,
    "intermediate_size": 4 * MAX_CHANNELS,
    "num_buckets": 4096,
    "max_bucket_distance": 65536,
    "num_conv_pos_embeddings": MAX_KERNEL,
    "num_conv_pos_embedding_groups": 128,
}
_SSL_ARCH_LISTS = {"conv_dim": MAX_CHANNELS, "conv_kernel": MAX_KERNEL, "conv_stride": 1024}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _matches(kind: str, value: Any) -> bool:
    if kind == "int":
        return _is_int(value)
    if kind == "float":
        return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    return True


def _check_types(config: Any) -> None:
    """Refuse values of the wrong JSON type (strings, floats for ints, bools for numbers);
    lists become tuples. Field annotations are strings here (`from __future__`)."""
    for f in dataclasses.fields(config):
        value, kind = getattr(config, f.name), str(f.type)
        if kind.startswith("tuple["):
            item = kind[len("tuple[") :].split(",")[0]
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(config, f.name, value)
            ok = isinstance(value, tuple) and all(
                _matches(item, v) or (item == "str" and _is_int(v)) for v in value
            )
            expected = f"a list of {item}"
        else:
            ok, expected = _matches(kind, value), f"a finite {kind}" if kind == "float" else kind
        if not ok:
            raise ConfigError(f"{f.name}={value!r}: expected {expected}")


def _check_widths(name: str, widths: tuple[int, ...], min_len: int = 1) -> None:
    _check_list(name, widths, 1, MAX_CHANNELS, min_len)


def _check_list(name: str, values: tuple[int, ...], low: int, high: int, min_len: int = 1) -> None:
    if not min_len <= len(values) <= MAX_LEVELS or any(not low <= v <= high for v in values):
        raise ConfigError(
            f"{name}={list(values)}: need {min_len} to {MAX_LEVELS} integers within [{low}, {high}]"
        )


def _positive(name: str, value: int, high: int = MAX_CHANNELS) -> None:
    if not 1 <= value <= high:
        raise ConfigError(f"{name}={value}: must be an integer within [1, {high}]")


def _check_ssl_arch(arch: Any) -> None:
    if not isinstance(arch, dict):
        raise ConfigError(f"ssl.arch={arch!r}: expected a mapping of WavLMConfig fields")
    for key, high in _SSL_ARCH_INTS.items():
        if key in arch and not (_is_int(arch[key]) and 1 <= arch[key] <= high):
            raise ConfigError(
                f"ssl.arch.{key}={arch[key]!r}: must be an integer within [1, {high}]"
            )
    lengths = set()
    for key, high in _SSL_ARCH_LISTS.items():
        if key in arch:
            values = arch[key]
            if not isinstance(values, list | tuple) or not all(_is_int(v) for v in values):
                raise ConfigError(f"ssl.arch.{key}={values!r}: expected a list of integers")
            _check_list(f"ssl.arch.{key}", tuple(values), 1, high)
            lengths.add(len(values))
    if len(lengths) > 1:
        raise ConfigError(
            "ssl.arch: conv_dim, conv_kernel and conv_stride must have the same length"
        )
    hidden, heads = arch.get("hidden_size", 768), arch.get("num_attention_heads", 12)
    if hidden % heads:
        raise ConfigError(
            f"ssl.arch.hidden_size={hidden}: must be divisible by num_attention_heads={heads}"
        )


@dataclass(frozen=True)
class SSLConfig:
    """The optional WavLM conditioning branch.

    Attributes:
        enabled: whether the generator uses the SSL branch at all.
        model_id: Hub repo id (or local folder) of the pre-trained weights.
        revision: Hub revision (branch, tag or commit) pinned for reproducibility.
        weights: where the weights come from: "hub" (downloaded, not stored in our
            checkpoint), "checkpoint" (stored in model.safetensors) or "random"
            (seeded random init; speed benchmarks only).
        arch: `transformers.WavLMConfig` keyword arguments.
        layer: hidden-state index used as conditioning (-1 = last transformer layer).
        seed: seed for "random" weights.
        normalize_layers: layers whose features are normalised to clean-speech statistics
            ("conv" and/or 1-based transformer layers; empty = off). See feature_norm.py.
        finetune: train the SSL model too (the paper keeps it frozen).
        lr_multiplier: learning-rate factor of the SSL parameters when fine-tuning.
    """

    enabled: bool = False
    model_id: str = "microsoft/wavlm-large"
    revision: str = "main"
    weights: str = "hub"
    arch: dict[str, Any] = field(default_factory=lambda: dict(WAVLM_LARGE_ARCH))
    layer: int = -1
    seed: int = 0
    normalize_layers: tuple[str, ...] = ()
    finetune: bool = False
    lr_multiplier: float = 0.1

    def __post_init__(self) -> None:
        _check_types(self)
        _check_ssl_arch(self.arch)
        if self.weights not in SSL_WEIGHT_SOURCES:
            raise ConfigError(f"ssl.weights={self.weights!r}: expected one of {SSL_WEIGHT_SOURCES}")
        object.__setattr__(
            self, "normalize_layers", tuple(str(v).lower() for v in self.normalize_layers)
        )
        layers = int(self.arch.get("num_hidden_layers", 12))
        for value in self.normalize_layers:
            if value != "conv" and not (value.isdigit() and 1 <= int(value) <= layers):
                raise ConfigError(
                    f"ssl.normalize_layers: {value!r} is not 'conv' or a layer within [1, {layers}]"
                )
        if self.lr_multiplier < 0:
            raise ConfigError(f"ssl.lr_multiplier={self.lr_multiplier}: must be ≥ 0")
        if not -(layers + 1) <= self.layer <= layers:  # hidden states: input, then each layer
            raise ConfigError(
                f"ssl.layer={self.layer}: expected a hidden-state index within "
                f"[{-(layers + 1)}, {layers}]"
            )

    @property
    def hidden_size(self) -> int:
        return int(self.arch.get("hidden_size", 768))


@dataclass(frozen=True)
class SpectralUNetConfig:
    """Mel → linear-frequency 2-D U-Net (HiFi++ SpectralUNet)."""

    block_widths: tuple[int, ...] = (8, 16, 24, 32, 64)
    block_depth: int = 5
    out_channels: int = 128

    def __post_init__(self) -> None:
        _check_types(self)
        _check_widths("spectral_unet.block_widths", self.block_widths)
        _positive("spectral_unet.block_depth", self.block_depth, MAX_DEPTH)
        _positive("spectral_unet.out_channels", self.out_channels)


@dataclass(frozen=True)
class UpsamplerConfig:
    """HiFi-GAN generator backbone (×256 from mel frames back to 16 kHz samples)."""

    initial_channels: int = 128
    rates: tuple[int, ...] = (8, 8, 2, 2)
    kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilations: tuple[int, ...] = (1, 3, 5)

    def __post_init__(self) -> None:
        _check_types(self)
        _positive("upsampler.initial_channels", self.initial_channels)
        _check_list("upsampler.rates", self.rates, 1, 256)
        _check_list("upsampler.kernel_sizes", self.kernel_sizes, 1, MAX_KERNEL)
        _check_list("upsampler.resblock_kernel_sizes", self.resblock_kernel_sizes, 1, MAX_KERNEL)
        _check_list("upsampler.resblock_dilations", self.resblock_dilations, 1, MAX_DILATION)
        if any(k % 2 == 0 for k in self.resblock_kernel_sizes):
            raise ConfigError(
                f"upsampler.resblock_kernel_sizes={list(self.resblock_kernel_sizes)}: must be "
                "odd (same-length convolutions)"
            )
        if len(self.rates) != len(self.kernel_sizes):
            raise ConfigError(
                f"upsampler.rates={list(self.rates)} and upsampler.kernel_sizes="
                f"{list(self.kernel_sizes)} must have the same length"
            )
        total = 1
        for r in self.rates:
            total *= int(r)
        if total != 256:
            raise ConfigError(f"upsampler.rates={list(self.rates)}: product must be 256 (mel hop)")
        for rate, kernel in zip(self.rates, self.kernel_sizes):
            if kernel < rate or (kernel - rate) % 2:
                raise ConfigError(
                    f"upsampler.kernel_sizes={list(self.kernel_sizes)}: each must be ≥ its rate "
                    f"and differ from it by an even number (rates {list(self.rates)})"
                )
        if self.initial_channels % (2 ** len(self.rates)) != 0:
            raise ConfigError(
                f"upsampler.initial_channels={self.initial_channels}: must be divisible by "
                f"2**{len(self.rates)} (channels halve at every stage)"
            )

    @property
    def out_channels(self) -> int:
        return self.initial_channels // 2 ** len(self.rates)


@dataclass(frozen=True)
class UNetConfig:
    """Widths and depth of a multi-scale residual U-Net (WaveUNet, SpectralMaskNet)."""

    block_widths: tuple[int, ...] = (10, 20, 40, 80)
    block_depth: int = 4

    def __post_init__(self) -> None:
        _check_types(self)
        _check_widths("block_widths", self.block_widths)
        _positive("block_depth", self.block_depth, MAX_DEPTH)


@dataclass(frozen=True)
class UpsampleWaveUNetConfig:
    """WaveUNet whose decoder ends in a ×3 transposed conv: 16 kHz → 48 kHz.

    `residual`: keep the 16 kHz output head (`conv_post`) and add a fixed band-limited ×3
    interpolation of its output, so stage 3 starts from stage 2's in-band output and the network
    learns only the correction and the new upper band (finally-small).
    """

    enabled: bool = True
    block_widths: tuple[int, ...] = (16, 16, 32, 64)
    block_depth: int = 2
    features: int = 64
    residual: bool = False

    def __post_init__(self) -> None:
        _check_types(self)
        _check_widths("upsample_wave_unet.block_widths", self.block_widths)
        _positive("upsample_wave_unet.block_depth", self.block_depth, MAX_DEPTH)
        _positive("upsample_wave_unet.features", self.features)


@dataclass(frozen=True)
class SpectralRestorerConfig:
    """The predictive spectral path (`SpectralRestorer`), used instead of the HiFi++ chain.

    When enabled, the generator is: 16 kHz STFT → ERB band gains + low-band deep filter →
    iSTFT (→ the Upsample WaveUNet in stage 3); the SpectralUNet/HiFi/WaveUNet/mask blocks are
    not built. A model that learns on 2 CPU cores (docs/training.md).
    """

    enabled: bool = False
    n_fft: int = 512
    hop: int = 128
    erb_bands: int = 32
    df_bins: int = 96
    df_order: int = 3
    df_lookahead: int = 1
    hidden: int = 256
    gru_layers: int = 2
    context_frames: int = 5
    compression: float = 0.3
    max_gain: float = 2.0
    magnitude_bins: int = 0
    residual_gru_layers: int = 0
    floor_frames: int = 0
    highpass_hz: float = 0.0
    mix_back: float = 0.0
    mix_back_from_db: float = 12.0
    mix_back_to_db: float = 18.0
    mix_back_spike_from: float = 1.5
    mix_back_spike_to: float = 3.0
    mix_back_kept: float = 0.0
    postfilter_below: float = 0.0
    backward_gru_hidden: int = 0
    freq_conv_channels: int = 0
    bin_refiner_channels: int = 0

    def __post_init__(self) -> None:
        _check_types(self)
        for name, high in (("n_fft", 16384), ("hop", 16384), ("erb_bands", 1024),
                           ("df_bins", 8193), ("df_order", 16), ("hidden", MAX_CHANNELS),
                           ("gru_layers", 16), ("context_frames", 63)):  # fmt: skip
            _positive(f"spectral_restorer.{name}", getattr(self, name), high)
        if self.hop > self.n_fft or self.n_fft % self.hop:
            raise ConfigError(f"spectral_restorer.hop={self.hop}: must divide n_fft={self.n_fft}")
        if self.df_bins > self.n_fft // 2 + 1:
            raise ConfigError(
                f"spectral_restorer.df_bins={self.df_bins}: at most n_fft/2+1 = "
                f"{self.n_fft // 2 + 1}"
            )
        if not 0 <= self.df_lookahead < self.df_order:
            raise ConfigError(
                f"spectral_restorer.df_lookahead={self.df_lookahead}: expected 0 to "
                f"df_order-1 = {self.df_order - 1}"
            )
        if self.context_frames < 1 or self.context_frames % 2 == 0:
            raise ConfigError(
                f"spectral_restorer.context_frames={self.context_frames}: must be odd and ≥ 1"
            )
        if not 0 < self.compression <= 1:
            raise ConfigError(f"spectral_restorer.compression={self.compression}: expected (0, 1]")
        if not 1 < self.max_gain <= 1000:
            raise ConfigError(f"spectral_restorer.max_gain={self.max_gain}: expected (1, 1000]")
        if not 0 <= self.residual_gru_layers <= 16:
            raise ConfigError(
                f"spectral_restorer.residual_gru_layers={self.residual_gru_layers}: "
                "expected 0 to 16"
            )
        if not 0 <= self.backward_gru_hidden <= MAX_CHANNELS:
            raise ConfigError(
                f"spectral_restorer.backward_gru_hidden={self.backward_gru_hidden}: "
                f"expected 0 (off) to {MAX_CHANNELS}"
            )
        if not 0 <= self.freq_conv_channels <= 256:
            raise ConfigError(
                f"spectral_restorer.freq_conv_channels={self.freq_conv_channels}: "
                "expected 0 (off) to 256"
            )
        if not 0 <= self.bin_refiner_channels <= 256:
            raise ConfigError(
                f"spectral_restorer.bin_refiner_channels={self.bin_refiner_channels}: "
                "expected 0 (off) to 256"
            )
        if self.freq_conv_channels and self.n_fft % 16:
            raise ConfigError(
                f"spectral_restorer.freq_conv_channels needs n_fft divisible by 16 (the conv "
                f"stack halves {self.n_fft // 2} bins three times), got n_fft={self.n_fft}"
            )
        if not 0 <= self.magnitude_bins <= self.n_fft // 2 + 1:
            raise ConfigError(
                f"spectral_restorer.magnitude_bins={self.magnitude_bins}: expected 0 to "
                f"n_fft/2+1 = {self.n_fft // 2 + 1}"
            )
        if not 0 <= self.floor_frames <= 4096:
            raise ConfigError(
                f"spectral_restorer.floor_frames={self.floor_frames}: expected 0 (off) to 4096"
            )
        if not 0 <= self.highpass_hz <= 1000:
            raise ConfigError(
                f"spectral_restorer.highpass_hz={self.highpass_hz}: expected 0 (off) to 1000"
            )
        if not 0 <= self.mix_back <= 1:
            raise ConfigError(f"spectral_restorer.mix_back={self.mix_back}: expected 0 (off) to 1")
        if self.mix_back_from_db >= self.mix_back_to_db:
            raise ConfigError(
                f"spectral_restorer.mix_back_from_db={self.mix_back_from_db}: must be below "
                f"mix_back_to_db={self.mix_back_to_db}"
            )
        if not 0 < self.mix_back_spike_from < self.mix_back_spike_to:
            raise ConfigError(
                f"spectral_restorer.mix_back_spike_from={self.mix_back_spike_from}: must be "
                f"above 0 and below mix_back_spike_to={self.mix_back_spike_to}"
            )
        if not 0 <= self.mix_back_kept <= 1:
            raise ConfigError(
                f"spectral_restorer.mix_back_kept={self.mix_back_kept}: expected 0 (off) to 1"
            )
        if not 0 <= self.postfilter_below < 1:
            raise ConfigError(
                f"spectral_restorer.postfilter_below={self.postfilter_below}: expected 0 (off) "
                "to below 1"
            )


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything needed to build a FINALLY generator; stored as config.json.

    Attributes:
        name: preset or model name, informational.
        fusion_channels: channels after fusing SSL and spectral features (SSL branch only).
    """

    name: str = "custom"
    ssl: SSLConfig = field(default_factory=SSLConfig)
    spectral_unet: SpectralUNetConfig = field(default_factory=SpectralUNetConfig)
    fusion_channels: int = 512
    upsampler: UpsamplerConfig = field(default_factory=UpsamplerConfig)
    wave_unet: UNetConfig = field(default_factory=UNetConfig)
    spectral_mask: UNetConfig = field(
        default_factory=lambda: UNetConfig(block_widths=(8, 12, 24, 32), block_depth=4)
    )
    upsample_wave_unet: UpsampleWaveUNetConfig = field(default_factory=UpsampleWaveUNetConfig)
    spectral_restorer: SpectralRestorerConfig = field(default_factory=SpectralRestorerConfig)

    input_sample_rate: int = 16000

    def __post_init__(self) -> None:
        _check_types(self)
        _positive("fusion_channels", self.fusion_channels)
        if self.input_sample_rate != 16000:
            raise ConfigError(
                f"input_sample_rate={self.input_sample_rate}: the FINALLY front-end runs at 16000"
            )

    @property
    def output_sample_rate(self) -> int:
        return 48000 if self.upsample_wave_unet.enabled else 16000

    @property
    def upsample_factor(self) -> int:
        return self.output_sample_rate // self.input_sample_rate

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorConfig:
        """Build from a (possibly sparse) dict; unknown keys raise `ConfigError`."""
        return _from_dict(cls, data, prefix="")

    def replace(self, **changes: Any) -> GeneratorConfig:
        return dataclasses.replace(self, **changes)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _from_dict(
    cls: type, data: dict[str, Any], prefix: str, nested: dict[tuple[str, str], type] | None = None
) -> Any:
    """Build dataclass `cls` from a sparse dict; `nested` maps (class, field) to sub-classes."""
    nested = _NESTED if nested is None else nested
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = prefix.rstrip(".") or "config"
        raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        sub = nested.get((cls.__name__, name))
        if sub is not None:
            kwargs[name] = _from_dict(sub, value, prefix=f"{prefix}{name}.", nested=nested)
        elif isinstance(value, list) and name != "arch":
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except ConfigError as err:  # name the field by its full path (wave_unet.block_depth)
        if prefix and not str(err).startswith(prefix):
            raise ConfigError(f"{prefix}{err}") from err
        raise


_NESTED: dict[tuple[str, str], type] = {
    ("GeneratorConfig", "ssl"): SSLConfig,
    ("GeneratorConfig", "spectral_unet"): SpectralUNetConfig,
    ("GeneratorConfig", "upsampler"): UpsamplerConfig,
    ("GeneratorConfig", "wave_unet"): UNetConfig,
    ("GeneratorConfig", "spectral_mask"): UNetConfig,
    ("GeneratorConfig", "upsample_wave_unet"): UpsampleWaveUNetConfig,
    ("GeneratorConfig", "spectral_restorer"): SpectralRestorerConfig,
}


def _large() -> GeneratorConfig:
    # Sizes of the public re-implementations (SPEC §2), which mark them "as in paper".
    return GeneratorConfig(
        name="finally-large",
        ssl=SSLConfig(enabled=True, weights="hub"),
        spectral_unet=SpectralUNetConfig(
            block_widths=(16, 32, 64, 128, 256), block_depth=4, out_channels=512
        ),
        fusion_channels=512,
        upsampler=UpsamplerConfig(initial_channels=512),
        wave_unet=UNetConfig(block_widths=(128, 128, 256, 512), block_depth=4),
        spectral_mask=UNetConfig(block_widths=(64, 128, 256, 512), block_depth=1),
        upsample_wave_unet=UpsampleWaveUNetConfig(
            block_widths=(128, 128, 128, 128, 256), block_depth=3, features=512
        ),
    )


def _small() -> GeneratorConfig:
    # The shipped CPU model: the predictive spectral path (band gains + deep filter, GRU),
    # which learns on 2 CPU cores where the generative chain does not (docs/training.md);
    # stage 3 adds the residual Upsample WaveUNet on its output.
    return GeneratorConfig(
        name="finally-small",
        spectral_restorer=SpectralRestorerConfig(enabled=True),
        upsample_wave_unet=UpsampleWaveUNetConfig(
            block_widths=(4, 8, 16, 32), block_depth=1, features=8, residual=True
        ),
    )


def _small_hifi() -> GeneratorConfig:
    # The FINALLY block chain without the SSL branch, every block cut to the widths that fit
    # RTF ≤ 0.02 on 2 CPU cores (docs/performance.md): finally-small up to version 0.2.
    return GeneratorConfig(
        name="finally-small-hifi",
        spectral_unet=SpectralUNetConfig(
            block_widths=(4, 8, 12, 16), block_depth=1, out_channels=32
        ),
        upsampler=UpsamplerConfig(
            initial_channels=64, resblock_kernel_sizes=(3,), resblock_dilations=(1, 3)
        ),
        wave_unet=UNetConfig(block_widths=(8, 16, 24, 32), block_depth=1),
        spectral_mask=UNetConfig(block_widths=(4, 8, 16), block_depth=1),
        upsample_wave_unet=UpsampleWaveUNetConfig(
            block_widths=(4, 8, 16, 32), block_depth=1, features=8, residual=True
        ),
    )


def _hifipp() -> GeneratorConfig:
    # HiFi++ widths (official code), no SSL branch, plus a light ×3 upsampling WaveUNet:
    # the pre-1.0 finally-small, kept for GPU training and comparisons.
    return GeneratorConfig(name="hifipp")


def _tiny() -> GeneratorConfig:
    return GeneratorConfig(
        name="tiny",
        ssl=SSLConfig(
            enabled=True, model_id="tiny-wavlm", weights="checkpoint", arch=dict(WAVLM_TINY_ARCH)
        ),
        spectral_unet=SpectralUNetConfig(block_widths=(2, 4), block_depth=1, out_channels=8),
        fusion_channels=16,
        upsampler=UpsamplerConfig(
            initial_channels=16, resblock_kernel_sizes=(3,), resblock_dilations=(1, 3)
        ),
        wave_unet=UNetConfig(block_widths=(2, 4), block_depth=1),
        spectral_mask=UNetConfig(block_widths=(2, 4), block_depth=1),
        upsample_wave_unet=UpsampleWaveUNetConfig(block_widths=(2, 4), block_depth=1, features=4),
    )


PRESETS = {
    "finally-large": _large,
    "finally-small": _small,
    "finally-small-hifi": _small_hifi,
    "hifipp": _hifipp,
    "tiny": _tiny,
}


def preset(name: str) -> GeneratorConfig:
    """Return the config of a named preset.

    Raises:
        ConfigError: for an unknown name (the message lists the known ones).
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name]()


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge sparse `overrides` into `base` (dicts merge, everything else replaces)."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "arch":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_overlay(config: GeneratorConfig, path: str | Path) -> GeneratorConfig:
    """Apply a sparse YAML overlay; unknown keys raise `ConfigError` naming the file."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: cannot read overlay: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an overlay must be a mapping")
    try:
        return GeneratorConfig.from_dict(merge(config.to_dict(), data))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
