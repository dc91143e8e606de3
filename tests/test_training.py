"""Training: degradations, discriminator, losses, the 3-stage pipeline, overfit, exact resume."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from finally_cli.audio.mixing import mix_at_snr
from finally_cli.cli.app import app
from finally_cli.errors import ConfigError
from finally_cli.models.discriminators import MultiScaleSTFTDiscriminator
from finally_cli.training import degradations as deg
from finally_cli.training.losses import LMOSLoss, discriminator_loss, generator_loss
from tests.conftest import speechlike, write

runner = CliRunner()


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clean")
    for i in range(4):
        write(folder / f"spk{i}.wav", speechlike(3.0, 44100, seed=i), 44100)
    return folder


# -- degradations ---------------------------------------------------------------------------
def test_same_seed_same_pair() -> None:
    degrader = deg.Degrader(deg.DegradationConfig())
    clean = speechlike(1.0, 48000)[:, 0].astype(np.float64)
    for seed in range(6):
        a, steps_a = degrader(clean, np.random.default_rng(seed))
        b, steps_b = degrader(clean, np.random.default_rng(seed))
        assert steps_a == steps_b and np.array_equal(a, b)
    c, _ = degrader(clean, np.random.default_rng(99))
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("snr", [-5.0, 0.0, 7.5, 20.0])
def test_noise_step_hits_requested_snr(snr: float) -> None:
    rng = np.random.default_rng(0)
    clean = speechlike(2.0, 48000)[:, 0].astype(np.float64)
    noisy = mix_at_snr(clean, deg.synthetic_noise(rng, clean.size), snr)
    measured = 10 * np.log10(np.sum(clean**2) / np.sum((noisy - clean) ** 2))
    assert abs(measured - snr) < 0.5


@pytest.mark.parametrize("cutoff", [4000, 8000, 11025, 16000])
def test_band_limit_removes_energy_above_cutoff(cutoff: int) -> None:
    rng = np.random.default_rng(1)
    white = rng.standard_normal(48000)
    out = deg.band_limit(white, cutoff)
    spectrum = np.abs(np.fft.rfft(out[4800:-4800])) ** 2
    freqs = np.fft.rfftfreq(out[4800:-4800].size, 1 / 48000)
    below = spectrum[freqs < cutoff * 0.8].mean()
    above = spectrum[freqs > cutoff * 1.05].mean()
    assert 10 * np.log10(below / above) > 40


def test_codecs_survive_the_highest_compression_level() -> None:
    """libsndfile's MP3 encoder fails above level ≈ 0.9999; a draw up there once crashed a run."""

    class Top:
        def uniform(self, low: float, high: float) -> float:
            return high

    clean = speechlike(0.5, 48000)[:, 0].astype(np.float64)
    for name in deg.CODECS:
        assert deg.codec(clean, name, Top()).shape == clean.shape


def test_codecs_keep_length_and_alignment() -> None:
    from finally_cli.evaluation.align import find_lag

    rng = np.random.default_rng(2)
    x = speechlike(1.0, 48000)[:, 0].astype(np.float64)
    for name in ("mp3", "ogg", "opus"):
        y = deg.codec(x, name, rng)
        assert y.shape == x.shape
        assert abs(find_lag(x, y, 2000)) <= 1  # no codec delay left in the pair


def test_microphone_colouration_changes_levels_not_the_phase() -> None:
    """The low band of a mic-EQ pair stays in phase with its target: a random IIR phase turn
    there cannot be learnt back, and such pairs taught the model to scramble clean speech."""
    from scipy import signal

    rng = np.random.default_rng(3)
    noise = rng.standard_normal(48000)  # white: every band has energy
    low = signal.butter(4, [150, 300], "bandpass", fs=48000, output="sos")
    for seed in range(6):
        coloured = deg.random_eq(np.random.default_rng(seed), noise)
        assert coloured.shape == noise.shape
        x, y = signal.sosfiltfilt(low, noise), signal.sosfiltfilt(low, coloured)
        assert np.dot(x, y) / np.sqrt(np.dot(x, x) * np.dot(y, y)) > 0.9
    spectrum = np.abs(np.fft.rfft(coloured)) / np.abs(np.fft.rfft(noise))
    assert np.ptp(20 * np.log10(spectrum[1000:40000])) > 6  # it still colours the level


def test_stationary_noise_is_broadband_and_steady() -> None:
    """What `p_stationary` draws: noise in every band from 100 Hz to 20 kHz, with a level that
    sways by a few dB at most (fans, hiss), a different colour per draw."""
    colours = []
    for seed in range(8):
        noise = deg.stationary_noise(np.random.default_rng(seed), 3 * 48000)
        frames = noise.reshape(-1, 24000)  # half-second levels
        levels = 10 * np.log10(np.mean(frames**2, axis=1))
        assert np.ptp(levels) < 11
        power = np.abs(np.fft.rfft(noise)) ** 2
        freqs = np.fft.rfftfreq(noise.size, 1 / 48000)
        octaves = [power[(freqs >= f) & (freqs < 2 * f)].mean() for f in (100, 400, 1600, 10000)]
        assert 10 * np.log10(max(octaves) / min(octaves)) < 45
        colours.append(10 * np.log10(octaves[-1] / octaves[0]))
    assert np.ptp(colours) > 10


def test_stationary_noise_share_follows_p_stationary() -> None:
    """With p_stationary 1 every noise step draws it, even with recorded noises given; with 0
    the recorded noise is drawn."""
    clean = speechlike(1.0, 48000)[:, 0].astype(np.float64)
    tone = np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)
    sources = deg.Sources(noises=[tone])
    only = deg.DegradationConfig(
        p_clean=0, p_noise=1, p_room=0, p_mic=0, p_codec=0, p_bandlimit=0, p_clip=0, p_gain=0
    )
    steady = deg.Degrader(dataclasses.replace(only, p_stationary=1.0), sources)
    noisy, _ = steady(clean, np.random.default_rng(0))
    residual = np.abs(np.fft.rfft(noisy - clean))
    assert residual[440] < 0.1 * residual.max()  # not the tone: broadband noise
    plain = deg.Degrader(only, sources)
    noisy, _ = plain(clean, np.random.default_rng(0))
    residual = np.abs(np.fft.rfft(noisy - clean))
    assert residual.argmax() == 440


