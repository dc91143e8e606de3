"""The GE2E speaker encoder shipped in Resemblyzer (40 mel bands → 3 × LSTM-256 → embedding)."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from finally_cli.errors import CheckpointError
from finally_cli.models.pretrained.base import (
    PretrainedEncoder,
    package_file,
    register_mel_front_end,
    rms_normalise,
)

NAME = "ge2e"
WHEEL = ("resemblyzer", "pretrained.pt")
N_FFT, HOP = 400, 160  # 25 ms windows, 10 ms hop
TARGET_DBFS = -30.0  # Resemblyzer's loudness normalisation


class GE2EFeatures(PretrainedEncoder):
    """Power mel spectrogram (not log) → LSTM stack → ReLU(linear) → unit-length embedding.

    Layers: "1".."3" (LSTM outputs, [batch, frames, hidden], 100 frames/s) and "embedding"
    ([batch, dims], from the last LSTM state). Each clip is first scaled to −30 dBFS RMS
    (Resemblyzer only raises quiet clips; here both ways, so the features ignore level).
    Resemblyzer's voice-activity trimming and 1.6 s partial windows are left out: the clip
    is encoded whole.

    Args:
        state: the `model_state` of Resemblyzer's checkpoint (`lstm.*`, `linear.*`).
    """

    name = NAME

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()

        count = sum(1 for k in state if k.startswith("lstm.weight_ih_l"))
        hidden, n_mels = state["lstm.weight_hh_l0"].shape[1], state["lstm.weight_ih_l0"].shape[1]
        # One single-layer LSTM per layer, so every layer's sequence is visible.
        self.lstms = nn.ModuleList(
            nn.LSTM(n_mels if i == 0 else hidden, hidden, batch_first=True) for i in range(count)
        )
        self.linear = nn.Linear(hidden, state["linear.weight"].shape[0])
        own = {
            f"lstms.{i}.{kind}_l0": state[f"lstm.{kind}_l{i}"]
            for i in range(count)
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        }
        own.update({"linear.weight": state["linear.weight"], "linear.bias": state["linear.bias"]})
        self.load_state_dict(own, strict=True)
        register_mel_front_end(self, N_FFT, n_mels)
        self.layer_names = (*map(str, range(1, count + 1)), "embedding")

    def mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """[batch, samples] → power mel [batch, samples // 160 + 1, n_mels] (zero-padded, centred
        frames, as librosa's melspectrogram)."""
        spec = torch.stft(
            waveform, N_FFT, HOP, window=self.window, pad_mode="constant", return_complex=True
        )
        return torch.matmul(self.mel_bank, spec.abs().pow(2)).transpose(1, 2)

    def forward(self, waveform: torch.Tensor, last: str | None = None) -> dict[str, torch.Tensor]:
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            hidden = self.mel(rms_normalise(waveform.float(), TARGET_DBFS))
            maps: dict[str, torch.Tensor] = {}
            for index, lstm in enumerate(self.lstms, start=1):
                hidden, (state, _) = lstm(hidden)
                maps[str(index)] = hidden
                if last == str(index):
                    return maps
            embedding = F.relu(self.linear(state[-1]))
            maps["embedding"] = embedding / embedding.norm(dim=1, keepdim=True).clamp_min(1e-8)
        return maps


def load_ge2e(path: str | Path | None = None) -> GE2EFeatures:
    """GE2E features from Resemblyzer's `pretrained.pt` (read with weights_only=True).

    Args:
        path: the checkpoint; None uses the one inside the installed `Resemblyzer` package.

    Raises:
        ConfigError: Resemblyzer is not installed (names the extra).
        CheckpointError: the file is unreadable or lacks the encoder's tensors.
    """
    path = Path(path) if path is not None else package_file(*WHEEL, extractor=NAME)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{path}: cannot read a weights-only torch checkpoint") from err
    state = checkpoint.get("model_state", checkpoint) if isinstance(checkpoint, dict) else None
    needed = ("lstm.weight_ih_l0", "lstm.weight_hh_l0", "linear.weight", "linear.bias")
    if not isinstance(state, dict) or any(k not in state for k in needed):
        raise CheckpointError(f"{path}: not a GE2E checkpoint (no lstm.* / linear.* tensors)")
    return GE2EFeatures(state)
