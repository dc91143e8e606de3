"""Per-block cost of the generator: FLOPs, bytes moved, time, and the hardware floor."""

from __future__ import annotations

import time

import torch

from finally_cli.models.generator import FinallyGenerator


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def block_costs(
    model: FinallyGenerator,
    samples: int,
    batch: int = 1,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    repeats: int = 3,
) -> dict[str, dict[str, float]]:
    """FLOPs, bytes (weights + inputs + outputs) and seconds per block for one forward.

    Args:
        model: the generator (eval mode).
        samples: 16 kHz window length.
        batch: windows per forward.
        repeats: timed forwards (after one warm-up); the median is reported.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from finally_cli.inference.device import autocast

    device = torch.device(device)
    model = model.to(device).eval()
    blocks = model.blocks()
    stats = {name: {"flops": 0.0, "bytes": 0.0, "seconds": []} for name in blocks}
    starts: dict[str, float] = {}
    handles = []

    def nbytes(value: object) -> int:
        if torch.is_tensor(value):
            return value.numel() * value.element_size()
        if isinstance(value, (tuple, list)):
            return sum(nbytes(v) for v in value)
        if hasattr(value, "to_tuple"):
            return nbytes(value.to_tuple())
        return 0

    for name, block in blocks.items():
        weights = sum(p.numel() * p.element_size() for p in block.parameters())

        def pre(module, inputs, name=name):  # noqa: ANN001, ANN202
            _sync(device)
            starts[name] = time.perf_counter()

        def post(module, inputs, output, name=name, weights=weights):  # noqa: ANN001, ANN202
            _sync(device)
            stats[name]["seconds"].append(time.perf_counter() - starts[name])
            stats[name]["bytes"] = float(weights + nbytes(inputs) + nbytes(output))

        handles.append(block.register_forward_pre_hook(pre))
        handles.append(block.register_forward_hook(post))
    waveform = torch.zeros(batch, 1, samples, device=device)
    try:
        with torch.inference_mode(), autocast(precision, device):
            model(waveform)  # warm-up
            for entry in stats.values():
                entry["seconds"] = []
            for _ in range(repeats):
                model(waveform)
            with FlopCounterMode(display=False) as counter:
                model(waveform)
    finally:
        for handle in handles:
            handle.remove()
    per_module = counter.get_flop_counts()
    out = {}
    for name, entry in stats.items():
        seconds = sorted(entry["seconds"])
        flops = 0
        for module_name, counts in per_module.items():
            if module_name.split(".")[-1] == name or module_name.endswith(f".{name}"):
                flops = max(flops, sum(counts.values()))
        out[name] = {
            "flops": float(flops),
            "bytes": entry["bytes"],
            "seconds": seconds[len(seconds) // 2] if seconds else 0.0,
        }
    return out


def matmul_rate(
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    size: int = 2048,
    repeats: int = 5,
) -> float:
    """Measured dense matmul rate in FLOP/s."""
    device = torch.device(device)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.mm(a, b)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def copy_bandwidth(
    device: torch.device | str = "cpu", megabytes: int = 256, repeats: int = 5
) -> float:
    """Measured device-memory copy bandwidth in bytes/s (read + write counted)."""
    device = torch.device(device)
    src = torch.empty(megabytes * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    _sync(device)
    return 2 * src.numel() * 4 * repeats / (time.perf_counter() - start)


def hardware_floor(model: FinallyGenerator, bench: dict) -> dict:
    """Per-block costs per audio second and the RTF floor the measured hardware allows.

    Bytes are those crossing block boundaries plus weights (a lower bound: activations
    inside a block also move).
    """
    import torch

    from finally_cli.inference.device import PRECISIONS

    device = torch.device(bench["device"])
    rate = model.config.input_sample_rate
    samples = int(round(bench["chunk_seconds"] * rate))
    window_seconds = samples / rate
    costs = block_costs(model, samples, 1, device, bench["precision"])
    dtype = PRECISIONS[bench["precision"]]
    peak = matmul_rate(device, dtype if device.type == "cuda" else torch.float32)
    bandwidth = copy_bandwidth(device)
    flops = sum(c["flops"] for c in costs.values()) / window_seconds
    moved = sum(c["bytes"] for c in costs.values()) / window_seconds
    return {
        "per_block": {
            name: {
                "gflop_per_audio_second": c["flops"] / window_seconds / 1e9,
                "mb_per_audio_second": c["bytes"] / window_seconds / 2**20,
                "ms": c["seconds"] * 1000,
                "achieved_gflops": c["flops"] / max(c["seconds"], 1e-12) / 1e9,
            }
            for name, c in costs.items()
        },
        "matmul_gflops": peak / 1e9,
        "copy_gbps": bandwidth / 1e9,
        "compute_floor_rtf": flops / peak,
        "memory_floor_rtf": moved / bandwidth,
        "floor_rtf": max(flops / peak, moved / bandwidth),
        "utilisation": (bench.get("flops_per_audio_second", flops) / peak) / bench["rtf"]
        if bench.get("rtf")
        else None,
    }