def test_noise_speed_and_eq_vary_a_recorded_noise() -> None:
    """`noise_speed` plays a recorded noise faster or slower (a 1 kHz hum moves within ±20 %,
    to a different pitch per draw) and `p_noise_eq` recolours it; the clean speech is untouched
    and the mix keeps its length."""
    clean = speechlike(1.0, 48000)[:, 0].astype(np.float64)
    tone = np.sin(2 * np.pi * 1000 * np.arange(3 * 48000) / 48000)
    only = deg.DegradationConfig(
        p_clean=0, p_noise=1, p_room=0, p_mic=0, p_codec=0, p_bandlimit=0, p_clip=0, p_gain=0
    )
    fast = deg.Degrader(dataclasses.replace(only, noise_speed=0.2), deg.Sources(noises=[tone]))
    peaks = []
    for seed in range(6):
        noisy, _ = fast(clean, np.random.default_rng(seed))
        assert noisy.shape == clean.shape
        peaks.append(np.abs(np.fft.rfft(noisy - clean)).argmax())  # 1 Hz bins
    assert all(790 <= peak <= 1210 for peak in peaks)
    assert np.ptp(peaks) > 40
    white = np.random.default_rng(1).standard_normal(3 * 48000)
    plain = deg.Degrader(only, deg.Sources(noises=[white]))
    coloured = deg.Degrader(dataclasses.replace(only, p_noise_eq=1.0), deg.Sources(noises=[white]))

    def band_levels(degrader: deg.Degrader) -> np.ndarray:
        residual = degrader(clean, np.random.default_rng(3))[0] - clean
        power = np.abs(np.fft.rfft(residual)) ** 2
        return 10 * np.log10([power[f : f + 500].mean() for f in range(200, 16000, 500)])

    assert np.ptp(band_levels(plain)) < 1.5  # white stays flat
    assert np.ptp(band_levels(coloured)) > 4
    with pytest.raises(ConfigError, match="noise_speed"):
        deg.DegradationConfig(noise_speed=1.0)


