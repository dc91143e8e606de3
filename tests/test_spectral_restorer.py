"""The predictive path (finally-small): SpectralRestorer block, its generator and its loss."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from finally_cli.errors import ConfigError
from finally_cli.models.config import GeneratorConfig, SpectralRestorerConfig, preset
from finally_cli.models.hub import create_model
from finally_cli.models.spectral_restorer import SpectralRestorer, erb_filterbank


def _small(stage3: bool) -> GeneratorConfig:
    config = preset("finally-small")
    return replace(config, upsample_wave_unet=replace(config.upsample_wave_unet, enabled=stage3))


def _speechy(samples: int = 16384) -> torch.Tensor:
    t = torch.arange(samples) / 16000
    voiced = sum(torch.sin(2 * torch.pi * 180 * k * t) / k for k in range(1, 12))
    return (0.1 * voiced * (0.6 + 0.4 * torch.sin(2 * torch.pi * 3 * t))).view(1, 1, -1)


def test_erb_weights_interpolate_a_unit_gain_exactly() -> None:
    bank = erb_filterbank(512, 16000, 32)
    assert bank.shape == (32, 257)
    assert torch.allclose(bank.sum(0), torch.ones(257), atol=1e-6)
    assert (bank >= 0).all()


@pytest.mark.parametrize("samples", [1, 127, 4096, 5003])
def test_shapes_at_odd_lengths_16k_and_48k(samples: int) -> None:
    for stage3, factor in ((False, 1), (True, 3)):
        model = create_model(_small(stage3)).eval()
        with torch.no_grad():
            out = model(torch.randn(2, 1, samples) * 0.1)
        assert out.shape == (2, 1, factor * samples)
        assert torch.isfinite(out).all()


def test_identity_init_passes_the_input_through() -> None:
    model = create_model(_small(False), seed=3).identity_init_().eval()
    waveform = torch.randn(2, 1, 8192 + 77, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        out = model(waveform)
    assert torch.allclose(out, waveform, atol=1e-5)


def test_identity_init_at_48k_is_the_interpolated_input() -> None:
    model = create_model(_small(True), seed=3).identity_init_().eval()
    sine = 0.3 * torch.sin(2 * torch.pi * 1000 * torch.arange(16384) / 16000).view(1, 1, -1)
    with torch.no_grad():
        out = model(sine)[0, 0]
    t48 = torch.arange(out.numel()) / 48000
    expected = torch.tanh(0.3 * torch.sin(2 * torch.pi * 1000 * t48))  # the 48 kHz head's tanh
    middle = slice(4800, -4800)
    error = (out[middle] - expected[middle]).square().sum()
    assert 10 * torch.log10(expected[middle].square().sum() / error) > 40


def test_every_parameter_learns_from_identity() -> None:
    """The zeroed heads get gradients at once; after one step they pass them on to every layer."""
    model = create_model(_small(False), seed=1).identity_init_()
    waveform = torch.randn(2, 1, 8192, generator=torch.Generator().manual_seed(1)) * 0.1
    target = waveform * 0.5
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad()
        (model(waveform) - target).square().mean().backward()
        optimizer.step()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_a_band_gain_of_one_half_halves_the_output() -> None:
    block = SpectralRestorer()
    block.identity_init_()
    waveform = _speechy()
    with torch.no_grad():
        block.gain_head.bias.fill_(-torch.log(torch.tensor(3.0)).item())  # 2·sigmoid = 0.5
        halved = block(waveform)
    assert torch.allclose(halved, 0.5 * waveform, atol=1e-5)


def _gained(gain: float, **options: float) -> SpectralRestorer:
    """An identity restorer whose every band gain is `gain` (the output is gain · input)."""
    block = SpectralRestorer(**options)
    block.identity_init_()
    with torch.no_grad():
        block.gain_head.bias.fill_(torch.logit(torch.tensor(gain / block.max_gain)).item())
    return block.eval()


def test_mix_back_returns_nearly_clean_input_and_leaves_noisy_verdicts_alone() -> None:
    """A window the model barely touched (0.9 · input: 19 dB kept over removed) gets the
    input back in full with mix_back 1; one it halved (0 dB) stays as restored; training
    never sees the stage."""
    waveform = _speechy()
    with torch.no_grad():
        touched = _gained(0.9, mix_back=1.0, mix_back_db=(12.0, 18.0))
        assert torch.allclose(touched(waveform), waveform, atol=1e-4)
        halved = _gained(0.5, mix_back=1.0, mix_back_db=(12.0, 18.0))
        assert torch.allclose(halved(waveform), 0.5 * waveform, atol=1e-4)
        partly = _gained(0.9, mix_back=1.0, mix_back_db=(12.0, 26.0))
        share = (10 * torch.log10(torch.tensor(0.81 / 0.01)) - 12.0) / 14.0  # 0.5 of the ramp
        expected = 0.9 * waveform + share * 0.1 * waveform
        assert torch.allclose(partly(waveform), expected, atol=1e-3)
        assert torch.allclose(touched.train()(waveform), 0.9 * waveform, atol=1e-4)


def test_mix_back_leaves_a_clipped_window_as_restored() -> None:
    """The model barely touches a clipped input (the verdict says clean), but putting the
    input back would bring the clipping back: the amplitude histogram's spike at the clip
    level takes the share to 0, while the unclipped signal still gets its input back."""
    waveform = _speechy()
    clipped = waveform.clamp(-0.25 * waveform.abs().max(), 0.25 * waveform.abs().max())
    with torch.no_grad():
        block = _gained(0.9, mix_back=1.0, mix_back_db=(12.0, 18.0))
        assert block.clipped(waveform[:, 0]).item() == 0.0
        assert block.clipped(clipped[:, 0]).item() == 1.0
        assert torch.allclose(block(clipped), 0.9 * clipped, atol=1e-4)
        assert torch.allclose(block(waveform), waveform, atol=1e-4)
        silence = torch.zeros(1, 1, 8192)
        assert torch.equal(block(silence), silence)


def test_mix_back_by_band_restores_kept_bands_and_leaves_cut_ones_cut() -> None:
    """With `mix_back_kept`, a window judged clean gets the input back only in the bands the
    model kept (here gain 0.9 below ≈ 3 kHz: the voice comes back in full), not in those it
    cut (gain 0.1 above: a 6 kHz whistle stays 20 dB down)."""
    t = torch.arange(16384) / 16000
    voice = _speechy()
    whistle = 0.01 * torch.sin(2 * torch.pi * 6000 * t).view(1, 1, -1)
    block = SpectralRestorer(mix_back=1.0, mix_back_db=(0.0, 10.0), mix_back_kept=0.6)
    block.identity_init_()
    with torch.no_grad():
        bias = torch.full((block.gain_head.bias.numel(),), 0.9 / block.max_gain)
        bias[24:] = 0.1 / block.max_gain
        block.gain_head.bias.copy_(torch.logit(bias))
        out = block.eval()(voice + whistle)

    def level(signal: torch.Tensor, low: int, high: int) -> torch.Tensor:
        spec = torch.stft(signal.flatten(), 512, 128, window=torch.hann_window(512),
                          return_complex=True)  # fmt: skip
        return spec[low:high, 8:-8].abs().square().sum()

    voice_bins, whistle_bins = (slice(3, 60), slice(188, 196))  # < 1.9 kHz; 5.9-6.1 kHz
    kept = level(out, voice_bins.start, voice_bins.stop) / level(voice, 3, 60)
    cut = level(out, whistle_bins.start, whistle_bins.stop) / level(whistle, 188, 196)
    assert 0.95 < kept.item() < 1.05
    assert 0.005 < cut.item() < 0.02


def test_postfilter_deepens_what_the_model_cut_and_keeps_what_it_kept() -> None:
    """Bands at effective gain 0.2 under postfilter_below 0.4 go down by another half;
    bands the model kept at 0.9 are untouched; never more than 20 dB extra."""
    waveform = _speechy()
    middle = slice(1024, -1024)
    with torch.no_grad():
        cut = _gained(0.2, postfilter_below=0.4)(waveform)
        assert torch.allclose(cut[..., middle], 0.1 * waveform[..., middle], atol=1e-3)
        kept = _gained(0.9, postfilter_below=0.4)(waveform)
        assert torch.allclose(kept, 0.9 * waveform, atol=1e-4)
        floor = _gained(0.01, postfilter_below=0.5)(waveform)
        assert torch.allclose(floor[..., middle], 0.001 * waveform[..., middle], atol=1e-4)


def test_the_low_cut_removes_rumble_and_keeps_the_voice() -> None:
    """With `highpass_hz` an identity restorer still passes the voice's band untouched but
    takes a 40 Hz hum down by more than 10 dB."""
    block = SpectralRestorer(highpass_hz=100.0)
    block.identity_init_()
    t = torch.arange(32000) / 16000
    voice = sum(torch.sin(2 * torch.pi * f * t) for f in (400.0, 1000.0, 3000.0)) / 3
    hum = torch.sin(2 * torch.pi * 40 * t)
    middle = slice(2000, -2000)

    def level_db(x: torch.Tensor) -> float:
        return 10 * torch.log10(x[middle].square().mean()).item()

    with torch.no_grad():
        kept = block(voice.view(1, 1, -1))[0, 0]
        cut = block(hum.view(1, 1, -1))[0, 0]
    assert abs(level_db(kept) - level_db(voice)) < 0.1
    assert level_db(cut) < level_db(hum) - 10
    assert SpectralRestorer().highpass_hz == 0  # off unless a config asks for it


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match="magnitude_bins"):
        SpectralRestorerConfig(enabled=True, magnitude_bins=300)
    with pytest.raises(ConfigError, match="residual_gru_layers"):
        SpectralRestorerConfig(enabled=True, residual_gru_layers=-1)
    with pytest.raises(ConfigError, match="spectral_restorer.hop=100"):
        SpectralRestorerConfig(hop=100)
    with pytest.raises(ConfigError, match="df_lookahead=3"):
        SpectralRestorerConfig(df_order=3, df_lookahead=3)
    with pytest.raises(ConfigError, match="max_gain"):
        SpectralRestorerConfig(max_gain=1.0)
    with pytest.raises(ConfigError, match="highpass_hz=-80"):
        SpectralRestorerConfig(highpass_hz=-80.0)
    with pytest.raises(ConfigError, match="mix_back=1.5"):
        SpectralRestorerConfig(mix_back=1.5)
    with pytest.raises(ConfigError, match="mix_back_from_db=20"):
        SpectralRestorerConfig(mix_back_from_db=20.0, mix_back_to_db=10.0)
    with pytest.raises(ConfigError, match="mix_back_spike_from=4"):
        SpectralRestorerConfig(mix_back_spike_from=4.0, mix_back_spike_to=3.0)
    with pytest.raises(ConfigError, match="mix_back_kept=2"):
        SpectralRestorerConfig(mix_back_kept=2.0)
    with pytest.raises(ConfigError, match="postfilter_below=1"):
        SpectralRestorerConfig(postfilter_below=1.0)
    with pytest.raises(ConfigError, match="unknown keys"):
        GeneratorConfig.from_dict({"spectral_restorer": {"hiden": 3}})


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    from finally_cli.models.hub import load_model, save_model

    model = create_model(_small(False), seed=2).eval()
    save_model(model, tmp_path / "m")
    loaded = load_model(str(tmp_path / "m")).eval()
    waveform = _speechy(4096)
    with torch.no_grad():
        assert torch.allclose(model(waveform), loaded(waveform), atol=1e-7)


def test_stage3_starts_from_the_stage2_output(tmp_path: Path) -> None:
    from finally_cli.models.hub import save_model
    from finally_cli.training.config import load_config
    from finally_cli.training.model_setup import build_generator

    stage2 = create_model(_small(False), seed=5).eval()
    save_model(stage2, tmp_path / "s2")
    stage3 = build_generator(
        load_config("finally-small/stage3", [f"init_from={tmp_path / 's2'}"])
    ).eval()
    waveform = _speechy()
    with torch.no_grad():
        out16 = stage2(waveform)[0, 0]
        out48 = stage3(waveform)[0, 0]
    down = out48[::3][1600:-1600]
    want = out16[1600:-1600]
    assert 10 * torch.log10(want.square().sum() / (down - want).square().sum()) > 30


def _grown(trained: torch.nn.Module, tmp_path: Path, overlay: str) -> torch.nn.Module:
    """The stage-1 generator built from `trained` (init_from) with a config overlay."""
    from finally_cli.models.hub import save_model
    from finally_cli.training.config import load_config
    from finally_cli.training.model_setup import build_generator

    save_model(trained, tmp_path / "trained")
    (tmp_path / "overlay.yaml").write_text(overlay)
    sets = [f"init_from={tmp_path / 'trained'}", f"overlays=[{tmp_path / 'overlay.yaml'}]"]
    return build_generator(load_config("finally-small/stage1", sets))


def test_magnitude_features_grow_a_trained_model_without_changing_it(tmp_path: Path) -> None:
    """Adding `magnitude_bins` and a residual GRU layer to a trained model (an overlay on
    init_from) starts from exactly its output; the new parts then learn."""
    trained = create_model(_small(False), seed=5).eval()
    overlay = "spectral_restorer:\n  magnitude_bins: 96\n  residual_gru_layers: 1\n"
    grown = _grown(trained, tmp_path, overlay)
    restorer = grown.spectral_restorer
    assert restorer.magnitude_bins == 96 and restorer.encoder[0].in_channels == 32 + 192 + 96
    waveform = _speechy()
    with torch.no_grad():
        assert torch.equal(grown.eval()(waveform), trained(waveform))
    grown.train()
    target = _speechy() * 0.5
    torch.nn.functional.mse_loss(grown(waveform), target).backward()
    weight_grad = restorer.encoder[0].weight.grad
    assert weight_grad[:, 224:].abs().sum() > 0  # the magnitude channels learn
    assert restorer.residual_projections[0].weight.grad.abs().sum() > 0  # so does the new GRU
    features = restorer.features(torch.stft(waveform[:, 0], 512, 128, return_complex=True,
                                            window=torch.hann_window(512)))  # fmt: skip
    assert features.shape[1] == 320 and torch.isfinite(features).all()


def test_a_backward_gru_grows_a_trained_model_and_lets_a_frame_see_the_future(
    tmp_path: Path,
) -> None:
    """`backward_gru_hidden` grown on a trained model (an overlay on init_from) starts from
    exactly its output; once its projection has learnt, what comes later in the window
    changes the output earlier on, beyond the 2 frames the input conv sees (a file is
    enhanced in whole windows, so the model may look ahead)."""
    trained = create_model(_small(False), seed=5).eval()
    grown = _grown(trained, tmp_path, "spectral_restorer:\n  backward_gru_hidden: 16\n")
    restorer = grown.spectral_restorer
    assert restorer.backward_gru.hidden_size == 16
    waveform = _speechy()
    with torch.no_grad():
        assert torch.equal(grown.eval()(waveform), trained(waveform))
    grown.train()
    torch.nn.functional.mse_loss(grown(waveform), _speechy() * 0.5).backward()
    assert restorer.backward_projection.weight.grad.abs().sum() > 0  # the new layer learns
    with torch.no_grad():
        torch.nn.init.normal_(restorer.backward_projection.weight, std=1.0)
        later = waveform.clone()
        later[..., 12000:] = 0  # change only the last quarter
        early = slice(0, 10000)  # ≥ 15 frames before the change
        grown.eval()
        trained_gap = (trained(waveform) - trained(later))[..., early].abs().max()
        grown_gap = (grown(waveform) - grown(later))[..., early].abs().max()
    assert trained_gap == 0 and grown_gap > 1e-4
    with pytest.raises(ConfigError, match="backward_gru_hidden"):
        SpectralRestorerConfig(enabled=True, backward_gru_hidden=-1)


def test_a_frequency_conv_grows_a_trained_model_and_sees_a_pattern_at_any_pitch(
    tmp_path: Path,
) -> None:
    """`freq_conv_channels` grown on a trained model starts from exactly its output and its
    projection learns; its features shift with the input along frequency (the kernels are
    shared across bins, so a comb at another pitch is the same pattern moved), which the
    input layer's one-weight-per-bin map is not."""
    trained = create_model(_small(False), seed=5).eval()
    grown = _grown(trained, tmp_path, "spectral_restorer:\n  freq_conv_channels: 4\n")
    restorer = grown.spectral_restorer
    assert restorer.freq_projection.in_features == 4 * 32
    waveform = _speechy()
    with torch.no_grad():
        assert torch.equal(grown.eval()(waveform), trained(waveform))
    grown.train()
    torch.nn.functional.mse_loss(grown(waveform), _speechy() * 0.5).backward()
    assert restorer.freq_projection.weight.grad.abs().sum() > 0  # the new branch learns
    assert restorer.freq_conv[0].weight.grad is not None
    # A spectral pattern moved up by 16 bins (500 Hz) gives the first layer's maps moved
    # by 8 rows (its stride halves the axis); the rows themselves differ.
    generator = torch.Generator().manual_seed(0)
    level = torch.rand(1, 1, 256, 40, generator=generator)
    moved = torch.roll(level, 16, dims=2)
    with torch.no_grad():
        maps, maps_moved = restorer.freq_conv[:2](level)[0], restorer.freq_conv[:2](moved)[0]
    assert torch.allclose(maps[:, 20:100], maps_moved[:, 28:108], atol=1e-5)
    assert not torch.allclose(maps[:, 20:100], maps[:, 28:108], atol=1e-2)
    with pytest.raises(ConfigError, match="freq_conv_channels"):
        SpectralRestorerConfig(enabled=True, freq_conv_channels=-1)
    with pytest.raises(ConfigError, match="divisible by 16"):
        SpectralRestorerConfig(enabled=True, n_fft=520, hop=130, freq_conv_channels=4)


