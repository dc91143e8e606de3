"""Feature-space probing: a known answer on synthetic tones; SSL layers end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from finally_cli.cli.app import app
from finally_cli.probing.extractors import parse_extractors
from finally_cli.probing.groups import harmonic_tones
from finally_cli.probing.probe import probe
from finally_cli.probing.rules import mix_at_snr, synthetic_noise
from tests.conftest import write

runner = CliRunner()


def test_tones_stft_separates_groups_and_waveform_does_not() -> None:
    groups = harmonic_tones(groups=6, per_group=8, segment_seconds=0.5, seed=1)
    rows = {
        r["extractor"]: r
        for r in probe(
            groups, parse_extractors(["waveform", "stft"]), synthetic_noise(8, 8000, seed=1)
        )
    }
    assert rows["stft"]["rand_index"] >= 0.95
    assert rows["waveform"]["rand_index"] < rows["stft"]["rand_index"] - 0.3
    assert rows["stft"]["snr_score"] > 0


def test_mix_at_snr_hits_the_requested_snr() -> None:
    rng = np.random.default_rng(0)
    clean, noise = rng.standard_normal(16000), rng.standard_normal(16000) * 3
    noisy = mix_at_snr(clean, noise, 12.5)
    measured = 10 * np.log10(np.sum(clean**2) / np.sum((noisy - clean) ** 2))
    assert measured == pytest.approx(12.5, abs=1e-3)


@pytest.fixture(scope="module")
def tiny_wavlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from finally_cli.models.config import WAVLM_TINY_ARCH
    from finally_cli.models.hub import create_model

    folder = tmp_path_factory.mktemp("ssl") / "tiny-wavlm"
    model = create_model("tiny").ssl.model
    assert model.config.num_hidden_layers == WAVLM_TINY_ARCH["num_hidden_layers"]
    model.save_pretrained(folder)
    return folder


def test_probe_cli_on_tiny_wavlm_all_layers(tmp_path: Path, tiny_wavlm: Path) -> None:
    result = runner.invoke(
        app,
        [
            "probe-features",
            "--generate",
            "tones",
            "--groups",
            "4",
            "--per-group",
            "5",
            "--extractor",
            "stft",
            "--extractor",
            f"{tiny_wavlm}:all",
            "--offline",
            "--json",
            str(tmp_path / "p.json"),
            "--plot",
            str(tmp_path / "heat.png"),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "p.json").read_text())
    names = [r["extractor"] for r in doc["results"]]
    assert names == ["stft"] + [f"{tiny_wavlm}:{n}" for n in ("conv", "0", "1", "2")]
    for row in doc["results"]:
        assert 0 <= row["rand_index"] <= 1 and -1 <= row["snr_score"] <= 1
        assert set(row) == {"extractor", "dims", "rand_index", "adjusted_rand_index", "snr_score"}
    assert doc["segments"] == 20 and len(doc["groups"]) == 4
    assert (tmp_path / "heat.png").stat().st_size > 1000


def test_probe_from_folders_and_errors(tmp_path: Path) -> None:
    groups = harmonic_tones(groups=3, per_group=4, segment_seconds=0.5, seed=2)
    for i, (segment, label) in enumerate(zip(groups.segments, groups.labels)):
        folder = tmp_path / "g" / groups.names[label]
        folder.mkdir(parents=True, exist_ok=True)
        write(folder / f"{i}.wav", segment, 16000)
    result = runner.invoke(app, ["probe-features", str(tmp_path / "g"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "3 groups × 12 segments" in result.stdout
    result = runner.invoke(app, ["probe-features", "--generate", "tones", "--extractor", "nope"])
    assert result.exit_code == 2 and "--extractor 'nope'" in result.stderr
    result = runner.invoke(app, ["probe-features"])
    assert result.exit_code == 2


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_tts_groups_have_equal_lengths() -> None:
    from finally_cli.probing.groups import from_tts

    groups = from_tts(groups=2, per_group=3, segment_seconds=0.5)
    assert groups.segments.shape == (6, 8000)
    assert np.all(np.abs(groups.segments).max(axis=1) > 0.01)
