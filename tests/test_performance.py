"""Fast paths: per-block profile, bf16 accuracy, compiled/CUDA paths (skipped without CUDA)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from finally_cli.cli.app import app
from finally_cli.inference.enhancer import Enhancer, EnhancerOptions
from tests.conftest import snr_db, speechlike

runner = CliRunner()


def test_bench_blocks_reports_costs_and_floor() -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            "--model",
            "tiny",
            "--device",
            "cpu",
            "--seconds",
            "2",
            "--chunk-seconds",
            "1.024",
            "--overlap-seconds",
            "0.25",
            "--blocks",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    blocks = report["blocks"]
    assert set(blocks["per_block"]) >= {
        "spectral_unet",
        "ssl",
        "upsampler",
        "wave_unet",
        "spectral_mask",
        "upsample_wave_unet",
    }
    total = sum(b["gflop_per_audio_second"] for b in blocks["per_block"].values())
    # The blocks hold all FLOPs but the log-mel front-end's.
    assert 0.8 * report["flops_per_audio_second"] <= total * 1e9 <= report["flops_per_audio_second"]
    assert blocks["matmul_gflops"] > 0 and blocks["floor_rtf"] > 0
    assert report["rtf"] > blocks["compute_floor_rtf"]


def test_bench_times_a_baseline_in_the_same_run() -> None:
    pytest.importorskip("pyrnnoise")
    args = ["bench", "--model", "tiny", "--device", "cpu", "--seconds", "3", "--no-flops"]
    result = runner.invoke(app, [*args, "--baseline", "rnnoise", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["rnnoise_rtf"] > 0
    assert report["speedup_vs_rnnoise"] == pytest.approx(
        report["rnnoise_rtf"] / report["rtf"], rel=1e-6
    )
    bad = runner.invoke(app, [*args, "--baseline", "deepfilternet"])
    assert bad.exit_code == 2 and "deepfilternet" in bad.stderr


def test_bf16_output_close_to_fp32(small_model) -> None:  # noqa: ANN001
    audio = speechlike(0.6, 16000)[:, 0]
    ref = Enhancer(small_model, EnhancerOptions(device="cpu")).enhance_array(audio, 16000)
    fast = Enhancer(small_model, EnhancerOptions(device="cpu", precision="bf16")).enhance_array(
        audio, 16000
    )
    relative = np.linalg.norm(fast - ref) / np.linalg.norm(ref)
    assert relative < 2e-2  # bf16 keeps 8 mantissa bits; STFT and mask stay fp32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_compiled_matches_eager(small_model) -> None:  # noqa: ANN001
    audio = speechlike(12.0, 16000)[:, 0]
    eager = Enhancer(small_model, EnhancerOptions(device="cuda")).enhance_array(audio, 16000)
    compiled = Enhancer(small_model, EnhancerOptions(device="cuda", compile=True)).enhance_array(
        audio, 16000
    )
    assert snr_db(eager, compiled) > 50


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_auto_batch_size_fits(small_model) -> None:  # noqa: ANN001
    enhancer = Enhancer(small_model, EnhancerOptions(device="cuda"))
    assert 1 <= enhancer.batch_size <= 64