def test_a_bin_refiner_grows_a_trained_model_and_gives_each_bin_its_own_gain(
    tmp_path: Path,
) -> None:
    """`bin_refiner_channels` grown on a trained model starts from exactly its output, its
    last layer learns, and once trained it can cut one deep-filtered bin and keep its
    neighbour in the same frame (the heads' one state vector per frame cannot aim at bins
    that way); the bins above the deep filter are left alone."""
    trained = create_model(_small(False), seed=5).eval()
    grown = _grown(trained, tmp_path, "spectral_restorer:\n  bin_refiner_channels: 4\n")
    restorer = grown.spectral_restorer
    waveform = _speechy()
    with torch.no_grad():
        assert torch.equal(grown.eval()(waveform), trained(waveform))
    grown.train()
    torch.nn.functional.mse_loss(grown(waveform), _speechy() * 0.5).backward()
    assert restorer.bin_refiner[-1].weight.grad.abs().sum() > 0  # the new block learns
    # Its gain per bin follows the input's level in that bin: a last layer that reads the
    # input's level map cuts a loud bin beside a quiet one.
    bins = restorer.df_bins
    spec = torch.full((1, bins, 20), 1e-3, dtype=torch.complex64)
    spec[:, 10] = 1.0  # one loud bin
    hidden = torch.zeros(1, 20, restorer.gru.hidden_size)
    with torch.no_grad():
        first, _, last = restorer.bin_refiner
        first.weight.zero_(), first.bias.zero_()
        first.weight[:, 0, 2, 1] = 1.0  # channel c = the input's level at the bin itself
        restorer.bin_activations[0].weight.fill_(1.0)
        restorer.bin_context.weight.zero_(), restorer.bin_context.bias.zero_()
        restorer.bin_refiner[1].weight.zero_(), restorer.bin_refiner[1].bias.zero_()
        restorer.bin_refiner[1].weight[:, :, 2, 1] = torch.eye(4)
        restorer.bin_activations[1].weight.fill_(1.0)
        last.weight.zero_(), last.bias.zero_()
        last.weight[0, :, 1, 1] = -1.0
        refined = restorer.refine_bins(spec, spec.clone(), hidden)
    gain = (refined.abs() / spec.abs())[0, :, 10]
    assert gain[10] < 0.05 and gain[12] > 0.5  # the loud bin cut, its neighbour kept
    with pytest.raises(ConfigError, match="bin_refiner_channels"):
        SpectralRestorerConfig(enabled=True, bin_refiner_channels=-1)


