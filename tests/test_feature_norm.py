"""SSL feature normalisation: clean statistics out, identity on clean input, gradients, I/O."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from finally_cli.cli.app import app
from finally_cli.errors import ConfigError
from finally_cli.models.config import apply_overlay, preset
from finally_cli.models.feature_norm import FeatureNormalizer, normalise
from finally_cli.models.hub import create_model, load_model, save_model
from tests.conftest import speechlike, write

runner = CliRunner()
ABLATIONS = Path(__file__).parents[1] / "finally_cli" / "models" / "ablations"


def tiny_with_norm(layers: tuple[str, ...] = ("conv", "1"), finetune: bool = True):  # noqa: ANN201
    config = preset("tiny")
    config = replace(config, ssl=replace(config.ssl, normalize_layers=layers, finetune=finetune))
    return create_model(config)


def random_stats(norm: FeatureNormalizer, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    stats = {}
    for name in norm.layers:
        dim = getattr(norm, f"mean_{name}").numel()
        stats[f"mean_{name}"] = torch.randn(dim, generator=g)
        stats[f"std_{name}"] = torch.rand(dim, generator=g) + 0.5
    return stats


def captured(model, waveform: torch.Tensor) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """Normalised conv and layer-1 outputs, read by hooks registered after the normaliser's."""
    out: dict[str, torch.Tensor] = {}
    wavlm = model.ssl.model
    handles = [
        wavlm.feature_extractor.register_forward_hook(lambda m, i, o: out.update(conv=o)),
        wavlm.encoder.layers[0].register_forward_hook(lambda m, i, o: out.update(layer1=o[0])),
    ]
    model.ssl(waveform)
    for handle in handles:
        handle.remove()
    return out


def test_outputs_carry_the_clean_statistics_for_any_input() -> None:
    model = tiny_with_norm()
    stats = random_stats(model.ssl.norm)
    model.ssl.norm.load_statistics(stats)
    for scale in (0.01, 1.0, 30.0):
        waveform = torch.randn(2, 16000) * scale + 0.3
        feats = captured(model, waveform)
        conv, layer1 = feats["conv"], feats["layer1"]  # [b, c, t], [b, t, h]
        assert torch.allclose(conv.mean(2), stats["mean_conv"].expand(2, -1), atol=1e-4)
        assert torch.allclose(
            conv.std(2, unbiased=False), stats["std_conv"].expand(2, -1), atol=1e-4
        )
        assert torch.allclose(layer1.mean(1), stats["mean_1"].expand(2, -1), atol=1e-4)
        assert torch.allclose(
            layer1.std(1, unbiased=False), stats["std_1"].expand(2, -1), atol=1e-4
        )


def test_identity_when_input_already_has_the_clean_statistics() -> None:
    features = torch.randn(3, 16, 40)  # [b, c, t]
    mean = features.mean(2)[0]
    std = features.std(2, unbiased=False)[0]
    out = normalise(features[:1], mean, std, channel_dim=1)
    assert torch.allclose(out, features[:1], atol=1e-4)


def test_gradients_flow_through_normalisation_when_finetuning() -> None:
    model = tiny_with_norm(finetune=True).train()
    assert model.ssl.model.training
    waveform = torch.randn(1, 1, 4096) * 0.1
    model(waveform).square().mean().backward()
    first_conv = model.ssl.model.feature_extractor.conv_layers[0].conv.weight
    assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0


def test_statistics_saved_and_loaded_with_checkpoint(tmp_path: Path) -> None:
    model = tiny_with_norm(finetune=False)
    stats = random_stats(model.ssl.norm, seed=4)
    model.ssl.norm.load_statistics(stats)
    save_model(model, tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"))
    assert torch.equal(loaded.ssl.norm.mean_conv, stats["mean_conv"])
    assert torch.equal(loaded.ssl.norm.std_1, stats["std_1"])
    waveform = torch.randn(1, 1, 4096) * 0.1
    model.remove_weight_norm()
    with torch.no_grad():
        assert torch.equal(model.eval()(waveform), loaded(waveform))


def test_ssl_stats_cli_and_create_with_overlay(tmp_path: Path, tiny_dir: Path) -> None:
    clean = tmp_path / "clean"
    clean.mkdir()
    for i in range(3):
        write(clean / f"{i}.wav", speechlike(1.5, 22050, seed=i), 22050)
    result = runner.invoke(
        app,
        [
            "train",
            "ssl-stats",
            "--clean",
            str(clean),
            "--model",
            str(tiny_dir),
            "-o",
            str(tmp_path / "stats.safetensors"),
            "--device",
            "cpu",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    stats = load_file(str(tmp_path / "stats.safetensors"))
    assert set(stats) == {"mean_conv", "std_conv", "mean_1", "std_1", "mean_2", "std_2"}
    assert all(torch.isfinite(v).all() for v in stats.values())
    assert (stats["std_conv"] > 0).all()
    overlay = tmp_path / "norm.yaml"
    overlay.write_text("ssl:\n  normalize_layers: [conv, 2]\n  finetune: true\n")
    result = runner.invoke(
        app,
        [
            "models",
            "create",
            "tiny",
            "-o",
            str(tmp_path / "m"),
            "--overlay",
            str(overlay),
            "--ssl-stats",
            str(tmp_path / "stats.safetensors"),
        ],
    )
    assert result.exit_code == 0, result.output
    model = load_model(str(tmp_path / "m"))
    assert model.config.ssl.normalize_layers == ("conv", "2")
    assert torch.equal(model.ssl.norm.mean_2, stats["mean_2"])


def test_ablation_overlays_apply_to_the_large_preset() -> None:
    large = preset("finally-large")
    layers = {
        p.stem: apply_overlay(large, p).ssl.normalize_layers
        for p in sorted(ABLATIONS.glob("*.yaml"))
    }
    assert layers == {
        "ssl-norm-off": (),
        "ssl-norm-conv": ("conv",),
        "ssl-norm-conv-layers3": ("conv", "1", "2", "3"),
        "ssl-norm-conv-layers6": ("conv", "1", "2", "3", "4", "5", "6"),
    }
    with pytest.raises(ConfigError, match="normalize_layers"):
        apply_overlay(preset("tiny"), ABLATIONS / "ssl-norm-conv-layers3.yaml")


def test_stats_from_pretrained_model_are_the_feature_moments() -> None:
    from finally_cli.training.ssl_stats import ssl_statistics

    model = create_model("tiny").ssl.model
    audio = [speechlike(2.0, 16000, seed=s)[:, 0] for s in range(2)]
    stats = ssl_statistics(model, audio)
    conv = torch.cat(
        [
            model.feature_extractor(torch.from_numpy((a - a.mean()) / (a.std() + 1e-7))[None])[0].T
            for a in audio
        ]
    )
    assert torch.allclose(stats["mean_conv"], conv.mean(0), atol=1e-5)
    assert np.allclose(stats["std_conv"].numpy(), conv.std(0, unbiased=False).numpy(), atol=1e-4)
