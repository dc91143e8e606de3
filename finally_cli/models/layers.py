"""Shared building blocks: weight norm, residual stacks and a 1-D/2-D multi-scale U-Net."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

LRELU_SLOPE = 0.1


def wn(module: nn.Module) -> nn.Module:
    """Wrap a conv in weight normalisation (removed again for inference)."""
    return weight_norm(module)


def remove_weight_norm(module: nn.Module) -> None:
    """Fold every weight-norm parametrisation under `module` into plain weights."""
    for sub in module.modules():
        if parametrize.is_parametrized(sub, "weight"):
            parametrize.remove_parametrizations(sub, "weight", leave_parametrized=True)


@torch.no_grad()
def zero_conv(conv: nn.Module) -> None:
    """Zero a (weight-normed) conv's output: gain 0 and bias 0, direction kept for gradients."""
    if parametrize.is_parametrized(conv, "weight"):
        conv.parametrizations.weight.original0.zero_()
    else:
        conv.weight.zero_()
    if conv.bias is not None:
        conv.bias.zero_()


def kaiser_sinc_lowpass(
    factor: int, taps_per_phase: int, cutoff: float, beta: float
) -> torch.Tensor:
    """Kaiser-windowed sinc low-pass at `cutoff` × (Nyquist / factor), unit DC gain.

    2·taps_per_phase·factor + 1 taps, float32: the anti-alias filter of a ÷factor decimation,
    or, scaled by `factor`, the interpolation filter of a ×factor zero-insertion upsampling.
    """
    half = taps_per_phase * factor
    n = torch.arange(-half, half + 1, dtype=torch.float64)
    band = cutoff / factor
    kernel = band * torch.sinc(band * n)
    kernel = kernel * torch.kaiser_window(2 * half + 1, periodic=False, beta=beta, dtype=n.dtype)
    return (kernel / kernel.sum()).float()


def conv_nd(dims: int) -> type[nn.Module]:
    return nn.Conv1d if dims == 1 else nn.Conv2d


class ResidualStack(nn.Module):
    """`depth` pre-activation residual convs at constant width: h + conv(lrelu(h))."""

    def __init__(self, dims: int, width: int, depth: int, kernel_size: int) -> None:
        super().__init__()
        conv = conv_nd(dims)
        self.convs = nn.ModuleList(
            wn(conv(width, width, kernel_size, padding=kernel_size // 2)) for _ in range(depth)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            hidden_states = hidden_states + conv(F.leaky_relu(hidden_states, LRELU_SLOPE))
        return hidden_states


class MultiScaleUNet(nn.Module):
    """U-Net over 1-D (time) or 2-D (frequency × time) maps with concat skips.

    Each level halves (2-D, scale 2) or quarters (1-D, scale 4) the resolution with a
    strided conv; the decoder upsamples by nearest neighbour + 1×1 conv. Inputs whose
    last dims are not multiples of scale**(levels-1) are zero-padded on the right and
    cropped back, so any length works; whole multiples avoid the padding.

    Args:
        dims: 1 or 2.
        in_channels: channels of the input map.
        out_channels: channels of the output map.
        block_widths: channel width per level, outermost first.
        block_depth: residual convs per block.
        scale: resolution factor between levels.
        kernel_size: kernel of the residual convs (5 for 1-D, 3 for 2-D).
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        out_channels: int,
        block_widths: tuple[int, ...],
        block_depth: int,
        scale: int,
        kernel_size: int,
    ) -> None:
        super().__init__()
        conv = conv_nd(dims)
        self.dims = dims
        self.scale = scale
        self.levels = len(block_widths)
        widths = list(block_widths)
        self.conv_in = wn(conv(in_channels, widths[0], kernel_size, padding=kernel_size // 2))
        self.encoders = nn.ModuleList(
            ResidualStack(dims, w, block_depth, kernel_size) for w in widths[:-1]
        )
        self.downsamples = nn.ModuleList(
            wn(conv(widths[i], widths[i + 1], scale, stride=scale)) for i in range(len(widths) - 1)
        )
        self.bottleneck = ResidualStack(dims, widths[-1], block_depth, kernel_size)
        self.upsamples = nn.ModuleList(
            wn(conv(widths[i + 1], widths[i], 1)) for i in range(len(widths) - 1)
        )
        self.merges = nn.ModuleList(wn(conv(2 * w, w, 1)) for w in widths[:-1])
        self.decoders = nn.ModuleList(
            ResidualStack(dims, w, block_depth, kernel_size) for w in widths[:-1]
        )
        self.conv_out = wn(conv(widths[0], out_channels, kernel_size, padding=kernel_size // 2))

    @property
    def multiple(self) -> int:
        """Length multiple (per padded dim) that needs no internal padding."""
        return self.scale ** (self.levels - 1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # hidden_states: [batch, channels, time] or [batch, channels, freq, time]
        sizes = hidden_states.shape[2:]
        pads: list[int] = []
        for size in reversed(sizes):
            pads += [0, (-size) % self.multiple]
        if any(pads):
            hidden_states = F.pad(hidden_states, pads)
        hidden_states = self.conv_in(hidden_states)
        skips = []
        for encoder, down in zip(self.encoders, self.downsamples):
            hidden_states = encoder(hidden_states)
            skips.append(hidden_states)
            hidden_states = down(hidden_states)
        hidden_states = self.bottleneck(hidden_states)
        for i in reversed(range(len(skips))):
            hidden_states = F.interpolate(hidden_states, scale_factor=self.scale, mode="nearest")
            hidden_states = self.upsamples[i](hidden_states)
            hidden_states = self.merges[i](torch.cat([skips[i], hidden_states], dim=1))
            hidden_states = self.decoders[i](hidden_states)
        hidden_states = self.conv_out(hidden_states)
        if self.dims == 1:
            return hidden_states[..., : sizes[0]]
        return hidden_states[..., : sizes[0], : sizes[1]]


def identity_conv1x1(channels: int) -> nn.Module:
    """A weight-normed 1×1 conv initialised to the identity (a learnable skip)."""
    conv = nn.Conv1d(channels, channels, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).unsqueeze(-1))
        conv.bias.zero_()
    return wn(conv)