def test_compressed_spectral_loss_is_zero_at_the_target_and_grows_with_noise() -> None:
    from finally_cli.training.losses import CompressedSpectralLoss

    loss = CompressedSpectralLoss()
    clean = _speechy()
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    assert loss(clean, clean) < 1e-6
    assert 0 < loss(clean + 0.01 * noise, clean) < loss(clean + 0.1 * noise, clean)


def test_an_l1_spectral_loss_keeps_doubtful_speech_whole_where_mse_halves_it() -> None:
    """A bin that is speech in 4 of 5 examples and silence in the fifth: the gain g on the
    speech that minimises the squared compressed error is about 0.8^(1/0.3) ≈ 0.48 (−6 dB),
    what the absolute error (`distance="l1"`) chooses is 1, the speech whole."""
    from finally_cli.training.losses import CompressedSpectralLoss

    clean = _speechy()
    targets = torch.cat([clean, clean, clean, clean, torch.zeros_like(clean)])
    gains = torch.linspace(0.2, 1.2, 51)

    def best(distance: str) -> float:
        loss = CompressedSpectralLoss(distance=distance)
        values = [loss(g * clean.expand_as(targets), targets) for g in gains]
        return gains[int(torch.stack(values).argmin())].item()

    assert 0.4 <= best("mse") <= 0.56
    assert best("l1") == pytest.approx(1.0, abs=0.021)
    with pytest.raises(ValueError, match="distance"):
        CompressedSpectralLoss(distance="l2")