# -- discriminator and losses --------------------------------------------------------------
@pytest.mark.parametrize("rate", [16000, 48000])
def test_discriminator_shapes(rate: int) -> None:
    disc = MultiScaleSTFTDiscriminator(rate, filters=4)
    logits, features = disc(torch.randn(2, 1, rate // 2))
    assert len(logits) == 5 and len(features) == 5
    for sub, out, maps in zip(disc.discriminators, logits, features):
        frames = (rate // 2 - sub.n_fft) // sub.hop + 1
        bins = sub.n_fft // 2 + 1
        assert out.shape[:3] == (2, 1, frames)
        assert out.shape[3] == -(-bins // 8)  # three stride-2 layers over frequency
        assert len(maps) == 5


def test_gradients_stay_on_their_side() -> None:
    from finally_cli.models.hub import create_model

    generator = create_model("tiny")
    disc = MultiScaleSTFTDiscriminator(48000, filters=4)
    noisy, clean = torch.randn(1, 1, 4096) * 0.1, torch.randn(1, 1, 3 * 4096) * 0.1
    fake = generator(noisy)
    # D loss on a detached fake: no gradient reaches G.
    real_logits, _ = disc(clean)
    fake_logits, _ = disc(fake.detach())
    discriminator_loss(real_logits, fake_logits).backward()
    assert all(p.grad is None for p in generator.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in disc.parameters())
    # G loss with D frozen: no gradient reaches D.
    disc.zero_grad(set_to_none=True)
    disc.requires_grad_(False)
    generator_loss(disc(fake)[0]).backward()
    assert all(p.grad is None for p in disc.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())


def test_fallback_lmos_sees_phase() -> None:
    # Same magnitudes, opposite sign: a magnitude-only loss would call these equal.
    from finally_cli.training.losses import MultiResolutionSTFTLoss

    loss = MultiResolutionSTFTLoss(16000)
    clean = torch.from_numpy(speechlike(1.0, 16000)[:, 0]).view(1, 1, -1)
    assert float(loss(clean, clean)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(-clean, clean)) > 1.5


def test_unknown_init_is_refused() -> None:
    from finally_cli.errors import ConfigError
    from finally_cli.training.config import from_dict

    with pytest.raises(ConfigError, match="init="):
        from_dict({"init": "zeros"})
    assert from_dict({"init": "identity"}).init == "identity"


def test_spectral_exponent_is_checked_and_weighs_quiet_bins() -> None:
    """loss.spectral_exponent reaches the loss; a lower exponent counts a quiet residual
    (noise left at -30 dB) more against the same error on a loud bin."""
    from finally_cli.errors import ConfigError
    from finally_cli.training.config import from_dict
    from finally_cli.training.losses import CompressedSpectralLoss

    with pytest.raises(ConfigError, match="loss.spectral_exponent=0"):
        from_dict({"loss": {"spectral_exponent": 0.0}})
    assert from_dict({"loss": {"spectral_exponent": 0.6}}).loss.spectral_exponent == 0.6
    t = torch.arange(16000) / 16000
    loud = torch.sin(2 * torch.pi * 440 * t).view(1, 1, -1)
    quiet = 0.03 * torch.randn(1, 1, 16000, generator=torch.Generator().manual_seed(0))

    def quiet_share(exponent: float) -> float:
        loss = CompressedSpectralLoss(exponent=exponent)
        return float(loss(loud + quiet, loud) / loss(1.3 * loud, loud))

    assert quiet_share(0.3) > 2 * quiet_share(0.6)


def test_spectral_asymmetry_makes_removed_speech_cost_more_than_left_noise() -> None:
    """loss.spectral_asymmetry: taking speech away (a bin quieter than the target) costs
    more; leaving noise on top of it costs what it did."""
    from finally_cli.errors import ConfigError
    from finally_cli.training.config import from_dict
    from finally_cli.training.losses import CompressedSpectralLoss

    with pytest.raises(ConfigError, match="loss.spectral_asymmetry=-1"):
        from_dict({"loss": {"spectral_asymmetry": -1.0}})
    assert from_dict({"loss": {"spectral_asymmetry": 1.0}}).loss.spectral_asymmetry == 1.0
    t = torch.arange(16000) / 16000
    speech = torch.sin(2 * torch.pi * 440 * t).view(1, 1, -1)
    noise = 0.03 * torch.randn(1, 1, 16000, generator=torch.Generator().manual_seed(0))
    plain, protective = CompressedSpectralLoss(), CompressedSpectralLoss(asymmetry=1.0)
    removed = float(protective(0.7 * speech, speech) / plain(0.7 * speech, speech))
    left = float(protective(speech + noise, speech) / plain(speech + noise, speech))
    # plain: 0.7 · magnitude MSE + 0.3 · complex MSE (half of it: real and imaginary parts)
    assert removed == pytest.approx(1 + 1 / 0.85, rel=0.01)
    assert left < 1.1


def test_spectral_erb_weighting_makes_low_band_errors_count() -> None:
    """loss.spectral_erb: the same error costs about as much at 200 Hz as at 6 kHz without
    the weighting, and far more at 200 Hz with it (1 / ERB(f): ≈ 12× between the two)."""
    from finally_cli.errors import ConfigError
    from finally_cli.training.config import from_dict
    from finally_cli.training.losses import CompressedSpectralLoss

    with pytest.raises(ConfigError, match="loss.spectral_erb=2"):
        from_dict({"loss": {"spectral_erb": 2.0}})
    t = torch.arange(16000) / 16000
    target = 0.1 * torch.randn(1, 1, 16000, generator=torch.Generator().manual_seed(0))

    def low_over_high(erb: float) -> float:
        loss = CompressedSpectralLoss(erb_weighting=erb, sample_rate=16000)
        low = loss(target + 0.02 * torch.sin(2 * torch.pi * 200 * t), target)
        high = loss(target + 0.02 * torch.sin(2 * torch.pi * 6000 * t), target)
        return float(low / high)

    assert 0.5 < low_over_high(0.0) < 2
    assert low_over_high(0.5) > 2.5 * low_over_high(0.0)
    assert low_over_high(1.0) > 8 * low_over_high(0.0)


def test_sisdr_loss_is_the_metric_capped_and_weighs_errors_by_the_level(
    tmp_path: Path, clean_dir: Path
) -> None:
    """loss.sisdr: −SI-SDR as `finally eval` measures it, soft-capped at sisdr_max_db, and
    (being a log ratio) damaging a quiet clean input costs what the same relative damage of a
    loud one does, where the spectral MSE hardly sees the quiet one."""
    from finally_cli.errors import ConfigError
    from finally_cli.evaluation.metrics import si_sdr
    from finally_cli.training.config import from_dict
    from finally_cli.training.losses import CompressedSpectralLoss, SiSdrLoss

    with pytest.raises(ConfigError, match="loss.sisdr=-1"):
        from_dict({"loss": {"sisdr": -1.0}})
    with pytest.raises(ConfigError, match="loss.sisdr_max_db=0"):
        from_dict({"loss": {"sisdr_max_db": 0.0}})
    speech = torch.from_numpy(speechlike(1.0, 16000, seed=3)[:, 0]).float().view(1, 1, -1)
    noise = torch.randn(1, 1, 16000, generator=torch.Generator().manual_seed(0))
    noisy = torch.from_numpy(mix_at_snr(speech[0, 0].numpy(), noise[0, 0].numpy(), 10.0))
    noisy = noisy.float().view(1, 1, -1)
    loss = SiSdrLoss(max_db=60.0)
    expected = si_sdr(speech[0, 0].numpy(), noisy[0, 0].numpy())
    assert float(loss(noisy, speech)) == pytest.approx(-expected, abs=0.05)
    assert float(loss(0.3 * noisy, speech)) == pytest.approx(-expected, abs=0.05)
    assert float(SiSdrLoss(max_db=30.0)(speech, speech)) == pytest.approx(-30.0, abs=0.01)
    damaged = speech.clone()
    damaged[..., ::2] *= 0.9
    quiet, loud = 0.01 * speech, speech
    assert float(loss(0.01 * damaged, quiet)) == pytest.approx(float(loss(damaged, loud)), abs=0.01)
    spectral = CompressedSpectralLoss()
    assert spectral(0.01 * damaged, quiet) < spectral(damaged, loud) / 10
    # The term reaches training and its log.
    run = tmp_path / "r"
    train_cli(
        "--config", "tiny/stage1", "--set", f"data.clean=[{clean_dir}]", "--set", "steps=2",
        "--set", "log_every=1", "--set", "loss.sisdr=0.01", "--run-dir", str(run),
    )  # fmt: skip
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(row["sisdr"]) and row["sisdr"] != 0 for row in logged), logged


def test_best_metric_is_checked() -> None:
    from finally_cli.errors import ConfigError
    from finally_cli.training.config import from_dict

    with pytest.raises(ConfigError, match="best_metric="):
        from_dict({"best_metric": "loss"})
    with pytest.raises(ConfigError, match="validation_dnsmos"):
        from_dict({"best_metric": "dnsmos_ovrl"})
    assert from_dict({"best_metric": "dnsmos_ovrl", "validation_dnsmos": True})
    from finally_cli.training.model_setup import build_generator

    with pytest.raises(ConfigError, match="freeze: no generator block 'decoder'"):
        build_generator(from_dict({"model": "tiny", "freeze": ["decoder"]}))
    with pytest.raises(ConfigError, match="nothing to train"):
        build_generator(
            from_dict({"model": "tiny", "freeze": ["spectral_unet", "upsampler", "wave_unet",
                                                   "spectral_mask", "fusion", "conv_post"]})
        )  # fmt: skip
    with pytest.raises(ConfigError, match="min_bandwidth_hz=-1"):
        from_dict({"data": {"min_bandwidth_hz": -1}})
    with pytest.raises(ConfigError, match="needs stage 3"):
        from_dict({"best_metric": "lsd", "stage": 2})
    assert from_dict({"best_metric": "lsd", "stage": 3})


def test_bandwidth_filter_drops_upsampled_recordings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import soxr

    from finally_cli.errors import ConfigError
    from finally_cli.training import data

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    wide = speechlike(2.0, 44100)[:, 0] + 1e-3 * rng.standard_normal(88200)
    narrow = soxr.resample(
        speechlike(2.0, 16000)[:, 0] + 1e-3 * rng.standard_normal(32000), 16000, 44100
    )
    folder = tmp_path / "clean"
    folder.mkdir()
    write(folder / "wide.wav", wide.astype(np.float32), 44100)
    write(folder / "narrow.wav", narrow.astype(np.float32), 44100)
    assert data.bandwidth_hz(wide, 44100) > 20000
    assert 7000 < data.bandwidth_hz(narrow, 44100) < 8500
    clips = data.index_folders([str(folder)], "clean")
    assert [c.path.name for c in data.keep_wideband(clips, 16000)] == ["wide.wav"]
    assert data.measurement_cache("bandwidth").is_file()

    def unreadable(*_: object) -> float:
        raise AssertionError("measured again although cached")

    monkeypatch.setattr(data, "bandwidth_hz", unreadable)
    assert len(data.keep_wideband(clips, 4000)) == 2  # from the cache
    with pytest.raises(ConfigError, match="min_bandwidth_hz=30000: none of the 2"):
        data.keep_wideband(clips, 30000)


def test_floor_filter_drops_hissy_recordings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data.max_floor_db keeps recordings that are quiet between words: a target with hiss
    at -25 dB would teach the model to leave noise at that level."""
    from finally_cli.errors import ConfigError
    from finally_cli.training import data
    from finally_cli.training.config import from_dict

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    words = speechlike(3.0, 16000)[:, 0]
    words[16000:24000] = 0  # a half-second pause
    words /= np.sqrt(np.mean(words**2))
    folder = tmp_path / "clean"
    folder.mkdir()
    for name, floor_db in (("studio", -65), ("home", -25)):
        hiss = 10 ** (floor_db / 20) * rng.standard_normal(words.size)
        write(folder / f"{name}.wav", (0.1 * (words + hiss)).astype(np.float32), 16000)
    clips = data.index_folders([str(folder)], "clean")
    floors = {c.path.stem: data.noise_floor_db(data.read_mono(c), 16000) for c in clips}
    assert floors["studio"] < -50 and -35 < floors["home"] < -15, floors
    assert [c.path.name for c in data.keep_quiet(clips, -40)] == ["studio.wav"]
    assert data.noise_floor_db(words[:4000], 16000) == 0.0  # 0.25 s: too short to tell
    with pytest.raises(ConfigError, match="max_floor_db=-80: none of the 2"):
        data.keep_quiet(clips, -80)
    with pytest.raises(ConfigError, match="data.max_floor_db=5"):
        from_dict({"data": {"max_floor_db": 5}})


def test_quietened_targets_teach_removing_the_recordings_own_hiss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """data.targets: the input is degraded from the hissy original, the target is the same
    stretch of its quietened copy; a copy that is missing or of another length is refused."""
    from finally_cli.errors import ConfigError
    from finally_cli.training.config import from_dict
    from finally_cli.training.data import noise_floor_db, pair_dataset
    from finally_cli.training.recipes.quieten import quieten_folder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    rng = np.random.default_rng(2)
    words = speechlike(6.0, 16000)[:, 0]
    for start in range(0, words.size, 32000):
        words[start + 20000 : start + 32000] = 0  # a pause every 2 s
    words /= np.sqrt(np.mean(words**2))
    clean = tmp_path / "clean"
    (clean / "fr").mkdir(parents=True)
    write(
        clean / "fr" / "home.wav", (0.1 * (words + 0.06 * rng.standard_normal(words.size))), 16000
    )
    quieten_folder(clean, tmp_path / "quiet", above_db=-40, reduce_db=20)
    config = from_dict(
        {
            "seed": 3,
            "data": {"clean": [str(clean)], "targets": str(tmp_path / "quiet")},
            "degradation": {"p_clean": 1.0, "p_bandlimit": 0.0, "p_clip": 0.0},
        }
    )
    quiet = pair_dataset(config, 4, 1, 4096)
    plain = pair_dataset(
        from_dict({**config.to_dict(), "data": {"clean": [str(clean)]}}), 4, 1, 4096
    )
    for index in range(3):
        noisy, target, _ = quiet.pair(index)
        same_noisy, same_target, _ = plain.pair(index)
        np.testing.assert_allclose(noisy, same_noisy)  # the input is the original's
        np.testing.assert_allclose(same_target, same_noisy)  # clean input: its own target
        assert noise_floor_db(target, 48000) < noise_floor_db(noisy, 48000) - 10
        speech = np.abs(same_target) > 0.5 * np.abs(same_target).max()
        assert abs(np.sum(target[speech] * noisy[speech]) / np.sum(noisy[speech] ** 2) - 1) < 0.1

    (tmp_path / "quiet" / "fr" / "home.flac").unlink()
    with pytest.raises(ConfigError, match="has no copy of fr/home.wav"):
        pair_dataset(config, 4, 1, 4096)
    write(tmp_path / "quiet" / "fr" / "home.flac", words[:16000].astype(np.float32), 16000)
    with pytest.raises(ConfigError, match="16000 frames at 16000 Hz"):
        pair_dataset(config, 4, 1, 4096)
    two = from_dict({"data": {"clean": [str(clean), str(clean)], "targets": str(clean)}})
    with pytest.raises(ConfigError, match="exactly one data.clean folder"):
        pair_dataset(two, 4, 1, 4096)


def test_lmos_is_zero_for_identical_and_positive_otherwise() -> None:
    from finally_cli.models.hub import create_model

    encoder = create_model("tiny").ssl.model.feature_extractor
    loss = LMOSLoss(encoder, 48000)
    x = torch.randn(2, 1, 48000) * 0.1
    assert sum(loss(x, x).values()) == 0
    terms = loss(x + 0.05 * torch.randn_like(x), x)
    assert set(terms) == {"wavlm", "stft_l1"} and all(v > 0 for v in terms.values())
    assert set(LMOSLoss(None, 16000)(x[..., :16000], x[..., :16000])) == {"mrstft", "stft_l1"}


# -- the pipeline ----------------------------------------------------------------------------
def train_cli(*args: str) -> None:
    result = runner.invoke(app, ["train", "--quiet", *args])
    assert result.exit_code == 0, result.output + str(result.exception)


def test_three_stages_then_enhance(tmp_path: Path, clean_dir: Path) -> None:
    common = [f"data.clean=[{clean_dir}]", "steps=3", "checkpoint_every=3"]
    val = tmp_path / "val"
    train_cli(
        "prepare-val", "--config", "tiny/stage1", "--set", common[0], "-o", str(val), "--count", "2"
    )
    assert len(list((val / "noisy").glob("*.wav"))) == 2
    runs = tmp_path / "runs"
    train_cli(
        "--config",
        "tiny/stage1",
        *sum((["--set", s] for s in common), []),
        "--set",
        f"data.validation={val}",
        "--set",
        "validate_every=3",
        "--run-dir",
        str(runs / "s1"),
    )
    assert (runs / "s1" / "best" / "model.safetensors").is_file()
    assert json.loads((runs / "s1" / "validation.jsonl").read_text().splitlines()[0])["pesq"] > 0
    train_cli(
        "--config",
        "tiny/stage2",
        *sum((["--set", s] for s in common), []),
        "--set",
        f"init_from={runs / 's1'}",
        "--run-dir",
        str(runs / "s2"),
    )
    train_cli(
        "--config",
        "tiny/stage3",
        *sum((["--set", s] for s in common), []),
        "--set",
        f"init_from={runs / 's2'}",
        *("--set", f"data.validation={val}", "--set", "validate_every=3"),
        *("--set", "best_metric=lsd", "--set", "freeze=[spectral_unet,upsampler]"),
        "--run-dir",
        str(runs / "s3"),
    )
    scores = json.loads((runs / "s3" / "validation.jsonl").read_text().splitlines()[0])
    assert scores["lsd"] > 0 and (runs / "s3" / "best" / "model.safetensors").is_file()
    losses = [json.loads(line) for line in (runs / "s3" / "metrics.jsonl").read_text().splitlines()]
    assert {"loss_g", "loss_d", "gan", "fm", "wavlm", "stft_l1"} <= set(losses[-1])
    assert (runs / "s3" / "tensorboard").is_dir()
    train_cli("export", str(runs / "s3"), "-o", str(tmp_path / "model"))
    train_cli("export", str(runs / "s2"), "-o", str(tmp_path / "model-s2"))
    from safetensors.torch import load_file

    before = load_file(str(tmp_path / "model-s2" / "model.safetensors"))
    after = load_file(str(tmp_path / "model" / "model.safetensors"))
    frozen = [k for k in before if k.startswith(("spectral_unet.", "upsampler."))]
    trained = [k for k in before if k.startswith("wave_unet.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not all(torch.equal(before[k], after[k]) for k in trained)
    src = write(tmp_path / "in.wav", speechlike(1.2, 22050), 22050)
    result = runner.invoke(
        app,
        [
            "enhance",
            str(src),
            "-o",
            str(tmp_path / "out.wav"),
            "--model",
            str(tmp_path / "model"),
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    import soundfile as sf

    assert sf.info(str(tmp_path / "out.wav")).samplerate == 48000


def test_best_metric_picks_best_and_export_picks_a_step(tmp_path: Path, clean_dir: Path) -> None:
    from safetensors.torch import load_file

    val = tmp_path / "val"
    train_cli(
        "prepare-val", "--config", "tiny/stage1", "--set", f"data.clean=[{clean_dir}]",
        "-o", str(val), "--count", "2",
    )  # fmt: skip
    run = tmp_path / "run"
    sets = [
        f"data.clean=[{clean_dir}]", f"data.validation={val}", "steps=3", "checkpoint_every=1",
        "validate_every=1", "best_metric=estoi", "optim.lr=1e-2",
    ]  # fmt: skip
    train_cli(
        "--config", "tiny/stage1", *sum((["--set", s] for s in sets), []), "--run-dir", str(run)
    )  # fmt: skip
    scores = [json.loads(line) for line in (run / "validation.jsonl").read_text().splitlines()]
    best_step = max(scores, key=lambda r: r["estoi"])["step"]  # first of equal maxima
    best = load_file(str(run / "best" / "model.safetensors"))
    train_cli("export", str(run), "--step", str(best_step), "-o", str(tmp_path / "chosen"))
    chosen = load_file(str(tmp_path / "chosen" / "model.safetensors"))
    assert best.keys() == chosen.keys()
    assert all(torch.equal(best[k], chosen[k]) for k in best)
    assert f"{best_step} steps" in (tmp_path / "chosen" / "README.md").read_text()
    missing = runner.invoke(
        app, ["train", "export", str(run), "--step", "9", "-o", str(tmp_path / "x")]
    )
    assert missing.exit_code == 2 and "no checkpoint of step 9 (kept: 1, 2, 3)" in missing.stderr
    assert not (tmp_path / "x").exists()
    both = runner.invoke(
        app, ["train", "export", str(run), "--best", "--step", "2", "-o", str(tmp_path / "y")]
    )
    assert both.exit_code == 2 and "choose one" in both.stderr


def test_resume_refuses_changed_config(tmp_path: Path, clean_dir: Path) -> None:
    base = [
        "--config",
        "tiny/stage1",
        "--set",
        f"data.clean=[{clean_dir}]",
        "--set",
        "steps=2",
        "--run-dir",
        str(tmp_path / "r"),
    ]
    train_cli(*base)
    result = runner.invoke(
        app,
        [
            "train",
            *base[:-2],
            "--set",
            "optim.lr=1e-3",
            "--run-dir",
            str(tmp_path / "r"),
            "--resume",
            "--quiet",
        ],
    )
    assert result.exit_code == 2
    assert "changed keys: optim.lr" in result.stderr
    result = runner.invoke(app, ["train", *base, "--quiet"])
    assert result.exit_code == 2 and "--resume" in result.stderr


def test_weight_averaging_is_what_export_and_resume_use(tmp_path: Path, clean_dir: Path) -> None:
    """`optim.ema`: every checkpoint keeps the moving average of the generator's weights,
    export (and so `init_from`) takes it, and a resumed run goes on averaging where it was."""
    from safetensors.torch import load_file

    run = tmp_path / "run"
    sets = [
        f"data.clean=[{clean_dir}]", "steps=3", "checkpoint_every=1", "keep_checkpoints=5",
        "optim.ema=0.5", "optim.lr=1e-2",
    ]  # fmt: skip
    args = ["--config", "tiny/stage1", *sum((["--set", s] for s in sets), []), "--run-dir"]
    train_cli(*args, str(run))
    raw = [
        load_file(str(run / f"checkpoints/step_0000000{i}/generator.safetensors"))
        for i in (1, 2, 3)
    ]
    average = load_file(str(run / "checkpoints/step_00000003/ema.safetensors"))
    name = next(k for k in raw[0] if raw[0][k].is_floating_point() and raw[0][k].numel() > 1)
    expected = 0.5 * (0.5 * raw[0][name] + 0.5 * raw[1][name]) + 0.5 * raw[2][name]
    assert torch.allclose(average[name], expected, atol=1e-6)
    assert not torch.allclose(average[name], raw[2][name])  # the weights did move
    train_cli("export", str(run), "--step", "3", "-o", str(tmp_path / "out"))
    exported = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert torch.equal(exported[name], average[name])
    # Resumed from step 2, the average at step 3 is the same (it is not restarted).
    import shutil

    shutil.copytree(run, tmp_path / "again")
    shutil.rmtree(tmp_path / "again" / "checkpoints" / "step_00000003")
    train_cli(*args, str(tmp_path / "again"), "--resume")
    resumed = load_file(str(tmp_path / "again/checkpoints/step_00000003/ema.safetensors"))
    assert torch.allclose(resumed[name], average[name], atol=1e-6)


def test_export_blends_the_run_with_the_model_it_started_from(
    tmp_path: Path, clean_dir: Path, small_dir: Path
) -> None:
    """`export --blend-from BASE --blend b` writes BASE + b · (run − BASE); a base of another
    architecture is refused in one line and nothing is written."""
    from safetensors.torch import load_file

    run = tmp_path / "run"
    sets = [f"data.clean=[{clean_dir}]", "steps=3", "checkpoint_every=1", "keep_checkpoints=5",
            "optim.lr=1e-2"]  # fmt: skip
    train_cli(
        "--config", "tiny/stage1", *sum((["--set", s] for s in sets), []), "--run-dir", str(run)
    )
    train_cli("export", str(run), "--step", "1", "-o", str(tmp_path / "base"))
    train_cli("export", str(run), "--step", "3", "-o", str(tmp_path / "end"))
    args = ["export", str(run), "--step", "3", "--blend-from", str(tmp_path / "base")]
    train_cli(*args, "--blend", "0.5", "-o", str(tmp_path / "half"))
    base, end, half = (
        load_file(str(tmp_path / name / "model.safetensors")) for name in ("base", "end", "half")
    )
    moved = [k for k in base if base[k].is_floating_point() and not torch.equal(base[k], end[k])]
    assert moved
    for k in moved:
        assert torch.allclose(half[k], 0.5 * (base[k] + end[k]), atol=1e-6)
    assert "0.5 of the way from `base`" in (tmp_path / "half" / "README.md").read_text()
    bad = ["train", "export", str(run), "--step", "3", "--blend-from", str(small_dir)]
    result = runner.invoke(app, [*bad, "-o", str(tmp_path / "bad")])
    assert result.exit_code != 0
    assert "another architecture" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_export_averages_runs_of_one_architecture_before_blending(
    tmp_path: Path, clean_dir: Path
) -> None:
    """`export RUN --with OTHER --step s` writes the mean of both runs' step-s weights (a model
    soup), then blends it; a run of another architecture is refused in one line and nothing
    is written."""
    from safetensors.torch import load_file

    sets = [f"data.clean=[{clean_dir}]", "steps=2", "checkpoint_every=1", "optim.lr=1e-2"]
    runs = {}
    for seed in (1, 2):
        runs[seed] = tmp_path / f"run{seed}"
        extra = ["--set", f"seed={seed}"]
        args = sum((["--set", s] for s in sets), [])
        train_cli("--config", "tiny/stage1", *args, *extra, "--run-dir", str(runs[seed]))
        train_cli("export", str(runs[seed]), "--step", "2", "-o", str(tmp_path / f"end{seed}"))
    train_cli("export", str(runs[1]), "--step", "1", "-o", str(tmp_path / "base"))
    soup = ["export", str(runs[1]), "--step", "2", "--with", str(runs[2])]
    train_cli(*soup, "-o", str(tmp_path / "mean"))
    train_cli(*soup, "--blend-from", str(tmp_path / "base"), "--blend", "0.5", "-o",
              str(tmp_path / "half"))  # fmt: skip
    end1, end2, mean, base, half = (
        load_file(str(tmp_path / name / "model.safetensors"))
        for name in ("end1", "end2", "mean", "base", "half")
    )
    differ = [k for k in end1 if end1[k].is_floating_point() and not torch.equal(end1[k], end2[k])]
    assert differ  # the seeds trained apart
    for k in differ:
        assert torch.allclose(mean[k], 0.5 * (end1[k] + end2[k]), atol=1e-6)
        assert torch.allclose(half[k], 0.5 * (base[k] + mean[k]), atol=1e-6)
    assert "the mean of this run's and `run2`'s" in (tmp_path / "mean" / "README.md").read_text()
    other = tmp_path / "other"
    (tmp_path / "narrow.yaml").write_text("fusion_channels: 8\n")
    grown = ["--set", f"overlays=[{tmp_path / 'narrow.yaml'}]"]
    train_cli("--config", "tiny/stage1", *sum((["--set", s] for s in sets), []), *grown,
              "--run-dir", str(other))  # fmt: skip
    result = runner.invoke(app, ["train", *soup[:-1], str(other), "-o", str(tmp_path / "bad")])
    assert result.exit_code != 0
    assert "model config differs" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def saved_small_base(folder: Path) -> tuple:
    """finally-small's restorer (no 48 kHz block) with seed-1 weights, saved to `folder`: the
    base a grown run blends back towards. Returns (config, model in eval mode)."""
    from dataclasses import replace

    from finally_cli.models.config import preset
    from finally_cli.models.hub import create_model, save_model

    small = preset("finally-small")
    small = replace(small, upsample_wave_unet=replace(small.upsample_wave_unet, enabled=False))
    base = create_model(small, seed=1).eval()
    save_model(base, folder)
    return small, base


def nudged(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every weight moved a little, as training moves it; in eval mode."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    return model.eval()


@pytest.mark.parametrize(
    ("growth", "projection", "layer"),
    [
        (
            {"residual_gru_layers": 1},
            "residual_projections.0.weight",
            "residual_grus.0.weight_hh_l0",
        ),
        ({"backward_gru_hidden": 8}, "backward_projection.weight", "backward_gru.weight_hh_l0"),
        ({"freq_conv_channels": 4}, "freq_projection.weight", "freq_conv.0.weight"),
        ({"bin_refiner_channels": 4}, "bin_refiner.2.weight", "bin_refiner.0.weight"),
    ],
)
def test_blend_grows_a_base_without_the_runs_new_layer(
    tmp_path: Path, growth: dict, projection: str, layer: str
) -> None:
    """A run that grew a residual or a backward GRU layer (`init_from` a model without it)
    still blends with that model, and may carry inference-only settings the base lacks: the
    base is grown as `init_from` grows it (new projection at zero), so blend 0 computes
    exactly the base's output, blend ½ halves what the new layer adds and interpolates the
    rest; a base with more layers than the run is refused."""
    from dataclasses import replace

    from finally_cli.errors import CheckpointError
    from finally_cli.models.hub import create_model, save_model
    from finally_cli.training.export import _blend

    small, base = saved_small_base(tmp_path / "base")
    restorer = replace(small.spectral_restorer, **growth, mix_back=1.0)
    grown = replace(small, spectral_restorer=restorer)

    def trained() -> torch.nn.Module:  # every weight moved away from the base, as training does
        run = create_model(grown, seed=2)
        run.load_state_dict(base.state_dict(), strict=False)
        return nudged(run)

    run = trained()
    before = {k: v.clone() for k, v in run.state_dict().items()}
    _blend(run, tmp_path / "base", 0.5)
    after, start = run.state_dict(), base.state_dict()
    prefix = "spectral_restorer."
    projection, layer = prefix + projection, prefix + layer
    assert torch.allclose(after[projection], 0.5 * before[projection])
    assert torch.equal(after[layer], before[layer])
    head = prefix + "gain_head.weight"
    assert torch.allclose(after[head], 0.5 * (before[head] + start[head]), atol=1e-7)
    waveform = torch.from_numpy(speechlike(1.0, 16000, seed=3)).float().view(1, 1, -1)
    run = trained()
    _blend(run, tmp_path / "base", 0.0)
    restorer_off = replace(grown, spectral_restorer=replace(restorer, mix_back=0.0))
    same = create_model(restorer_off)
    same.load_state_dict(run.state_dict())
    with torch.no_grad():
        assert torch.allclose(same.eval()(waveform), base(waveform), atol=1e-5)
    save_model(create_model(grown), tmp_path / "bigger")
    with pytest.raises(CheckpointError, match="another architecture"):
        _blend(create_model(small), tmp_path / "bigger", 0.5)


@pytest.mark.parametrize(
    "wider",
    [{"hidden": 288}, {"bin_refiner_channels": 8}, {"hidden": 288, "backward_gru_hidden": 12}],
)
def test_blend_grows_a_narrower_base_to_the_runs_width(tmp_path: Path, wider: dict) -> None:
    """A run widened with `init_from` (`hidden` 256 → 288, the bin refiner's 4 → 8 channels,
    or `hidden` and the backward GRU's 8 → 12 units together, on the shipped layout: residual
    and backward GRUs, bin refiner) blends with its narrower base: blend 0 computes exactly
    the base's output, blend ½ keeps the new units' own weights and halves what reads them."""
    from dataclasses import replace

    from finally_cli.models.hub import create_model, save_model
    from finally_cli.training.export import _blend

    layout = {"residual_gru_layers": 1, "backward_gru_hidden": 8, "bin_refiner_channels": 4}
    small, _ = saved_small_base(tmp_path / "unused")
    narrow = replace(small, spectral_restorer=replace(small.spectral_restorer, **layout))
    base = nudged(create_model(narrow, seed=1))
    save_model(base, tmp_path / "base")
    wide = replace(narrow, spectral_restorer=replace(narrow.spectral_restorer, **wider))
    run = nudged(create_model(wide, seed=2))
    before = {k: v.clone() for k, v in run.state_dict().items()}
    _blend(run, tmp_path / "base", 0.5)
    after, start = run.state_dict(), base.state_dict()
    prefix = "spectral_restorer."
    if "hidden" in wider:
        head, own = prefix + "gain_head.weight", prefix + "gru.weight_hh_l1"
        old, new = 256, slice(256, None)
        assert torch.equal(after[own].unflatten(0, (3, 288))[:, new],
                           before[own].unflatten(0, (3, 288))[:, new])  # fmt: skip
    else:  # the last conv reads the refiner's channels; the first makes them
        head, own, old, new = prefix + "bin_refiner.2.weight", prefix + "bin_refiner.0.weight", 4, 4
        assert torch.equal(after[own][new:], before[own][new:])
        new = slice(4, None)
    assert torch.allclose(after[head][:, new], 0.5 * before[head][:, new])
    assert torch.allclose(after[head][:, :old], 0.5 * (before[head][:, :old] + start[head]))
    if "backward_gru_hidden" in wider:  # the stack reads the backward GRU's new units
        head = prefix + "backward_projection.weight"
        assert torch.allclose(after[head][:, 8:], 0.5 * before[head][:, 8:])
        assert torch.allclose(after[head][:256, :8], 0.5 * (before[head][:256, :8] + start[head]))
    run = nudged(create_model(wide, seed=2))
    _blend(run, tmp_path / "base", 0.0)
    waveform = torch.from_numpy(speechlike(1.0, 16000, seed=3)).float().view(1, 1, -1)
    with torch.no_grad():
        assert torch.allclose(run(waveform), base(waveform), atol=1e-5)


def test_export_set_changes_settings_that_keep_the_weights(tmp_path: Path, clean_dir: Path) -> None:
    """`export --set key.path=value` writes the run's weights unchanged under a config with
    that setting (the restorer's inference stages are shipped this way); an unknown key is
    refused in one line and nothing is written."""
    from safetensors.torch import load_file

    run = tmp_path / "run"
    sets = [f"data.clean=[{clean_dir}]", "steps=1", "checkpoint_every=1"]
    train_cli(
        "--config", "tiny/stage1", *sum((["--set", s] for s in sets), []), "--run-dir", str(run)
    )
    train_cli("export", str(run), "--step", "1", "-o", str(tmp_path / "plain"))
    stage = ["--set", "spectral_restorer.postfilter_below=0.15"]
    train_cli("export", str(run), "--step", "1", *stage, "-o", str(tmp_path / "staged"))
    config = json.loads((tmp_path / "staged" / "config.json").read_text())
    assert config["spectral_restorer"]["postfilter_below"] == 0.15
    plain, staged = (
        load_file(str(tmp_path / name / "model.safetensors")) for name in ("plain", "staged")
    )
    assert plain.keys() == staged.keys()
    assert all(torch.equal(plain[k], staged[k]) for k in plain)
    bad = ["train", "export", str(run), "--step", "1", "--set", "spectral_restorer.hiden=3"]
    result = runner.invoke(app, [*bad, "-o", str(tmp_path / "bad")])
    assert result.exit_code != 0
    assert "hiden" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_a_run_resumes_after_an_upgrade_added_an_option(tmp_path: Path, clean_dir: Path) -> None:
    """A run saved before an option existed resumes: the option was at its default."""
    run = tmp_path / "r"
    base = ["--config", "tiny/stage1", "--set", f"data.clean=[{clean_dir}]", "--set", "steps=2"]
    train_cli(*base, "--run-dir", str(run))
    saved = json.loads((run / "config.json").read_text())
    del saved["optim"]["ema"]
    (run / "config.json").write_text(json.dumps(saved))
    train_cli(*base, "--run-dir", str(run), "--resume")


def test_resume_refuses_another_lmos_feature_space(tmp_path: Path, clean_dir: Path) -> None:
    """`loss.features: auto` is recorded as what it resolved to; a resume that would resolve it
    differently (an extra installed or removed in between) is refused in one line."""
    run = tmp_path / "r"
    base = ["--config", "tiny/stage1", "--set", f"data.clean=[{clean_dir}]", "--set", "steps=2"]
    train_cli(*base, "--run-dir", str(run))
    recorded = (run / "lmos_features.txt").read_text().strip()
    assert recorded == "wavlm"  # the tiny preset carries its own (random) WavLM
    (run / "lmos_features.txt").write_text("whisper-tiny.en:conv\n")
    result = runner.invoke(app, ["train", *base, "--run-dir", str(run), "--resume", "--quiet"])
    assert result.exit_code == 2, result.output
    assert "LMOS features were whisper-tiny.en:conv" in result.stderr


def test_non_finite_loss_stops_training_without_saving_it(
    tmp_path: Path, clean_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from finally_cli.training import checkpoint as ckpt
    from finally_cli.training.trainer import Trainer

    real_step = Trainer.train_step

    def poisoned(self: Trainer, batches: list) -> dict[str, float]:
        logs = real_step(self, batches)
        return {**logs, "loss_g": float("nan")} if self.step == 2 else logs

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    run = tmp_path / "r"
    result = runner.invoke(
        app,
        ["train", "--quiet", "--config", "tiny/stage1", "--set", f"data.clean=[{clean_dir}]",
         "--set", "steps=5", "--set", "checkpoint_every=2", "--run-dir", str(run)],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "non-finite loss at step 3" in result.stderr and "step_00000002" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert [p.name for p in ckpt.checkpoints(run)] == ["step_00000002"]


def test_stage1_overfits_one_batch() -> None:
    """Stage-1 LMOS (WavLM conv features of the tiny preset + STFT L1) on one fixed batch."""
    from dataclasses import replace

    from finally_cli.models.hub import create_model

    torch.manual_seed(0)
    config = create_model("tiny").config
    generator = create_model(
        replace(config, upsample_wave_unet=replace(config.upsample_wave_unet, enabled=False))
    ).train()
    loss_fn = LMOSLoss(create_model("tiny").ssl.model.feature_extractor, 16000)
    clean = torch.from_numpy(speechlike(0.512, 16000, seed=1)[:, 0] * 0.5)[None, None]
    noisy = clean + 0.05 * torch.randn_like(clean)
    optimizer = torch.optim.AdamW(generator.parameters(), lr=3e-3, betas=(0.8, 0.99))
    history = []
    for _ in range(120):
        optimizer.zero_grad()
        loss = sum(loss_fn(generator(noisy), clean).values())
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    assert min(history[-10:]) < history[0] / 5, (history[0], history[-10:])


def test_sigkill_resume_continues_exactly(tmp_path: Path, clean_dir: Path) -> None:
    args = [
        "--config",
        "tiny/stage2",
        "--set",
        f"data.clean=[{clean_dir}]",
        "--set",
        "init_from=null",
        "--set",
        "steps=8",
        "--set",
        "checkpoint_every=3",
        "--set",
        "log_every=1",
        "--quiet",
    ]
    env = dict(os.environ, PYTHONHASHSEED="0")
    reference = tmp_path / "reference"
    subprocess.run(
        [sys.executable, "-m", "finally_cli.cli", "train", *args, "--run-dir", str(reference)],
        check=True,
        env=env,
        capture_output=True,
    )
    crashed = tmp_path / "crashed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "finally_cli.cli", "train", *args, "--run-dir", str(crashed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not (crashed / "checkpoints" / "step_00000003").is_dir():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (crashed / "checkpoints" / "step_00000003" / "state.json").is_file()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "finally_cli.cli",
            "train",
            *args,
            "--run-dir",
            str(crashed),
            "--resume",
        ],
        check=True,
        env=env,
        capture_output=True,
    )

    def losses(run: Path) -> dict[int, dict]:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return {row["step"]: row for row in rows}

    ref, resumed = losses(reference), losses(crashed)
    for step in range(4, 9):
        for key in ("loss_g", "loss_d"):
            assert resumed[step][key] == pytest.approx(ref[step][key], abs=1e-5), (step, key)


def test_blend_grows_a_base_without_the_runs_magnitude_bins(tmp_path: Path) -> None:
    """A run grown by magnitude input bins (and a residual layer) from a model without them
    blends with that model: blend 0 computes exactly the base's output, blend ½ halves the
    new bins' weights; a base with more bins than the run is refused."""
    from dataclasses import replace

    from finally_cli.errors import CheckpointError
    from finally_cli.models.hub import create_model, save_model
    from finally_cli.training.export import _blend

    small, base = saved_small_base(tmp_path / "base")
    restorer = replace(small.spectral_restorer, residual_gru_layers=1, magnitude_bins=16)
    grown = replace(small, spectral_restorer=restorer)

    def trained() -> torch.nn.Module:
        run = create_model(grown, seed=2)
        state = run.state_dict()
        for name, value in base.state_dict().items():
            if state[name].shape == value.shape:
                state[name] = value.clone()
            else:  # the encoder's input layer: old channels kept, new ones at zero
                state[name] = torch.zeros_like(state[name])
                state[name][:, : value.shape[1]] = value
        run.load_state_dict(state)
        with torch.no_grad():
            for parameter in run.parameters():
                parameter.add_(0.01 * torch.randn_like(parameter))
        return run.eval()

    encoder = "spectral_restorer.encoder.0.weight"
    old_inputs = base.state_dict()[encoder].shape[1]
    run = trained()
    before = run.state_dict()[encoder].clone()
    _blend(run, tmp_path / "base", 0.5)
    after = run.state_dict()[encoder]
    assert after.shape[1] == old_inputs + 16
    assert torch.allclose(after[:, old_inputs:], 0.5 * before[:, old_inputs:])
    waveform = torch.from_numpy(speechlike(1.0, 16000, seed=3)).float().view(1, 1, -1)
    run = trained()
    _blend(run, tmp_path / "base", 0.0)
    with torch.no_grad():
        assert torch.allclose(run(waveform), base(waveform), atol=1e-5)
    save_model(create_model(grown), tmp_path / "bigger")
    with pytest.raises(CheckpointError, match="another architecture"):
        _blend(
            create_model(replace(grown, spectral_restorer=replace(restorer, magnitude_bins=8))),
            tmp_path / "bigger",
            0.5,
        )
