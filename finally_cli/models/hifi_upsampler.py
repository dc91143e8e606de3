"""HiFi-GAN generator backbone: frame features → 16 kHz multi-channel waveform features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from finally_cli.models.layers import LRELU_SLOPE, wn


class ResBlock1(nn.Module):
    """HiFi-GAN ResBlock1: per dilation, lrelu → dilated conv → lrelu → conv, residual."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.dilated = nn.ModuleList(
            wn(
                nn.Conv1d(
                    channels, channels, kernel_size, dilation=d, padding=(kernel_size - 1) * d // 2
                )
            )
            for d in dilations
        )
        self.plain = nn.ModuleList(
            wn(nn.Conv1d(channels, channels, kernel_size, padding=(kernel_size - 1) // 2))
            for _ in dilations
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for dilated, plain in zip(self.dilated, self.plain):
            residual = dilated(F.leaky_relu(hidden_states, LRELU_SLOPE))
            residual = plain(F.leaky_relu(residual, LRELU_SLOPE))
            hidden_states = hidden_states + residual
        return hidden_states


class HiFiUpsampler(nn.Module):
    """Transposed-conv upsampling (×prod(rates)) with multi-receptive-field fusion.

    Args:
        in_channels: channels of the frame features.
        initial_channels: channels after conv_pre; halved at each upsampling stage.
        rates: upsampling factor per stage.
        kernel_sizes: transposed-conv kernel per stage.
        resblock_kernel_sizes: one ResBlock1 per kernel size, averaged (MRF).
        resblock_dilations: dilations inside each ResBlock1.
    """

    def __init__(
        self,
        in_channels: int,
        initial_channels: int,
        rates: tuple[int, ...],
        kernel_sizes: tuple[int, ...],
        resblock_kernel_sizes: tuple[int, ...],
        resblock_dilations: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.conv_pre = wn(nn.Conv1d(in_channels, initial_channels, 1))
        self.ups = nn.ModuleList()
        self.mrfs = nn.ModuleList()
        channels = initial_channels
        for rate, kernel in zip(rates, kernel_sizes):
            # padding (k - r) / 2 makes the output exactly `rate` times longer.
            self.ups.append(
                wn(
                    nn.ConvTranspose1d(
                        channels, channels // 2, kernel, rate, padding=(kernel - rate) // 2
                    )
                )
            )
            channels //= 2
            self.mrfs.append(
                nn.ModuleList(
                    ResBlock1(channels, k, tuple(resblock_dilations)) for k in resblock_kernel_sizes
                )
            )
        self.out_channels = channels

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # features: [batch, in_channels, frames] → [batch, out_channels, frames * prod(rates)]
        hidden_states = self.conv_pre(features)
        for up, mrf in zip(self.ups, self.mrfs):
            hidden_states = up(F.leaky_relu(hidden_states, LRELU_SLOPE))
            hidden_states = sum(block(hidden_states) for block in mrf) / len(mrf)
        return F.leaky_relu(hidden_states, LRELU_SLOPE)
