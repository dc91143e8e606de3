"""Generator blocks: shapes, gradients, parameter counts, presets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finally_cli.errors import ConfigError
from finally_cli.models.config import GeneratorConfig, preset
from finally_cli.models.hub import create_model


@pytest.mark.parametrize("samples", [1, 255, 4096, 5003, 16000])
def test_tiny_output_is_three_times_longer(samples: int) -> None:
    model = create_model("tiny").eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, samples) * 0.1)
    assert out.shape == (2, 1, 3 * samples)
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0


def test_small_shapes_and_backward() -> None:
    model = create_model("finally-small")
    waveform = torch.randn(2, 1, 8192 + 77) * 0.1
    out = model(waveform)
    assert out.shape == (2, 1, 3 * (8192 + 77))
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_ssl_branch_is_frozen_and_in_eval_mode() -> None:
    model = create_model("tiny").train()
    assert model.ssl is not None
    assert not model.ssl.model.training
    assert all(not p.requires_grad for p in model.ssl.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("ssl."))


def test_16khz_stage_config_has_no_upsampling() -> None:
    config = preset("tiny")
    config = config.replace(upsample_wave_unet=config.upsample_wave_unet.__class__(enabled=False))
    model = create_model(config).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 4096)).shape == (1, 1, 4096)
    assert config.output_sample_rate == 16000


def test_only_a_tanh_output_asks_the_engine_for_a_peak_ceiling() -> None:
    from finally_cli.audio.level import PEAK_LIMIT

    assert create_model("tiny").peak_limit == PEAK_LIMIT  # the HiFi++ chain ends in tanh
    restorer = preset("finally-small")
    assert restorer.spectral_restorer.enabled
    upsampled = restorer.replace(
        upsample_wave_unet=restorer.upsample_wave_unet.__class__(enabled=True)
    )
    assert create_model(upsampled).peak_limit == PEAK_LIMIT  # so does the upsampler
    plain = restorer.replace(
        upsample_wave_unet=restorer.upsample_wave_unet.__class__(enabled=False)
    )
    assert create_model(plain).peak_limit is None  # linear in its input's scale


def test_seeded_creation_is_reproducible() -> None:
    a = create_model("tiny", seed=3).state_dict()
    b = create_model("tiny", seed=3).state_dict()
    c = create_model("tiny", seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_remove_weight_norm_keeps_outputs() -> None:
    model = create_model("finally-small").eval()
    waveform = torch.randn(1, 1, 4096) * 0.1
    with torch.no_grad():
        before = model(waveform)
        model.remove_weight_norm()
        after = model(waveform)
    assert torch.allclose(before, after, atol=1e-5)


def test_large_parameter_counts_on_meta_device() -> None:
    from finally_cli.cli.models import parameter_report

    report = parameter_report(preset("finally-large"))
    assert 315e6 < report["frozen"] < 316e6  # WavLM-Large
    assert report["blocks"]["spectral_unet"]["parameters"] == pytest.approx(4.5e6, rel=0.01)
    assert report["blocks"]["upsampler"]["parameters"] == pytest.approx(13.9e6, rel=0.01)
    assert 70e6 < report["trainable"] < 150e6


def test_config_round_trip_and_unknown_keys() -> None:
    config = preset("finally-large")
    assert GeneratorConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown keys"):
        GeneratorConfig.from_dict({"wave_unet": {"block_widths": [4], "colour": 1}})
    with pytest.raises(ConfigError, match="upsampler.rates"):
        GeneratorConfig.from_dict({"upsampler": {"rates": [8, 8, 2], "kernel_sizes": [16, 16, 4]}})
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("huge")


# Output slices of seeded random models, recorded with torch 2.13.0 on CPU: a change here means
# the architecture or its initialisation changed (old checkpoints would no longer load the same).
GOLDEN = {
    "tiny": [-0.497012, -0.188162, -0.542378, -0.49664, -0.186841, -0.541469],
    "finally-small-hifi": [-0.788907, -0.772877, -0.741516, -0.746402, -0.714525, -0.699292],
    "hifipp": [0.487259, 0.617228, 0.457888, 0.485784, 0.580374, 0.477683],
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_output_slice(name: str) -> None:
    model = create_model(name, seed=0).eval()
    waveform = torch.randn(1, 1, 2048, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        out = model(waveform)[0, 0, 1000:1006]
    assert out.tolist() == pytest.approx(GOLDEN[name], abs=1e-4)


def _stage(name: str, enabled: bool):  # noqa: ANN202
    from dataclasses import replace

    config = preset(name)
    return replace(config, upsample_wave_unet=replace(config.upsample_wave_unet, enabled=enabled))


def test_identity_init_passes_the_input_through_at_16k() -> None:
    model = create_model(_stage("finally-small-hifi", False), seed=3).identity_init_().eval()
    waveform = torch.randn(2, 1, 8192, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        out = model(waveform)
    assert torch.allclose(out, torch.tanh(waveform), atol=1e-5)


def test_identity_init_at_48k_is_the_band_limited_interpolation() -> None:
    model = create_model(_stage("finally-small-hifi", True), seed=3).identity_init_().eval()
    t = torch.arange(16384) / 16000
    sine = (0.3 * torch.sin(2 * torch.pi * 1000 * t)).view(1, 1, -1)
    with torch.no_grad():
        out = model(sine)[0, 0]
    t48 = torch.arange(out.numel()) / 48000
    expected = torch.tanh(0.3 * torch.sin(2 * torch.pi * 1000 * t48))
    middle = slice(4800, -4800)  # away from the edges' zero padding
    error = (out[middle] - expected[middle]).square().sum()
    snr = 10 * torch.log10(expected[middle].square().sum() / error)
    assert snr > 40


def test_identity_init_keeps_gradients_for_the_zeroed_convs() -> None:
    model = create_model(_stage("finally-small-hifi", True), seed=3).identity_init_()
    waveform = torch.randn(1, 1, 8192, generator=torch.Generator().manual_seed(1)) * 0.1
    model(waveform).square().mean().backward()
    for conv in (
        model.wave_unet.unet.conv_out,
        model.spectral_mask.unet.conv_out,
        model.upsample_wave_unet.upsample,
    ):
        assert conv.parametrizations.weight.original0.grad.abs().sum() > 0


def test_stage3_starts_from_the_stage2_output(tmp_path: Path) -> None:
    """A residual stage 3 keeps stage 2's output head: its first output is stage 2's, at 48 kHz."""
    from finally_cli.models.hub import save_model
    from finally_cli.training.config import load_config
    from finally_cli.training.model_setup import build_generator

    stage2 = create_model(_stage("finally-small-hifi", False), seed=5).eval()
    save_model(stage2, tmp_path / "s2")
    stage3 = build_generator(
        load_config("finally-small/stage3", [f"init_from={tmp_path / 's2'}"])
    ).eval()
    t = torch.arange(16384) / 16000
    speechy = 0.3 * torch.sin(2 * torch.pi * 220 * t) * torch.sin(2 * torch.pi * 3 * t)
    with torch.no_grad():
        out16 = stage2(speechy.view(1, 1, -1))[0, 0]
        out48 = stage3(speechy.view(1, 1, -1))[0, 0]
    assert out48.numel() == 3 * out16.numel()

    def below_6k(x: torch.Tensor, rate: int) -> torch.Tensor:
        spectrum = torch.fft.rfft(x.double())
        spectrum[torch.fft.rfftfreq(x.numel(), 1 / rate) > 6000] = 0
        return torch.fft.irfft(spectrum, x.numel())[:: rate // 16000][1600:-1600]

    want, got = below_6k(out16, 16000), below_6k(out48, 48000)
    assert 10 * torch.log10(want.square().sum() / (got - want).square().sum()) > 30


def test_residual_upsampler_is_config_driven() -> None:
    assert preset("finally-small-hifi").upsample_wave_unet.residual
    assert not preset("finally-large").upsample_wave_unet.residual
    plain = create_model(_stage("hifipp", True))
    assert not plain.upsample_wave_unet.residual
