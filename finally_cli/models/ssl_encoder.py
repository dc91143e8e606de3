"""The frozen WavLM conditioning branch (transformers `WavLMModel`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from finally_cli.models.config import SSLConfig
from finally_cli.models.feature_norm import FeatureNormalizer


def build_wavlm(config: SSLConfig) -> nn.Module:
    """Build a randomly initialised `WavLMModel` from `config.arch` (no download)."""
    from transformers import WavLMConfig, WavLMModel

    hf_config = WavLMConfig(**config.arch)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(config.seed)
        model = WavLMModel(hf_config)
    finally:
        torch.random.set_rng_state(generator_state)
    return model


class SSLEncoder(nn.Module):
    """Waveform 16 kHz [batch, samples] → hidden states [batch, hidden, frames].

    Each window is standardised to zero mean / unit variance first, as WavLM's feature
    extractor does in pre-training. The model stays frozen (eval mode, no grad) unless the
    config fine-tunes it; with `normalize_layers` a FeatureNormalizer re-scales the chosen
    layers to clean-speech statistics (buffers saved with the checkpoint).
    """

    def __init__(self, config: SSLConfig) -> None:
        super().__init__()
        self.layer = config.layer
        self.model = build_wavlm(config)
        self.trainable = config.finetune
        self.model.requires_grad_(self.trainable)
        if not self.trainable:
            self.model.eval()
        self.norm: FeatureNormalizer | None = None
        if config.normalize_layers:
            self.norm = FeatureNormalizer(
                list(config.normalize_layers), int(self.model.config.conv_dim[-1]), self.hidden_size
            )
            self.norm.attach(self.model)

    def train(self, mode: bool = True) -> SSLEncoder:
        super().train(mode)
        if not self.trainable:
            self.model.eval()
        return self

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        mean = waveform.mean(dim=-1, keepdim=True)
        std = waveform.std(dim=-1, keepdim=True, unbiased=False)
        normalised = (waveform - mean) / (std + 1e-7)
        with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            output = self.model(normalised, output_hidden_states=self.layer != -1)
        if self.layer == -1:
            hidden = output.last_hidden_state
        else:
            hidden = output.hidden_states[self.layer]
        return hidden.transpose(1, 2)  # [batch, hidden, frames]


def align_frames(features: torch.Tensor, frames: int) -> torch.Tensor:
    """Nearest-neighbour resample [batch, channels, n] to [batch, channels, frames]."""
    if features.shape[-1] == frames:
        return features
    return F.interpolate(features, size=frames, mode="nearest")
