"""Upsample WaveUNet: a WaveUNet whose decoder ends in a ×3 transposed conv (16 → 48 kHz)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from finally_cli.models.layers import LRELU_SLOPE, MultiScaleUNet, kaiser_sinc_lowpass, wn


class UpsampleWaveUNet(nn.Module):
    """Features at 16 kHz [batch, channels, samples] → waveform at 48 kHz [batch, 1, 3·samples].

    Args:
        channels: input feature channels.
        block_widths: U-Net widths, outermost first.
        block_depth: residual convs per block.
        features: channels fed to the final ×3 transposed conv.
        factor: temporal upsampling factor (3 for 16 → 48 kHz).
        residual: add a fixed windowed-sinc interpolation of a 16 kHz waveform to the output
            (the `base` passed to forward, else feature channel 0).
    """

    def __init__(
        self,
        channels: int,
        block_widths: tuple[int, ...],
        block_depth: int,
        features: int,
        factor: int = 3,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.factor = factor
        self.unet = MultiScaleUNet(1, channels, features, tuple(block_widths), block_depth, 4, 5)
        # kernel == stride: every input step writes its own `factor` output samples.
        self.upsample = wn(nn.ConvTranspose1d(features, 1, factor, stride=factor))
        self.residual = residual
        if residual:
            self.register_buffer("interpolator", sinc_interpolator(factor), persistent=False)

    def forward(self, features: torch.Tensor, base: torch.Tensor | None = None) -> torch.Tensor:
        """features [batch, channels, n]; base [batch, 1, n]: the residual's 16 kHz input."""
        hidden_states = F.leaky_relu(self.unet(features), LRELU_SLOPE)
        output = self.upsample(hidden_states)
        if self.residual:
            output = output + self.interpolate(features[:, :1] if base is None else base)
        return torch.tanh(output)

    def interpolate(self, waveform: torch.Tensor) -> torch.Tensor:
        """Zero-phase band-limited ×factor interpolation: [b, 1, n] → [b, 1, factor·n]."""
        half = (self.interpolator.shape[-1] - 1) // 2
        return F.conv_transpose1d(
            waveform,
            self.interpolator.to(waveform.dtype),
            stride=self.factor,
            padding=half,
            output_padding=self.factor - 1,
        )


def sinc_interpolator(factor: int, zeros: int = 12, cutoff: float = 0.95) -> torch.Tensor:
    """Taps [1, 1, 2·zeros·factor + 1] for ×factor interpolation after zero insertion.

    The pass band ends at `cutoff` × the input Nyquist; the gain of `factor` restores the
    level zero insertion divides away, so a constant comes out at the same constant.
    """
    return (kaiser_sinc_lowpass(factor, zeros, cutoff, beta=8.0) * factor).view(1, 1, -1)
