"""Speed and memory benchmark of the full file → file engine on synthetic audio."""

from __future__ import annotations

import platform
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf

from finally_cli.inference.enhancer import Enhancer, EnhancerOptions
from finally_cli.models.generator import FinallyGenerator

BENCH_RATE = 48000


def write_speechlike(
    path: Path, seconds: float, sample_rate: int = BENCH_RATE, seed: int = 0
) -> None:
    """Write syllable-rate modulated harmonic + noise audio, block by block (bounded memory)."""
    rng = np.random.default_rng(seed)
    total = int(round(seconds * sample_rate))
    block = sample_rate * 10
    with sf.SoundFile(str(path), "w", samplerate=sample_rate, channels=1, subtype="PCM_16") as f:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / sample_rate
            f0 = 120 + 30 * np.sin(2 * np.pi * 0.3 * t)
            voiced = sum(
                np.sin(2 * np.pi * k * np.cumsum(f0) / sample_rate) / k for k in range(1, 8)
            )
            envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
            noise = rng.standard_normal(n) * 0.05
            f.write((0.1 * voiced * envelope + noise).astype(np.float32))


def peak_rss_mb() -> float:
    scale = 1024 if platform.system() != "Darwin" else 1
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def bench_model(spec: str, revision: str | None = None, offline: bool = False) -> FinallyGenerator:
    """A model for timing: trained weights when present, else a random init of the preset."""
    from finally_cli.errors import CheckpointError
    from finally_cli.models.config import PRESETS, preset
    from finally_cli.models.hub import create_model, load_model

    try:
        return load_model(spec, revision=revision, offline=offline)
    except CheckpointError:
        if spec not in PRESETS:
            raise
    config = preset(spec)
    if config.ssl.enabled:  # speed does not depend on the values of the frozen weights
        config = replace(config, ssl=replace(config.ssl, weights="random"))
    model = create_model(config)
    model.remove_weight_norm()
    return model.eval().requires_grad_(False)


def count_flops(enhancer: Enhancer) -> int:
    """Forward FLOPs of one batch-1 window of the enhancer's chunk length."""
    from torch.utils.flop_counter import FlopCounterMode

    window = np.zeros((1, enhancer.spec.window), dtype=np.float32)
    with FlopCounterMode(display=False) as counter:
        enhancer.run_windows(window)
    return int(counter.get_total_flops())


def run_bench(
    model: FinallyGenerator,
    options: EnhancerOptions,
    seconds: float,
    short_files: int = 0,
    flops: bool = True,
    baselines: list[str] | tuple[str, ...] = (),
) -> dict:
    """Time `seconds` of audio through Enhancer (file → file); optionally as many short files.

    `baselines` (evaluation.baselines.RUNNERS: noisereduce, rnnoise, deepfilternet3, nsnet2,
    dtln) are timed on the same long file in the same run, also file → file (read, process,
    write), so `speedup_vs_<name>` is a same-machine ratio.

    Returns a dict with RTF, throughput, peak memory and FLOPs per audio second.
    """
    import torch

    options = replace(options, overwrite=True)
    enhancer = Enhancer(model, options)
    result: dict = {
        "model": model.config.name,
        "device": str(enhancer.device),
        "device_name": _device_name(enhancer.device),
        "precision": options.precision,
        "threads": torch.get_num_threads(),
        "batch_size": enhancer.batch_size,
        "workers": enhancer.workers,
        "chunk_seconds": enhancer.spec.window_seconds,
        "overlap_seconds": enhancer.spec.overlap_seconds,
        "audio_seconds": seconds,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    with tempfile.TemporaryDirectory(prefix="finally-bench-") as tmp:
        folder = Path(tmp)
        warm = folder / "warmup.wav"
        write_speechlike(warm, min(seconds, 2 * enhancer.spec.window_seconds))
        enhancer.enhance_file(warm, folder / "warmup_out.wav")
        if enhancer.device.type == "cuda":
            torch.cuda.synchronize(enhancer.device)
            torch.cuda.reset_peak_memory_stats(enhancer.device)
        long_in = folder / "long.wav"
        write_speechlike(long_in, seconds)
        start = time.perf_counter()
        enhancer.enhance_file(long_in, folder / "long_out.wav")
        if enhancer.device.type == "cuda":
            torch.cuda.synchronize(enhancer.device)
        elapsed = time.perf_counter() - start
        result.update(
            seconds_taken=elapsed,
            rtf=elapsed / seconds,
            audio_seconds_per_second=seconds / elapsed,
            peak_rss_mb=peak_rss_mb(),
        )
        if enhancer.device.type == "cuda":
            result["peak_gpu_mb"] = torch.cuda.max_memory_allocated(enhancer.device) / 2**20
        for name in baselines:
            taken = _time_baseline(name, long_in, folder / f"{name}_out.wav")
            result[f"{name}_rtf"] = taken / seconds
            result[f"speedup_vs_{name}"] = taken / elapsed
        long_in.unlink()
        if short_files:
            short_dir = folder / "short"
            short_dir.mkdir()
            each = seconds / short_files
            pairs = []
            for i in range(short_files):
                path = short_dir / f"{i:05d}.wav"
                write_speechlike(path, each, seed=i + 1)
                pairs.append((path, folder / "short_out" / path.name))
            start = time.perf_counter()
            outcomes = enhancer.enhance_files(pairs)
            if enhancer.device.type == "cuda":
                torch.cuda.synchronize(enhancer.device)
            short_elapsed = time.perf_counter() - start
            result.update(
                short_files=short_files,
                short_file_seconds=each,
                short_seconds_taken=short_elapsed,
                short_failed=sum(o.status != "ok" for o in outcomes),
                short_vs_long_throughput=elapsed / short_elapsed,
            )
    if flops:
        window_flops = count_flops(enhancer)
        window_seconds = enhancer.spec.window_seconds
        result["flops_per_window"] = window_flops
        result["flops_per_audio_second"] = window_flops / window_seconds
        result["achieved_tflops"] = (window_flops / window_seconds) * seconds / elapsed / 1e12
    return result


def _time_baseline(name: str, source: Path, target: Path) -> float:
    """Seconds a baseline takes file → file on `source` (after a 1 s warm-up call).

    The warm-up loads what a run loads once (onnxruntime sessions); what a peer must build per
    file (DeepFilterNet3's state, ≈ 0.4 s) stays in the timing.
    """
    from finally_cli.audio.io import load_mono
    from finally_cli.evaluation.baselines import RUNNERS

    RUNNERS[name](np.zeros(BENCH_RATE, dtype=np.float32), BENCH_RATE)
    start = time.perf_counter()
    audio, rate = load_mono(source)
    result, out_rate = RUNNERS[name](audio, rate)
    sf.write(str(target), result, out_rate, subtype="PCM_16")
    return time.perf_counter() - start


def _device_name(device) -> str:  # noqa: ANN001
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()
