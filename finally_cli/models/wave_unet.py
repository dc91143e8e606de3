"""WaveUNet: a 1-D U-Net refining upsampler features together with the raw waveform."""

from __future__ import annotations

import torch
from torch import nn

from finally_cli.models.layers import MultiScaleUNet, identity_conv1x1, wn


class WaveUNet(nn.Module):
    """concat(features, waveform) → 1×1 conv → U-Net (kernel 5, scale 4) + identity skip.

    Args:
        channels: channels of the upsampler features (kept at the output).
        block_widths: U-Net widths, outermost first.
        block_depth: residual convs per block.
    """

    def __init__(self, channels: int, block_widths: tuple[int, ...], block_depth: int) -> None:
        super().__init__()
        self.conv_pre = wn(nn.Conv1d(channels + 1, channels, 1))
        self.unet = MultiScaleUNet(1, channels, channels, tuple(block_widths), block_depth, 4, 5)
        self.skip = identity_conv1x1(channels)

    def forward(self, features: torch.Tensor, waveform: torch.Tensor) -> torch.Tensor:
        # features: [batch, channels, samples]; waveform: [batch, 1, samples]
        hidden_states = self.conv_pre(torch.cat([features, waveform.to(features.dtype)], dim=1))
        return self.unet(hidden_states) + self.skip(hidden_states)
