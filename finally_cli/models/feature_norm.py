"""SSL feature normalisation (Yang & Kang, 2023): align noisy-input statistics with clean ones.

At each chosen layer the features f of the current utterance are standardised with their own
per-channel statistics over time and re-scaled with per-channel statistics of clean speech
through the pre-trained model:  f' = (f − μ_utt) / σ_utt · σ_clean + μ_clean.
"""

from __future__ import annotations

import torch
from torch import nn

CONV = "conv"
EPS = 1e-6


def layer_names(layers: tuple[str | int, ...] | list[str | int]) -> list[str]:
    """Canonical names: "conv" for the CNN encoder, "1".."N" for transformer layer outputs."""
    names = []
    for layer in layers:
        name = str(layer).strip().lower()
        if name != CONV and not (name.isdigit() and int(name) >= 1):
            raise ValueError(f"SSL layer {layer!r}: expected 'conv' or a transformer layer ≥ 1")
        names.append(name)
    return names


def normalise(
    features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, channel_dim: int
) -> torch.Tensor:
    """Per-utterance standardisation over time, then the clean statistics per channel."""
    time_dim = 2 if channel_dim == 1 else 1  # [b, c, t] or [b, t, c]
    shape = [1, 1, 1]
    shape[channel_dim] = -1
    utt_mean = features.mean(dim=time_dim, keepdim=True)
    utt_var = features.var(dim=time_dim, keepdim=True, unbiased=False)
    standard = (features - utt_mean) * torch.rsqrt(utt_var + EPS)
    return standard * std.view(shape).to(features.dtype) + mean.view(shape).to(features.dtype)


class FeatureNormalizer(nn.Module):
    """Holds clean statistics per layer as buffers and hooks them into a transformers SSL model.

    Args:
        layers: "conv" and/or transformer layer numbers (1-based) to normalise.
        conv_channels: channels of the CNN encoder output.
        hidden_size: width of the transformer layers.
    """

    def __init__(self, layers: list[str], conv_channels: int, hidden_size: int) -> None:
        super().__init__()
        self.layers = layer_names(layers)
        for name in self.layers:
            dim = conv_channels if name == CONV else hidden_size
            self.register_buffer(f"mean_{name}", torch.zeros(dim))
            self.register_buffer(f"std_{name}", torch.ones(dim))
        self.enabled = True
        self._handles: list = []

    def statistics(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"mean_{name}"), getattr(self, f"std_{name}")

    def load_statistics(self, stats: dict[str, torch.Tensor]) -> None:
        """Copy `mean_<layer>` / `std_<layer>` tensors (from `ssl-stats`) into the buffers."""
        for name in self.layers:
            for kind in ("mean", "std"):
                key = f"{kind}_{name}"
                if key not in stats:
                    raise KeyError(
                        f"statistics file has no {key} (layers in it: "
                        f"{sorted({k.split('_', 1)[1] for k in stats})})"
                    )
                getattr(self, key).copy_(stats[key])

    def attach(self, model: nn.Module) -> None:
        """Register forward hooks on `model.feature_extractor` and `model.encoder.layers`."""
        self.detach()
        for name in self.layers:
            if name == CONV:
                target, channel_dim = model.feature_extractor, 1
            else:
                index = int(name) - 1
                if index >= len(model.encoder.layers):
                    raise ValueError(
                        f"SSL layer {name}: the model has only "
                        f"{len(model.encoder.layers)} transformer layers"
                    )
                target, channel_dim = model.encoder.layers[index], 2
            self._handles.append(target.register_forward_hook(self._hook(name, channel_dim)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, name: str, channel_dim: int):  # noqa: ANN202
        def hook(module: nn.Module, inputs: tuple, output):  # noqa: ANN001, ANN202
            if not self.enabled:
                return None
            mean, std = self.statistics(name)
            if isinstance(output, tuple):
                return (normalise(output[0], mean, std, channel_dim), *output[1:])
            return normalise(output, mean, std, channel_dim)

        return hook
