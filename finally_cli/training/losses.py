"""Training losses: LMOS (WavLM conv features + STFT L1), MR-STFT/mel fallback, LS-GAN, FM."""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from finally_cli.models.layers import kaiser_sinc_lowpass

log = logging.getLogger(__name__)


def lowpass_decimate_kernel(factor: int, taps_per_phase: int = 32) -> torch.Tensor:
    """Kaiser-windowed sinc low-pass at 0.9 × the new Nyquist, for decimation by `factor`."""
    return kaiser_sinc_lowpass(factor, taps_per_phase, cutoff=0.9, beta=10.0)


class Decimate(nn.Module):
    """Resample by an integer factor on the device (48 → 16 kHz for the WavLM loss)."""

    def __init__(self, factor: int) -> None:
        super().__init__()
        self.factor = factor
        self.register_buffer(
            "kernel", lowpass_decimate_kernel(factor)[None, None], persistent=False
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if self.factor == 1:
            return waveform
        pad = self.kernel.shape[-1] // 2
        padded = F.pad(waveform, (pad, pad), mode="reflect")
        return F.conv1d(padded, self.kernel.to(waveform.dtype), stride=self.factor)


def stft_complex(waveform: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=waveform.device)
    return torch.stft(
        waveform.float().reshape(-1, waveform.shape[-1]),
        n_fft,
        hop,
        n_fft,
        window=window,
        return_complex=True,
    )


def stft_magnitude(waveform: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    return stft_complex(waveform, n_fft, hop).abs()


class LMOSLoss(nn.Module):
    """100 · MSE(φ(y), φ(ŷ)) + L1(|STFT y|, |STFT ŷ|), φ = WavLM CNN encoder at 16 kHz.

    Args:
        feature_encoder: φ, a module mapping 16 kHz waveforms [batch, samples] to features
            (frozen here): WavLM's `feature_extractor`, or a pretrained encoder layer
            (`finally_cli.models.pretrained.feature_encoder`); None uses the
            multi-resolution STFT + mel fallback in its place.
        sample_rate: rate of the signals compared (16000 or 48000).
        feature_weight, stft_weight: the two terms' weights (100 and 1 in the paper).
        feature_name: the feature term's key in the returned dict (and the logs).
    """

    def __init__(
        self,
        feature_encoder: nn.Module | None,
        sample_rate: int,
        feature_weight: float = 100.0,
        stft_weight: float = 1.0,
        feature_name: str = "wavlm",
    ) -> None:
        super().__init__()
        self.encoder = feature_encoder
        self.feature_name = feature_name
        if self.encoder is not None:
            self.encoder.requires_grad_(False)
            self.encoder.eval()
        self.decimate = Decimate(sample_rate // 16000)
        self.fallback = MultiResolutionSTFTLoss(sample_rate) if feature_encoder is None else None
        self.feature_weight, self.stft_weight = feature_weight, stft_weight
        self.n_fft = 1024 * (sample_rate // 16000)

    def train(self, mode: bool = True) -> LMOSLoss:
        super().train(mode)
        if self.encoder is not None:
            self.encoder.eval()
        return self

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        # estimate, target: [batch, 1, samples] at `sample_rate`
        terms = {}
        if self.encoder is not None:
            est16 = self.decimate(estimate.float())[:, 0]
            tgt16 = self.decimate(target.float())[:, 0]
            with torch.no_grad():
                tgt_features = self.encoder(tgt16)
            terms[self.feature_name] = self.feature_weight * F.mse_loss(
                self.encoder(est16), tgt_features
            )
        else:
            terms["mrstft"] = self.feature_weight / 100.0 * self.fallback(estimate, target)
        hop = self.n_fft // 4
        terms["stft_l1"] = self.stft_weight * F.l1_loss(
            stft_magnitude(estimate, self.n_fft, hop), stft_magnitude(target, self.n_fft, hop)
        )
        return terms


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence (magnitude and complex) + compressed-magnitude L1 over three
    resolutions, plus compressed-mel L1.

    The fallback for the WavLM feature term when no WavLM weights are available.

    Args:
        sample_rate: rate of the compared signals (the mel bank spans 0 … Nyquist).
    """

    def __init__(
        self,
        sample_rate: int = 16000,
        resolutions: tuple[tuple[int, int], ...] = ((512, 128), (1024, 256), (2048, 512)),
    ) -> None:
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        self.resolutions = resolutions
        self.mel_fft = 1024 * max(1, sample_rate // 16000)
        bank = mel_filter_bank(
            num_frequency_bins=self.mel_fft // 2 + 1,
            num_mel_filters=80,
            min_frequency=0.0,
            max_frequency=sample_rate / 2,
            sampling_rate=sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer(
            "mel_bank", torch.tensor(bank.T, dtype=torch.float32), persistent=False
        )

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = estimate.new_zeros(())
        magnitudes = {}
        for n_fft, hop in self.resolutions:
            est_c = stft_complex(estimate, n_fft, hop)
            tgt_c = stft_complex(target, n_fft, hop)
            est, tgt = est_c.abs(), tgt_c.abs()
            magnitudes[n_fft, hop] = est, tgt
            reference = torch.linalg.norm(tgt).clamp_min(1e-7)
            convergence = torch.linalg.norm(tgt - est) / reference
            # WavLM's conv features, which this loss stands in for, see the waveform and so
            # the phase; magnitude terms alone let a generator drift in phase freely.
            phase_aware = torch.linalg.norm(tgt_c - est_c) / reference
            compressed = F.l1_loss(_compress(est), _compress(tgt))
            total = total + convergence + phase_aware + compressed
        mel_key = (self.mel_fft, self.mel_fft // 4)
        if mel_key not in magnitudes:  # at 16 kHz the mel STFT is one of the resolutions
            magnitudes[mel_key] = (
                stft_magnitude(estimate, *mel_key),
                stft_magnitude(target, *mel_key),
            )
        est_mag, tgt_mag = magnitudes[mel_key]
        est_mel = torch.matmul(self.mel_bank, est_mag)
        tgt_mel = torch.matmul(self.mel_bank, tgt_mag)
        mel = F.l1_loss(_compress(est_mel), _compress(tgt_mel))
        return total / len(self.resolutions) + mel


class CompressedSpectralLoss(nn.Module):
    """MSE between power-law compressed spectra, magnitude and complex, over resolutions.

    For X = |X|·e^{jφ}: (1 − complex_weight) · MSE(|X̂|^c, |X|^c) + complex_weight ·
    MSE(|X̂|^c e^{jφ̂}, |X|^c e^{jφ}), averaged over STFT resolutions: the loss of the
    predictive line (DeepFilterNet, GTCRN). Compression evens out loud and quiet bins; the
    complex term makes phase count where the magnitude is large. `asymmetry` adds
    asymmetry · MSE(max(|X|^c − |X̂|^c, 0)): taking speech away costs more than leaving noise.
    With `distance` "l1" every squared error is an absolute one (for the complex term, the
    modulus of the difference): the best answer under doubt is then the median of what a bin
    may hold rather than its mean, which a power-law compression turns into a large cut of
    the level (a bin that is speech with probability 0.8 comes out 6 dB down at c = 0.3).

    With `erb_weighting` p > 0 each bin's squared error is weighted by the density of ERB
    bands at its frequency, 1 / ERB(f), raised to p (weights of mean 1): a plain MSE gives
    the 0–500 Hz band 1/16 of a 16 kHz spectrum's say, while hearing (and WB-PESQ's Bark
    bands) resolves it about as finely as 2–8 kHz. p = 1 gives every ERB band the same total
    weight (docs/training.md, item 19).

    Args:
        resolutions: (n_fft, hop) pairs at the compared rate.
        exponent: the compression c.
        complex_weight: share of the complex term.
        asymmetry: extra weight on the magnitude error of bins the estimate leaves too quiet.
        distance: "mse" or "l1".
        erb_weighting: the exponent p of the frequency weighting (0 = every bin alike).
        sample_rate: the compared rate (for the bins' frequencies).
    """

    def __init__(
        self,
        resolutions: tuple[tuple[int, int], ...] = ((256, 64), (512, 128), (1024, 256)),
        exponent: float = 0.3,
        complex_weight: float = 0.3,
        asymmetry: float = 0.0,
        distance: str = "mse",
        erb_weighting: float = 0.0,
        sample_rate: int = 16000,
    ) -> None:
        super().__init__()
        if distance not in ("mse", "l1"):
            raise ValueError(f"distance={distance!r}: expected 'mse' or 'l1'")
        self.l1 = distance == "l1"
        self.resolutions, self.exponent, self.complex_weight = resolutions, exponent, complex_weight
        self.asymmetry, self.erb_weighting, self.sample_rate = asymmetry, erb_weighting, sample_rate

    def bin_weights(self, n_fft: int, device: torch.device) -> torch.Tensor:
        """[bins, 1] weights of mean 1: (1 / ERB(f))^p, ERB(f) = 24.7 · (4.37 f / 1000 + 1)."""
        freqs = torch.linspace(0, self.sample_rate / 2, n_fft // 2 + 1, device=device)
        weights = (24.7 * (4.37 * freqs / 1000 + 1)).pow(-self.erb_weighting)
        return (weights / weights.mean())[:, None]

    def compress(self, spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        magnitude = (spec.real.square() + spec.imag.square() + 1e-12).sqrt()
        compressed = magnitude.pow(self.exponent)
        return compressed, spec * (compressed / magnitude)

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # estimate, target: [batch, 1, samples]
        total = estimate.new_zeros((), dtype=torch.float32)
        for n_fft, hop in self.resolutions:
            est_mag, est_c = self.compress(stft_complex(estimate, n_fft, hop))
            tgt_mag, tgt_c = self.compress(stft_complex(target, n_fft, hop))
            weights = self.bin_weights(n_fft, estimate.device) if self.erb_weighting else 1.0
            magnitude_error = est_mag - tgt_mag
            complex_error = (torch.view_as_real(est_c) - torch.view_as_real(tgt_c)).square()
            if self.l1:
                magnitude_error = magnitude_error.abs()
                complex_error = (complex_error.sum(-1) + 1e-12).sqrt()
            else:
                magnitude_error = magnitude_error.square()
                complex_error = complex_error.sum(-1) / 2
            magnitude = (magnitude_error * weights).mean()
            complex_term = (complex_error * weights).mean()
            total = (
                total + (1 - self.complex_weight) * magnitude + self.complex_weight * (complex_term)
            )
            if self.asymmetry:
                taken = (tgt_mag - est_mag).clamp_min(0)
                taken = taken if self.l1 else taken.square()
                total = total + self.asymmetry * (taken * weights).mean()
        return total / len(self.resolutions)


class SiSdrLoss(nn.Module):
    """Negative scale-invariant SDR in dB, soft-capped at `max_db` (the thresholded SDR of
    Wisdom et al., 2020): −10·log10(‖t‖² / (‖e‖² + 10^(−max_db/10)·‖t‖²)) per example, the
    mean over the batch, with t the target's part of the estimate and e the rest.

    Being logarithmic it weighs an error against the example's own level: removing 1 % of a
    clean input costs as much as leaving 1 % of the noise in a noisy one, where an MSE on
    spectra lets the nearly clean examples' small errors drown under the noisy ones'. The cap
    keeps the nearly perfect examples from taking all the gradient.

    Args:
        max_db: the SDR beyond which an example stops counting (its loss saturates).
    """

    def __init__(self, max_db: float = 30.0) -> None:
        super().__init__()
        self.max_db = max_db

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # estimate, target: [batch, 1, samples]
        length = min(estimate.shape[-1], target.shape[-1])
        estimate = estimate[..., :length].float().flatten(1)
        target = target[..., :length].float().flatten(1)
        estimate = estimate - estimate.mean(-1, keepdim=True)
        target = target - target.mean(-1, keepdim=True)
        scale = (estimate * target).sum(-1, keepdim=True) / (
            target.square().sum(-1, keepdim=True) + 1e-8
        )
        fitted = scale * target
        signal = fitted.square().sum(-1)
        error = (estimate - fitted).square().sum(-1)
        floor = 10 ** (-self.max_db / 10) * signal
        return -(10 * torch.log10((signal + 1e-8) / (error + floor + 1e-8))).mean()


def _compress(magnitude: torch.Tensor) -> torch.Tensor:
    """Power-law compression |X|^0.3: loud and quiet bins both count, but unlike a log it
    does not reward re-creating the exact level of near-empty bins (a band-limited input's
    missing top band, silence), which a small generator learns by adding noise."""
    return magnitude.clamp_min(1e-6).pow(0.3)


def discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """LS-GAN: Σ_k mean((D_k(y) − 1)²) + mean(D_k(ŷ)²)."""
    return sum(torch.mean((r - 1) ** 2) + torch.mean(f**2) for r, f in zip(real, fake))


def generator_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """LS-GAN: Σ_k mean((D_k(ŷ) − 1)²)."""
    return sum(torch.mean((f - 1) ** 2) for f in fake)


def feature_matching_loss(
    real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]
) -> torch.Tensor:
    """Relative L1 (EnCodec): mean over scales and layers of mean|r − f| / mean|r|."""
    terms = []
    for real_maps, fake_maps in zip(real, fake):
        for r, f in zip(real_maps, fake_maps):
            r = r.detach()
            terms.append(torch.mean(torch.abs(r - f)) / torch.mean(torch.abs(r)).clamp_min(1e-8))
    return sum(terms) / max(len(terms), 1)


class PesqLoss(nn.Module):
    """Differentiable PESQ (torch-pesq) when importable; otherwise disabled with a warning."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__()
        self.loss = None
        try:
            from torch_pesq import PesqLoss as TorchPesq
        except ImportError:
            log.warning("PESQ loss skipped: torch-pesq is not installed (it needs torchaudio)")
            return
        self.loss = TorchPesq(0.5, sample_rate=sample_rate)

    @property
    def available(self) -> bool:
        return self.loss is not None

    def forward(self, estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        assert self.loss is not None
        return self.loss(target[:, 0].float(), estimate[:, 0].float()).mean()


def utmos_available() -> bool:
    """UTMOS needs the SpeechMOS code and weights from torch.hub; absent offline."""
    log.warning("UTMOS loss skipped: its weights (tarepan/SpeechMOS) cannot be loaded offline")
    return False
