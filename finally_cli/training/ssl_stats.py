"""Clean-speech statistics of SSL features per layer, for FeatureNormalizer."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from finally_cli.models.feature_norm import CONV

CHUNK_SECONDS = 20.0


class _Accumulator:
    """Running per-channel sums in float64 (exact for any number of frames we will see)."""

    def __init__(self) -> None:
        self.count = 0
        self.total: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None

    def add(self, features: torch.Tensor) -> None:
        # features: [frames, channels]
        features = features.detach().double()
        if self.total is None:
            self.total = torch.zeros(features.shape[1], dtype=torch.float64)
            self.squares = torch.zeros_like(self.total)
        self.total += features.sum(0).cpu()
        self.squares += features.square().sum(0).cpu()
        self.count += features.shape[0]

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.total is not None and self.squares is not None and self.count > 0
        mean = self.total / self.count
        var = (self.squares / self.count - mean.square()).clamp_min(0)
        return mean.float(), var.sqrt().float()


def ssl_statistics(
    model: nn.Module,
    waveforms: Iterable[np.ndarray],
    progress: Callable[[float], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Per-channel mean/std of the CNN encoder output and of every transformer layer output.

    Args:
        model: a transformers SSL model (WavLM, wav2vec 2.0, HuBERT) without normalisation.
        waveforms: 16 kHz mono clean speech signals.
        progress: called with the seconds of audio processed.

    Returns:
        {"mean_conv", "std_conv", "mean_1", "std_1", ...} as float32 tensors.
    """
    accumulators: dict[str, _Accumulator] = {CONV: _Accumulator()}
    handles = [
        model.feature_extractor.register_forward_hook(
            lambda m, i, o: accumulators[CONV].add(o[0].transpose(0, 1))
        )
    ]
    for index, layer in enumerate(model.encoder.layers):
        name = str(index + 1)
        accumulators[name] = _Accumulator()
        handles.append(
            layer.register_forward_hook(
                lambda m, i, o, name=name: accumulators[name].add(
                    (o[0] if isinstance(o, tuple) else o)[0]
                )
            )
        )
    device = next(model.parameters()).device
    chunk = int(CHUNK_SECONDS * 16000)
    model.eval()
    try:
        with torch.inference_mode():
            for waveform in waveforms:
                for start in range(0, len(waveform), chunk):
                    piece = waveform[start : start + chunk]
                    if len(piece) < 1600:  # under 0.1 s: too short for a stable frame
                        continue
                    piece = (piece - piece.mean()) / (piece.std() + 1e-7)
                    model(torch.from_numpy(piece.astype(np.float32))[None].to(device))
                    if progress is not None:
                        progress(len(piece) / 16000)
    finally:
        for handle in handles:
            handle.remove()
    if accumulators[CONV].count == 0:
        raise ValueError("no clean speech long enough (≥ 0.1 s) to compute statistics")
    stats = {}
    for name, acc in accumulators.items():
        stats[f"mean_{name}"], stats[f"std_{name}"] = acc.result()
    return stats


def save_statistics(stats: dict[str, torch.Tensor], path: Path, source: str) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in stats.items()}, str(path), metadata={"source": source})


def load_statistics(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))