def test_speed_perturbation_changes_pitch_and_is_seeded(tmp_path: Path) -> None:
    """data.speed_perturb plays clean segments faster or slower: a 1 kHz tone moves by the
    drawn factor; the same index gives the same segment."""
    import numpy as np
    import soundfile as sf

    from finally_cli.training.data import PairDataset, index_folders
    from finally_cli.training.degradations import DegradationConfig, Degrader

    tone = 0.3 * np.sin(2 * np.pi * 1000 * np.arange(48000 * 3) / 48000)
    sf.write(str(tmp_path / "tone.wav"), tone, 48000)
    clips = index_folders([str(tmp_path)], "clean")
    degrader = Degrader(DegradationConfig())
    plain = PairDataset(clips, degrader, 16000, 1, 8, seed=0)
    fast = PairDataset(clips, degrader, 16000, 1, 8, seed=0, speed_perturb=0.2)

    def peak_hz(index: int, dataset: PairDataset) -> float:
        segment = dataset.clean_segment(np.random.default_rng([0, index]))
        spectrum = np.abs(np.fft.rfft(segment * np.hanning(segment.size)))
        return float(np.fft.rfftfreq(segment.size, 1 / 48000)[np.argmax(spectrum)])

    assert abs(peak_hz(0, plain) - 1000) < 2
    moved = [peak_hz(i, fast) for i in range(6)]
    assert all(800 - 2 <= f <= 1200 + 2 for f in moved)
    assert max(abs(f - 1000) for f in moved) > 20
    assert peak_hz(3, fast) == peak_hz(3, fast)


