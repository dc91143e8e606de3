"""SpectralUNet: log-mel → linear-frequency image → 2-D U-Net → 1-D frame features."""

from __future__ import annotations

import torch
from torch import nn

from finally_cli.models.layers import MultiScaleUNet, wn
from finally_cli.models.mel import N_FFT, N_MELS, mel_filter_bank

N_BINS = N_FFT // 2 + 1


class SpectralUNet(nn.Module):
    """Maps log-mel [batch, 80, frames] to features [batch, out_channels, frames].

    The U-Net sees three channels over a 513-bin linear-frequency grid: a fixed
    mel→linear interpolation of the input, a learnt 1×1 projection of it, and a
    frequency positional ramp, as in HiFi++.

    Args:
        block_widths: U-Net widths, outermost first.
        block_depth: residual 3×3 convs per block.
        out_channels: channels of the 1-D output.
    """

    def __init__(self, block_widths: tuple[int, ...], block_depth: int, out_channels: int) -> None:
        super().__init__()
        filters = torch.from_numpy(mel_filter_bank())  # [513, 80]
        # Each linear bin takes the mel bands that cover it, weighted by filter response
        # and normalised to sum 1: a cheap, smooth pseudo-inverse of the mel projection.
        weights = filters / filters.sum(dim=1, keepdim=True).clamp_min(1e-8)
        self.register_buffer("mel_to_linear", weights, persistent=False)
        self.register_buffer(
            "frequency_ramp", torch.linspace(0.0, 1.0, N_BINS)[:, None], persistent=False
        )
        self.learnt_mel_to_linear = wn(nn.Conv1d(N_MELS, N_BINS, 1))
        self.unet = MultiScaleUNet(
            dims=2,
            in_channels=3,
            out_channels=block_widths[0],
            block_widths=tuple(block_widths),
            block_depth=block_depth,
            scale=2,
            kernel_size=3,
        )
        self.collapse_channels = wn(nn.Conv2d(block_widths[0], 1, 1))
        self.project = wn(nn.Conv1d(N_BINS, out_channels, 1))

    @property
    def frame_multiple(self) -> int:
        return self.unet.multiple

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        batch, _, frames = log_mel.shape
        fixed = torch.matmul(self.mel_to_linear, log_mel)  # [batch, 513, frames]
        learnt = self.learnt_mel_to_linear(log_mel)  # [batch, 513, frames]
        ramp = self.frequency_ramp.expand(batch, N_BINS, frames)
        image = torch.stack([fixed, ramp.to(fixed.dtype), learnt], dim=1)  # [b, 3, 513, frames]
        image = self.unet(image)
        return self.project(self.collapse_channels(image).squeeze(1))
