"""DNSMOS P.835 (speechmos' `sig_bak_ovr.onnx`) rebuilt in torch from its ONNX weights.

For probing only: DNSMOS is this project's evaluation yardstick, so it is never a training loss.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from finally_cli.errors import CheckpointError, ConfigError
from finally_cli.models.pretrained.base import EXTRA, PretrainedEncoder, package_file

NAME = "dnsmos"
WHEEL = ("speechmos", "dnsmos_models/sig_bak_ovr.onnx")
HOP = 160  # frames of 320 samples (two hops), 100 frames/s
CONVS = 7
POOL_AFTER = (4, 5, 6)  # 2 × 2 max-pooling follows these convolutions
DENSE = "mos_estimator_logpow/dense{}/{}/ReadVariableOp/resource:0"


class DnsmosFeatures(PretrainedEncoder):
    """Log power spectrum → 7 × (Conv2d 3×3 + ReLU, max-pools) → global max → 2 dense layers.

    The ONNX graph takes exactly 9.01 s; the same operations here take any length ≥ 20 ms.
    Layers: "logpow" ([batch, frames, 161]: log10 power of a learnt 320-point DFT),
    "1".."7" (conv maps, [batch, frames', channels × bins']), "pool" (global max, [batch, 64]),
    "dense1", "dense2" (ReLU outputs); `scores` gives the raw SIG/BAK/OVRL head.

    Args:
        weights: ONNX initializer name → array, from `read_onnx_weights`.
    """

    name = NAME

    def __init__(self, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        # The DFT as two convolutions over 320-sample frames: [bins, 320, 1] each.
        dft = torch.cat(
            [weights["time2freq/stft-real/kernel:0"], weights["time2freq/stft-imag/kernel:0"]]
        )
        self.register_buffer("dft", dft[..., 0].float(), persistent=False)  # [2 × bins, 320]
        self.convs = nn.ModuleList()
        for i in range(CONVS):
            kernel = weights[f"conv2d{'' if i == 0 else f'_{i}'}/kernel:0"]
            conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], 3, padding=1)
            conv.weight.data.copy_(kernel)
            conv.bias.data.copy_(weights[f"conv2d{'' if i == 0 else f'_{i}'}/bias:0"])
            self.convs.append(conv)
        self.dense = nn.ModuleList()
        for suffix in ("", "_1", "_3"):
            matrix = weights[DENSE.format(suffix, "MatMul")]  # [in, out]
            layer = nn.Linear(*matrix.shape)
            layer.weight.data.copy_(matrix.T)
            layer.bias.data.copy_(weights[DENSE.format(suffix, "BiasAdd")])
            self.dense.append(layer)
        self.requires_grad_(False)
        self.layer_names = ("logpow", *map(str, range(1, CONVS + 1)), "pool", "dense1", "dense2")

    def log_power(self, waveform: torch.Tensor) -> torch.Tensor:
        """[batch, samples] → [batch, (samples − 160) // 160, 161]."""
        frames = (waveform.shape[-1] - HOP) // HOP
        if frames < 1:
            raise ConfigError(f"{NAME}: input of {waveform.shape[-1]} samples is too short")
        # Frame t is hops t and t + 1 side by side, as the ONNX graph's two reshapes build it.
        hops = waveform[:, : (frames + 1) * HOP].reshape(len(waveform), frames + 1, HOP)
        framed = torch.cat([hops[:, :-1], hops[:, 1:]], dim=-1)  # [b, frames, 320]
        real, imag = torch.matmul(framed, self.dft.T).chunk(2, dim=-1)
        return (real.pow(2) + imag.pow(2)).clamp_min(1e-12).log10()

    def forward(self, waveform: torch.Tensor, last: str | None = None) -> dict[str, torch.Tensor]:
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            hidden = self.log_power(waveform.float())
            maps = {"logpow": hidden}
            if last == "logpow":
                return maps
            hidden = hidden.unsqueeze(1)  # [b, 1, frames, bins]
            for index, conv in enumerate(self.convs, start=1):
                hidden = F.relu(conv(hidden))
                # Time-major flattening: [b, frames, channels × bins].
                maps[str(index)] = hidden.permute(0, 2, 1, 3).flatten(2)
                if last == str(index):
                    return maps
                if index in POOL_AFTER:
                    hidden = F.max_pool2d(hidden, 2)
            hidden = hidden.amax(dim=(2, 3))
            maps["pool"] = hidden
            for name, layer in zip(("dense1", "dense2"), self.dense):
                hidden = F.relu(layer(hidden))
                maps[name] = hidden
                if last == name:
                    break
        return maps

    def scores(self, waveform: torch.Tensor) -> torch.Tensor:
        """The network's raw [batch, 3] SIG/BAK/OVRL outputs (before speechmos' polynomials)."""
        return self.dense[-1](self(waveform)["dense2"])


def read_onnx_weights(path: Path) -> dict[str, torch.Tensor]:
    """The initializers (weights) of an ONNX file; the graph itself is not run."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as err:
        raise ConfigError(
            f"extractor {NAME} needs the Python package 'onnx': pip install 'finally-cli[{EXTRA}]'"
        ) from err
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path))
    except (OSError, DecodeError) as err:
        raise CheckpointError(f"{path}: cannot read an ONNX model ({type(err).__name__})") from err
    return {
        i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in model.graph.initializer
    }


def load_dnsmos(path: str | Path | None = None) -> DnsmosFeatures:
    """DNSMOS P.835 features from `sig_bak_ovr.onnx` (None: the one in `speechmos`).

    Raises:
        ConfigError: speechmos or onnx is missing (names the extra).
        CheckpointError: unreadable, or not the DNSMOS P.835 network.
    """
    path = Path(path) if path is not None else package_file(*WHEEL, extractor=NAME)
    weights = read_onnx_weights(path)
    try:
        return DnsmosFeatures(weights)
    except KeyError as err:
        raise CheckpointError(f"{path}: not the DNSMOS P.835 network (no {err.args[0]})") from err