def test_clean_highpass_takes_rumble_out_of_the_targets_and_keeps_the_voice(
    tmp_path: Path,
) -> None:
    """data.clean_highpass_hz: a clean recording's DC offset and 20 Hz rumble leave the target
    (and the input degraded from it), its 200 Hz voice stays at its level."""
    import numpy as np
    import soundfile as sf

    from finally_cli.training.config import DataConfig
    from finally_cli.training.data import PairDataset, index_folders
    from finally_cli.training.degradations import DegradationConfig, Degrader

    t = np.arange(48000 * 3) / 48000
    voice = 0.2 * np.sin(2 * np.pi * 200 * t)
    sf.write(str(tmp_path / "v.wav"), voice + 0.1 + 0.2 * np.sin(2 * np.pi * 20 * t), 48000)
    clips = index_folders([str(tmp_path)], "clean")
    clean = Degrader(DegradationConfig(p_clean=1.0))
    plain = PairDataset(clips, clean, 16000, 3, 4, seed=0)
    cut = PairDataset(clips, clean, 16000, 3, 4, seed=0, clean_highpass_hz=50.0)

    def below_and_voice(dataset: PairDataset) -> tuple[float, float, float]:
        noisy, target, _ = dataset.pair(1)  # level-normalised: for the input/target match
        _, source = dataset.source_and_target(np.random.default_rng([0, 1]))
        spectrum = np.abs(np.fft.rfft(source))
        freqs = np.fft.rfftfreq(source.size, 1 / 48000)
        low = 20 * np.log10(spectrum[freqs < 40].max() / spectrum.max())
        at_voice = spectrum[np.argmin(np.abs(freqs - 200))]
        return low, at_voice, float(np.corrcoef(noisy, target)[0, 1])

    low_plain, voice_plain, _ = below_and_voice(plain)
    low_cut, voice_cut, agreement = below_and_voice(cut)
    assert low_plain > -6  # offset and rumble are as strong as the voice
    assert low_cut < low_plain - 20
    assert voice_cut == pytest.approx(voice_plain, rel=0.05)
    assert agreement > 0.99  # the clean input is filtered the same way
    with pytest.raises(ConfigError, match="clean_highpass_hz"):
        DataConfig(clean_highpass_hz=-1.0)


