"""Multi-scale STFT discriminator (EnCodec style): complex STFTs as 2-channel images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from finally_cli.models.layers import wn

# Scales per sample rate: n_fft and hop (window = n_fft) of each sub-discriminator.
SCALES = {
    16000: ((2048, 512), (1024, 256), (512, 128), (256, 64), (128, 32)),
    48000: ((4096, 1024), (2048, 512), (1024, 256), (512, 128), (256, 64)),
}


def _same(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return tuple((k - 1) * d // 2 for k, d in zip(kernel, dilation))


class STFTDiscriminator(nn.Module):
    """One scale: [batch, 1, samples] → logits [batch, 1, frames', bins'] and feature maps.

    Conv2d layers run over (time, frequency); dilations grow along time, strides halve
    frequency; LeakyReLU 0.2; weight norm.

    Args:
        n_fft: FFT size (= window length).
        hop: hop length.
        filters: channels of the first conv (doubling up to `max_filters`).
        dilations: time dilations of the strided layers.
    """

    def __init__(
        self,
        n_fft: int,
        hop: int,
        filters: int = 32,
        max_filters: int = 1024,
        dilations: tuple[int, ...] = (1, 2, 4),
        kernel: tuple[int, int] = (3, 9),
    ) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft, device="cpu"), persistent=False)
        self.convs = nn.ModuleList([wn(nn.Conv2d(2, filters, kernel, padding=_same(kernel)))])
        channels = filters
        for i, dilation in enumerate(dilations):
            out = min(filters * 2 ** (i + 1), max_filters)
            self.convs.append(
                wn(
                    nn.Conv2d(
                        channels,
                        out,
                        kernel,
                        stride=(1, 2),
                        dilation=(dilation, 1),
                        padding=_same(kernel, (dilation, 1)),
                    )
                )
            )
            channels = out
        square = (kernel[0], kernel[0])
        self.convs.append(wn(nn.Conv2d(channels, channels, square, padding=_same(square))))
        self.conv_post = wn(nn.Conv2d(channels, 1, square, padding=_same(square)))

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            spec = torch.stft(
                waveform.float().squeeze(1),
                self.n_fft,
                self.hop,
                self.n_fft,
                window=self.window,
                normalized=True,
                center=False,
                return_complex=True,
            )  # [batch, bins, frames]
        image = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)  # [b, 2, t, f]
        features = []
        for conv in self.convs:
            image = F.leaky_relu(conv(image), 0.2)
            features.append(image)
        return self.conv_post(image), features


class MultiScaleSTFTDiscriminator(nn.Module):
    """Five STFT discriminators at the scales of `SCALES[sample_rate]`.

    Args:
        sample_rate: 16000 or 48000.
        filters: channels of each sub-discriminator's first conv (32 in EnCodec).
    """

    def __init__(self, sample_rate: int, filters: int = 32) -> None:
        super().__init__()
        if sample_rate not in SCALES:
            raise ValueError(f"sample_rate={sample_rate}: expected one of {sorted(SCALES)}")
        self.sample_rate = sample_rate
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(n_fft, hop, filters) for n_fft, hop in SCALES[sample_rate]
        )

    def forward(
        self, waveform: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        logits, features = [], []
        for disc in self.discriminators:
            out, maps = disc(waveform)
            logits.append(out)
            features.append(maps)
        return logits, features
