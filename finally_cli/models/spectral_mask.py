"""SpectralMaskNet: a softplus magnitude mask predicted by a 2-D U-Net, phase kept."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from finally_cli.models.layers import MultiScaleUNet, identity_conv1x1

N_FFT = 1024
HOP = 256


class SpectralMaskNet(nn.Module):
    """Per-channel STFT → |X| → U-Net → softplus mask × X → iSTFT, plus an identity skip.

    The DC bin and the first frame are left unmasked (as in HiFi++), so the masked grid
    is 512 bins × samples/256 frames: powers of two for the U-Net when the length is a
    multiple of 256 · 2**(levels-1). STFT, mask and iSTFT run in float32 even under
    autocast: bf16 magnitudes lose too much precision for a multiplicative mask.

    Args:
        channels: channels of the waveform features (each gets its own STFT).
        block_widths: U-Net widths, outermost first.
        block_depth: residual 3×3 convs per block.
    """

    def __init__(self, channels: int, block_widths: tuple[int, ...], block_depth: int) -> None:
        super().__init__()
        self.unet = MultiScaleUNet(2, channels, channels, tuple(block_widths), block_depth, 2, 3)
        self.skip = identity_conv1x1(channels)
        self.register_buffer("window", torch.hann_window(N_FFT, device="cpu"), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # features: [batch, channels, samples]
        batch, channels, samples = features.shape
        device_type = features.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            flat = features.float().reshape(batch * channels, samples)
            spec = torch.stft(
                flat, N_FFT, HOP, N_FFT, window=self.window, center=True, return_complex=True
            )  # [b*c, 513, frames]
            inner = spec[:, 1:, 1:]
            magnitude = (inner.real.square() + inner.imag.square() + 1e-9).sqrt()
        image = magnitude.reshape(batch, channels, *magnitude.shape[1:])
        mask = F.softplus(self.unet(image))
        with torch.autocast(device_type=device_type, enabled=False):
            mask = mask.float().reshape(batch * channels, *magnitude.shape[1:])
            masked = torch.cat([spec[:, :1, :], torch.cat([spec[:, 1:, :1], inner * mask], 2)], 1)
            restored = torch.istft(
                masked, N_FFT, HOP, N_FFT, window=self.window, center=True, length=samples
            )
        restored = restored.reshape(batch, channels, samples).to(features.dtype)
        return restored + self.skip(features)