def test_second_noise_adds_another_scene_at_the_same_snr() -> None:
    import numpy as np

    from finally_cli.training.degradations import DegradationConfig, Degrader, Sources

    t = np.arange(48000) / 48000
    hum = np.sin(2 * np.pi * 100 * t)
    hiss = np.random.default_rng(0).standard_normal(48000)
    config = DegradationConfig(snr_db=(10.0, 10.0), p_second_noise=1.0)
    degrader = Degrader(config, Sources(noises=[hum, hiss]))
    clean = 0.1 * np.sin(2 * np.pi * 440 * t)
    mixed = 0
    for seed in range(8):
        noisy, label = degrader._noise(clean, np.random.default_rng(seed))
        noise = noisy - clean
        snr = 10 * np.log10(np.sum(clean**2) / np.sum(noise**2))
        assert abs(snr - 10) < 0.2 and label == "noise10dB"
        spectrum = np.abs(np.fft.rfft(noise))
        # Both scenes: the hum's line stands out of the hiss's broadband floor.
        mixed += 5 < spectrum[100] / np.median(spectrum) < 1e4
    assert mixed >= 2


def test_a_recorded_room_changes_the_tail_not_the_level(tmp_path: Path) -> None:
    """A room IR file with a strong tail (+11 dB of energy over its peak, like the recipe's
    rooms) must not make the reverberant input louder than its dry target: the model would
    learn to turn speech down whenever it suspects a room."""
    import numpy as np
    import soundfile as sf

    from finally_cli.training.data import index_folders, load_sources
    from finally_cli.training.degradations import DegradationConfig, Degrader

    rng = np.random.default_rng(0)
    t = np.arange(int(0.5 * 48000)) / 48000
    ir = rng.standard_normal(t.size) * np.exp(-6.9 * t / 0.5)
    ir[0] = np.abs(ir).max() * 1.5
    ir /= np.abs(ir).max()
    assert 10 * np.log10(np.sum(ir**2)) > 8  # as loud as the recipe's rooms
    (tmp_path / "rooms").mkdir()
    sf.write(tmp_path / "rooms" / "hall.wav", ir, 48000)
    sources = load_sources([], index_folders([str(tmp_path / "rooms")], "rooms"), [], 10.0)
    degrader = Degrader(DegradationConfig(p_room=1.0), sources)
    speech = rng.standard_normal(2 * 48000) * np.sin(np.pi * np.arange(2 * 48000) / 9600) ** 2
    wet, label = degrader._room(speech, np.random.default_rng(1))
    assert label == "room" and not np.allclose(wet, speech)
    level_db = 10 * np.log10(np.mean(wet**2) / np.mean(speech**2))
    assert abs(level_db) < 1.5, level_db


