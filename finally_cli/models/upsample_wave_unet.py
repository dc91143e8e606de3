"""Upsample WaveUNet: a WaveUNet whose decoder ends in a ×3 transposed conv (16 → 48 kHz)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from finally_cli.models.layers import LRELU_SLOPE, MultiScaleUNet, wn


class UpsampleWaveUNet(nn.Module):
    """Features at 16 kHz [batch, channels, samples] → waveform at 48 kHz [batch, 1, 3·samples].

    Args:
        channels: input feature channels.
        block_widths: U-Net widths, outermost first.
        block_depth: residual convs per block.
        features: channels fed to the final ×3 transposed conv.
        factor: temporal upsampling factor (3 for 16 → 48 kHz).
    """

    def __init__(
        self,
        channels: int,
        block_widths: tuple[int, ...],
        block_depth: int,
        features: int,
        factor: int = 3,
    ) -> None:
        super().__init__()
        self.unet = MultiScaleUNet(1, channels, features, tuple(block_widths), block_depth, 4, 5)
        # kernel == stride: every input step writes its own `factor` output samples.
        self.upsample = wn(nn.ConvTranspose1d(features, 1, factor, stride=factor))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden_states = F.leaky_relu(self.unet(features), LRELU_SLOPE)
        return torch.tanh(self.upsample(hidden_states))
