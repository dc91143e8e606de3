"""The FINALLY generator: SpectralUNet (+ WavLM) → HiFi upsampler → WaveUNet → mask → ×3."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from finally_cli.audio.level import PEAK_LIMIT
from finally_cli.models.config import GeneratorConfig
from finally_cli.models.hifi_upsampler import HiFiUpsampler, ResBlock1
from finally_cli.models.layers import remove_weight_norm, wn, zero_conv
from finally_cli.models.mel import HOP, LogMel
from finally_cli.models.spectral_mask import SpectralMaskNet
from finally_cli.models.spectral_restorer import SpectralRestorer
from finally_cli.models.spectral_unet import SpectralUNet
from finally_cli.models.ssl_encoder import SSLEncoder, align_frames
from finally_cli.models.upsample_wave_unet import UpsampleWaveUNet
from finally_cli.models.wave_unet import WaveUNet


class Fusion(nn.Module):
    """concat(spectral, SSL) features → ResBlock1 → 1×1 conv to the upsampler width."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = ResBlock1(in_channels, 3, (1, 3, 5))
        self.project = wn(nn.Conv1d(in_channels, out_channels, 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.project(self.block(features))


class FinallyGenerator(nn.Module):
    """16 kHz waveform [batch, 1, samples] → restored waveform [batch, 1, samples · factor].

    `factor` is 3 (48 kHz output) with the Upsample WaveUNet and 1 without it (training
    stages 1–2). Any length works; lengths that are multiples of `length_multiple`
    avoid internal padding, so chunked inference uses them.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.spectral_restorer: SpectralRestorer | None = None
        self.upsample_wave_unet: UpsampleWaveUNet | None = None
        self.conv_post: nn.Module | None = None
        self.ssl: SSLEncoder | None = None
        if config.spectral_restorer.enabled:
            self._build_predictive(config)
            return
        self.mel = LogMel()
        su = config.spectral_unet
        self.spectral_unet = SpectralUNet(su.block_widths, su.block_depth, su.out_channels)
        self.fusion: Fusion | None = None
        features = su.out_channels
        if config.ssl.enabled:
            self.ssl = SSLEncoder(config.ssl)
            self.fusion = Fusion(su.out_channels + self.ssl.hidden_size, config.fusion_channels)
            features = config.fusion_channels
        up = config.upsampler
        self.upsampler = HiFiUpsampler(
            features,
            up.initial_channels,
            up.rates,
            up.kernel_sizes,
            up.resblock_kernel_sizes,
            up.resblock_dilations,
        )
        channels = self.upsampler.out_channels
        self.wave_unet = WaveUNet(
            channels, config.wave_unet.block_widths, config.wave_unet.block_depth
        )
        self.spectral_mask = SpectralMaskNet(
            channels, config.spectral_mask.block_widths, config.spectral_mask.block_depth
        )
        uw = config.upsample_wave_unet
        if uw.enabled:
            self.upsample_wave_unet = UpsampleWaveUNet(
                channels, uw.block_widths, uw.block_depth, uw.features, residual=uw.residual
            )
        if not uw.enabled or uw.residual:
            # The 16 kHz output head; a residual Upsample WaveUNet interpolates its output, so
            # stage 3 starts from exactly what stage 2 produced in band.
            self.conv_post = wn(nn.Conv1d(channels, 1, 7, padding=3))

    def _build_predictive(self, config: GeneratorConfig) -> None:
        """The predictive path: SpectralRestorer (→ residual Upsample WaveUNet at 48 kHz)."""
        sr = config.spectral_restorer
        self.spectral_restorer = SpectralRestorer(
            sr.n_fft,
            sr.hop,
            sr.erb_bands,
            sr.df_bins,
            sr.df_order,
            sr.df_lookahead,
            sr.hidden,
            sr.gru_layers,
            sr.context_frames,
            sr.compression,
            sr.max_gain,
            sr.magnitude_bins,
            sr.residual_gru_layers,
            sr.floor_frames,
            sr.highpass_hz,
            sr.mix_back,
            (sr.mix_back_from_db, sr.mix_back_to_db),
            (sr.mix_back_spike_from, sr.mix_back_spike_to),
            sr.mix_back_kept,
            sr.postfilter_below,
            backward_gru_hidden=sr.backward_gru_hidden,
            freq_conv_channels=sr.freq_conv_channels,
            bin_refiner_channels=sr.bin_refiner_channels,
        )
        uw = config.upsample_wave_unet
        if uw.enabled:
            # It reads the restored 16 kHz waveform (one channel) and adds the upper band to
            # its interpolation, so stage 3 starts from the stage-2 output.
            self.upsample_wave_unet = UpsampleWaveUNet(
                1, uw.block_widths, uw.block_depth, uw.features, residual=True
            )

    @property
    def factor(self) -> int:
        return self.config.upsample_factor

    @property
    def peak_limit(self) -> float | None:
        """The gained input's peak ceiling the engine must keep (`LevelMeter.gain`): a tanh
        bounds the HiFi++ chain's and the upsampler's output, so their input is held under
        it; the spectral restorer alone is linear in its input's scale and needs none."""
        if self.spectral_restorer is not None and self.upsample_wave_unet is None:
            return None
        return PEAK_LIMIT

    @property
    def length_multiple(self) -> int:
        """Input lengths (16 kHz samples) that every block processes without padding."""
        if self.spectral_restorer is not None:
            multiple = self.spectral_restorer.frame_multiple
            if self.upsample_wave_unet is not None:
                multiple = max(multiple, self.upsample_wave_unet.unet.multiple)
            return multiple
        # At least 1024: the centred STFT of SpectralMaskNet reflects n_fft / 2 samples.
        multiple = max(1024, HOP * self.spectral_unet.frame_multiple)
        multiple = max(multiple, self.wave_unet.unet.multiple)
        multiple = max(multiple, HOP * self.spectral_mask.unet.multiple)
        if self.upsample_wave_unet is not None:
            multiple = max(multiple, self.upsample_wave_unet.unet.multiple)
        return multiple

    def blocks(self) -> dict[str, nn.Module]:
        """The named blocks, in signal order (for parameter and FLOP reports)."""
        names = [
            "spectral_restorer",
            "spectral_unet",
            "ssl",
            "fusion",
            "upsampler",
            "wave_unet",
            "spectral_mask",
            "upsample_wave_unet",
            "conv_post",
        ]
        return {n: getattr(self, n, None) for n in names if getattr(self, n, None) is not None}

    @torch.no_grad()
    def identity_init_(self) -> FinallyGenerator:
        """Start training from output ≈ input: a residual path carries the waveform through.

        Feature channel 0 becomes the input waveform (WaveUNet's 1×1 entry conv), the U-Nets'
        last convs start at zero (their weight-norm gains are zeroed, so gradients still
        flow), SpectralMaskNet starts with a unit mask and no side skip, and the output conv
        reads channel 0. With a residual Upsample WaveUNet the 48 kHz output starts as the
        band-limited interpolation of that head's output. Everything else keeps its
        random init, so the other channels and the mel path still learn. The predictive path
        starts with unit band gains and identity filters.
        """
        if self.spectral_restorer is not None:
            self.spectral_restorer.identity_init_()
            if self.upsample_wave_unet is not None:
                zero_conv(self.upsample_wave_unet.upsample)
            return self
        wave = self.wave_unet
        weight = wave.conv_pre.weight.clone()
        weight[0] = 0.0
        weight[0, -1] = 1.0  # channel 0 ← the waveform
        wave.conv_pre.weight = weight
        wave.conv_pre.bias[0] = 0.0
        zero_conv(wave.unet.conv_out)
        mask = self.spectral_mask
        zero_conv(mask.unet.conv_out)
        mask.unet.conv_out.bias.fill_(math.log(math.e - 1.0))  # softplus → a unit mask
        zero_conv(mask.skip)
        if self.conv_post is not None:
            weight = torch.zeros_like(self.conv_post.weight)
            weight[0, 0, weight.shape[-1] // 2] = 1.0
            self.conv_post.weight = weight
            self.conv_post.bias.zero_()
        if self.upsample_wave_unet is not None and self.upsample_wave_unet.residual:
            zero_conv(self.upsample_wave_unet.upsample)
        return self

    def remove_weight_norm(self) -> None:
        """Fold weight norm into plain weights (inference); the frozen SSL model is untouched."""
        for name, block in self.blocks().items():
            if name != "ssl":
                remove_weight_norm(block)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        # waveform: [batch, 1, samples] at 16 kHz
        samples = waveform.shape[-1]
        pad = (-samples) % self.length_multiple
        if pad:
            waveform = F.pad(waveform, (0, pad))
        if self.spectral_restorer is not None:
            restored = self.spectral_restorer(waveform)  # [batch, 1, samples]
            if self.upsample_wave_unet is not None:
                restored = self.upsample_wave_unet(restored, restored)  # [batch, 1, 3 · samples]
            return restored[..., : samples * self.factor]
        mono = waveform[:, 0]  # [batch, samples]
        log_mel = self.mel(mono)  # [batch, 80, frames]
        features = self.spectral_unet(log_mel)  # [batch, C, frames]
        if self.ssl is not None and self.fusion is not None:
            ssl_features = align_frames(self.ssl(mono), features.shape[-1])
            features = self.fusion(torch.cat([features, ssl_features.to(features.dtype)], dim=1))
        hidden_states = self.upsampler(features)  # [batch, channels, samples]
        hidden_states = self.wave_unet(hidden_states, waveform)
        hidden_states = self.spectral_mask(hidden_states)
        if self.upsample_wave_unet is not None:
            base = None if self.conv_post is None else self.conv_post(hidden_states)
            output = self.upsample_wave_unet(hidden_states, base)  # [batch, 1, 3 · samples]
        else:
            output = torch.tanh(self.conv_post(hidden_states))
        return output[..., : samples * self.factor]
