"""Log-mel front-end of the generator (16 kHz, n_fft 1024, hop 256, 80 mels up to 8 kHz)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

N_FFT = 1024
HOP = 256
N_MELS = 80
SAMPLE_RATE = 16000
F_MAX = 8000.0


def mel_filter_bank() -> np.ndarray:
    """Slaney-normalised mel filters, shape [n_fft // 2 + 1, n_mels]."""
    from transformers.audio_utils import mel_filter_bank as hf_mel

    return hf_mel(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=N_MELS,
        min_frequency=0.0,
        max_frequency=F_MAX,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    ).astype(np.float32)


class LogMel(nn.Module):
    """Waveform [batch, samples] → log-mel [batch, 80, samples // 256].

    The signal is reflect-padded by (n_fft - hop) / 2 on both sides and framed without
    centring, so a length that is a multiple of 256 gives exactly samples / 256 frames,
    each centred on its hop.
    """

    def __init__(self) -> None:
        super().__init__()
        # On the CPU even in a meta-device context (parameter counts): a meta hann_window
        # goes through a decomposition that imports torch._dynamo (~2 s of start-up).
        self.register_buffer("window", torch.hann_window(N_FFT, device="cpu"), persistent=False)
        self.register_buffer("mel_basis", torch.from_numpy(mel_filter_bank().T), persistent=False)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        pad = (N_FFT - HOP) // 2
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            waveform = waveform.float()
            mode = "reflect" if waveform.shape[-1] > pad else "replicate"
            padded = F.pad(waveform.unsqueeze(1), (pad, pad), mode=mode).squeeze(1)
            spec = torch.stft(
                padded, N_FFT, HOP, N_FFT, window=self.window, center=False, return_complex=True
            )
            magnitude = spec.abs()  # [batch, 513, frames]
            mel = torch.matmul(self.mel_basis, magnitude)
            return torch.log(torch.clamp(mel, min=1e-5))