def test_models_info_counts_the_restorer_on_the_meta_device() -> None:
    from typer.testing import CliRunner

    from finally_cli.cli.app import app

    for name in ("finally-small", str(Path(__file__).parents[1] / "weights" / "finally-small")):
        result = CliRunner().invoke(app, ["models", "info", name])
        assert result.exit_code == 0, result.output
        assert "spectral_restorer" in result.output and "4.470 M" in result.output


def _trained_filter(seed: int) -> torch.nn.Module:
    """A finally-small generator with a trained-like deep filter: taps far from the identity."""
    trained = create_model(_small(False), seed=seed).eval()
    with torch.no_grad():
        trained.spectral_restorer.df_head.weight.normal_(0, 0.05)
        trained.spectral_restorer.df_head.bias.normal_(0, 0.3)
    return trained


def test_more_deep_filtered_bins_grow_a_trained_model_without_changing_it(tmp_path: Path) -> None:
    """Raising `df_bins` on a trained model (an overlay on init_from) starts from exactly its
    output: the old bins keep their filters, the new ones start as identity filters, and the
    input layer reads the old bins' complex values where they now sit."""
    trained = _trained_filter(seed=5)
    grown = _grown(trained, tmp_path, "spectral_restorer:\n  df_bins: 160\n")
    restorer = grown.spectral_restorer
    assert restorer.df_bins == 160 and restorer.encoder[0].in_channels == 32 + 2 * 160
    noise = torch.randn(1, 1, 16384, generator=torch.Generator().manual_seed(1))
    waveform = _speechy() + 0.02 * noise
    with torch.no_grad():
        assert torch.allclose(grown.eval()(waveform), trained(waveform), atol=1e-6)
    grown.train()
    torch.nn.functional.mse_loss(grown(waveform), _speechy() * 0.5).backward()
    rows = restorer.df_head.weight.grad[96 * 6 :]
    assert rows.abs().sum() > 0  # the new bins' filters learn


@pytest.mark.parametrize(
    ("overlay", "bins", "order", "old_taps"),
    [
        ("df_order: 5", 96, 5, slice(2, 5)),  # two more past frames
        ("df_order: 5\n  df_lookahead: 2\n  df_bins: 128", 128, 5, slice(1, 4)),
    ],
)
def test_more_filter_taps_grow_a_trained_model_without_changing_it(
    tmp_path: Path, overlay: str, bins: int, order: int, old_taps: slice
) -> None:
    """Raising `df_order` (and with it the look-ahead or the bins) on a trained model starts
    from exactly its output: every old tap keeps the frame it read, the new taps start at
    zero and then learn."""
    trained = _trained_filter(seed=6)
    grown = _grown(trained, tmp_path, f"spectral_restorer:\n  {overlay}\n")
    restorer = grown.spectral_restorer
    assert (restorer.df_bins, restorer.df_order) == (bins, order)
    noise = torch.randn(1, 1, 16384, generator=torch.Generator().manual_seed(2))
    waveform = _speechy() + 0.02 * noise
    with torch.no_grad():
        assert torch.allclose(grown.eval()(waveform), trained(waveform), atol=1e-6)
    old_bias = trained.spectral_restorer.df_head.bias.view(96, 3, 2)
    assert torch.equal(restorer.df_head.bias.view(bins, order, 2)[:96, old_taps], old_bias)
    grown.train()
    torch.nn.functional.mse_loss(grown(waveform), _speechy() * 0.5).backward()
    grad = restorer.df_head.weight.grad.view(bins, order, 2, -1)
    new_taps = [k for k in range(order) if k not in range(order)[old_taps]]
    assert grad[:96, new_taps].abs().sum() > 0  # the new taps learn


@pytest.mark.parametrize(
    ("overlay", "bins"),
    [("hidden: 320", 96), ("hidden: 288\n  df_bins: 128\n  df_order: 5", 128)],
)
def test_a_wider_restorer_grows_from_a_trained_model_without_changing_it(
    tmp_path: Path, overlay: str, bins: int
) -> None:
    """Raising `hidden` (alone or with the deep filter) on a trained model starts from exactly
    its output: the old units read no new unit, the heads read none yet, and training then
    gives the new units a say."""
    trained = _trained_filter(seed=7)
    grown = _grown(trained, tmp_path, f"spectral_restorer:\n  {overlay}\n")
    restorer = grown.spectral_restorer
    hidden = restorer.gru.hidden_size
    assert hidden > 256 and restorer.df_bins == bins
    noise = torch.randn(1, 1, 16384, generator=torch.Generator().manual_seed(3))
    waveform = _speechy() + 0.02 * noise
    with torch.no_grad():
        assert torch.allclose(grown.eval()(waveform), trained(waveform), atol=1e-6)
    new_units = restorer.gru.weight_hh_l1.unflatten(0, (3, hidden))[:, 256:]
    assert new_units.abs().sum() > 0  # the new units are random, not dead
    grown.train()
    torch.nn.functional.mse_loss(grown(waveform), _speechy() * 0.5).backward()
    assert restorer.gain_head.weight.grad[:, 256:].abs().sum() > 0  # their outputs learn


@pytest.mark.parametrize(
    ("overlay", "hidden", "channels", "backward"),
    [("hidden: 320", 320, 4, 16), ("bin_refiner_channels: 8", 256, 8, 16),
     ("hidden: 320\n  bin_refiner_channels: 8", 320, 8, 16),
     ("backward_gru_hidden: 24", 256, 4, 24),
     ("hidden: 320\n  backward_gru_hidden: 24", 320, 4, 24)],
)  # fmt: skip
def test_the_shipped_architecture_grows_wider_without_changing_it(
    tmp_path: Path, overlay: str, hidden: int, channels: int, backward: int
) -> None:
    """Raising `hidden`, `backward_gru_hidden` or `bin_refiner_channels` on a model with a
    residual GRU layer, a backward GRU and a bin refiner (the shipped finally-small's layout)
    starts from exactly its output, and the new units and channels then learn."""
    from finally_cli.models.hub import save_model
    from finally_cli.training.config import load_config
    from finally_cli.training.model_setup import build_generator

    config = _small(False)
    parts = {"residual_gru_layers": 1, "backward_gru_hidden": 16, "bin_refiner_channels": 4}
    config = replace(config, spectral_restorer=replace(config.spectral_restorer, **parts))
    trained = create_model(config, seed=9).eval()
    with (
        torch.no_grad()
    ):  # trained-like: the zero-initialised projections and refiner say something
        restorer = trained.spectral_restorer
        for module in (restorer.residual_projections[0], restorer.backward_projection,
                       restorer.bin_refiner[-1]):  # fmt: skip
            module.weight.normal_(0, 0.05)
            module.bias.normal_(0, 0.05)
    trained_dir = tmp_path / "trained"
    save_model(trained, trained_dir)
    (tmp_path / "overlay.yaml").write_text(f"spectral_restorer:\n  {overlay}\n")
    sets = [f"init_from={trained_dir}", f"overlays=[{tmp_path / 'overlay.yaml'}]"]
    grown = build_generator(load_config("finally-small/stage1", sets))
    restorer = grown.spectral_restorer
    assert restorer.gru.hidden_size == restorer.residual_grus[0].hidden_size == hidden
    assert restorer.backward_gru.input_size == hidden == restorer.bin_context.in_features
    assert restorer.backward_gru.hidden_size == backward
    assert restorer.bin_refiner[1].out_channels == channels
    waveform = _speechy() + 0.02 * torch.randn(
        1, 1, 16384, generator=torch.Generator().manual_seed(3)
    )
    with torch.no_grad():
        assert torch.allclose(grown.eval()(waveform), trained(waveform), atol=1e-6)
    grown.train()
    torch.nn.functional.mse_loss(grown(waveform), _speechy() * 0.5).backward()
    if hidden > 256:
        assert restorer.gain_head.weight.grad[:, 256:].abs().sum() > 0
        assert restorer.bin_context.weight.grad[:4, 256:].abs().sum() > 0
        assert restorer.residual_projections[0].weight.grad[:256, 256:].abs().sum() > 0
    if channels > 4:  # the last layer learns to read the new channels
        assert restorer.bin_refiner[2].weight.grad[:, 4:].abs().sum() > 0
    if backward > 16:  # the stack learns to read the backward GRU's new units
        assert restorer.backward_projection.weight.grad[:, 16:].abs().sum() > 0


def test_floor_features_read_a_bands_rise_above_its_recent_floor(tmp_path: Path) -> None:
    """`floor_frames`: a band that holds its level reads 0 dB above its floor, one that jumps
    by 30 dB reads ≈ 30 dB until the jump leaves the window; a trained model grown by them
    (`init_from`) starts from exactly its output."""
    restorer = SpectralRestorer(floor_frames=50)
    levels = torch.full((1, 32, 200), -40.0)
    levels[:, 7, 100:] = -10.0
    above = restorer.above_floor(levels)
    assert above[0, 3].abs().max() < 1e-4  # steady: at its floor
    assert torch.allclose(above[0, 7, 101:148], torch.full((47,), 30.0))
    assert above[0, 7, 151:].abs().max() < 1e-4  # 50 frames later the floor has risen too
    trained = create_model(_small(False), seed=8).eval()
    grown = _grown(trained, tmp_path, "spectral_restorer:\n  floor_frames: 125\n")
    assert grown.spectral_restorer.encoder[0].in_channels == 32 + 2 * 96 + 32
    waveform = _speechy() + 0.02 * torch.randn(
        1, 1, 16384, generator=torch.Generator().manual_seed(4)
    )
    with torch.no_grad():
        assert torch.equal(grown.eval()(waveform), trained(waveform))
