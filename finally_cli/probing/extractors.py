"""Feature extractors: waveform, STFT, log-mel, MFCC, transformers SSL and pretrained layers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from finally_cli.errors import ConfigError

SSL_ALIASES = {
    "wavlm-large": "microsoft/wavlm-large",
    "wavlm-base-plus": "microsoft/wavlm-base-plus",
    "wav2vec2-base": "facebook/wav2vec2-base",
    "wav2vec2-large": "facebook/wav2vec2-large",
    "hubert-large": "facebook/hubert-large-ll60k",
}


@dataclass(frozen=True)
class Extractor:
    """A named feature map: batch of 16 kHz segments [n, samples] → vectors [n, dims]."""

    name: str
    fn: Callable[[np.ndarray], np.ndarray]


def waveform(segments: np.ndarray) -> np.ndarray:
    return segments.reshape(len(segments), -1)


def stft_magnitude(segments: np.ndarray) -> np.ndarray:
    import torch

    spec = torch.stft(
        torch.from_numpy(segments), 512, 128, window=torch.hann_window(512), return_complex=True
    ).abs()
    return spec.reshape(len(segments), -1).numpy()


def log_mel(segments: np.ndarray) -> np.ndarray:
    import torch

    from finally_cli.models.mel import LogMel

    with torch.no_grad():
        return LogMel()(torch.from_numpy(segments)).reshape(len(segments), -1).numpy()


def mfcc(segments: np.ndarray, coefficients: int = 20) -> np.ndarray:
    from scipy.fft import dct

    mel = log_mel(segments).reshape(len(segments), 80, -1)
    return dct(mel, type=2, axis=1, norm="ortho")[:, :coefficients].reshape(len(segments), -1)


BUILTIN: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "waveform": waveform,
    "stft": stft_magnitude,
    "logmel": log_mel,
    "mfcc": mfcc,
}


class LayeredFeatures:
    """All layers of one model, computed once per segment batch and flattened per segment."""

    def __init__(self) -> None:
        # Two most recent inputs (clean and noisy sets), held so their ids stay unique.
        self._cache: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []

    def layer_names(self) -> list[str]:
        raise NotImplementedError

    def _compute(self, segments: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def features(self, segments: np.ndarray, layer: str) -> np.ndarray:
        for array, maps in self._cache:
            if array is segments:
                return maps[layer]
        maps = self._compute(segments)
        self._cache = [*self._cache[-1:], (segments, maps)]
        return maps[layer]


class SSLFeatures(LayeredFeatures):
    """All layers of a transformers speech SSL model.

    Layer names: "conv" (CNN encoder output), "0" (transformer input after the positional
    convolution), "1".."N" (transformer layer outputs).
    """

    def __init__(self, model_id: str, offline: bool = False) -> None:
        super().__init__()
        from transformers import AutoModel

        source = SSL_ALIASES.get(model_id, model_id)
        try:
            self.model = AutoModel.from_pretrained(
                source, local_files_only=offline, use_safetensors=True
            ).eval()
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"extractor {model_id}: cannot load {source} "
                f"({type(err).__name__}); give a Hub id or a local folder"
            ) from err
        self.layers = int(self.model.config.num_hidden_layers)

    def layer_names(self) -> list[str]:
        return ["conv"] + [str(i) for i in range(self.layers + 1)]

    def _compute(self, segments: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        out: dict[str, list[np.ndarray]] = {}
        with torch.inference_mode():
            for start in range(0, len(segments), 16):
                batch = torch.from_numpy(segments[start : start + 16])
                batch = (batch - batch.mean(1, keepdim=True)) / (batch.std(1, keepdim=True) + 1e-7)
                conv = self.model.feature_extractor(batch)
                result = self.model(batch, output_hidden_states=True)
                maps = {"conv": conv}
                maps.update({str(i): h for i, h in enumerate(result.hidden_states)})
                for name, value in maps.items():
                    out.setdefault(name, []).append(value.reshape(len(batch), -1).numpy())
        return {k: np.concatenate(v) for k, v in out.items()}


class PretrainedFeatures(LayeredFeatures):
    """All layers of a pretrained encoder (`finally_cli.models.pretrained`), as given."""

    def __init__(self, name: str) -> None:
        super().__init__()
        from finally_cli.models.pretrained import load_pretrained

        self.encoder = load_pretrained(name)

    def layer_names(self) -> list[str]:
        return list(self.encoder.layer_names)

    def _compute(self, segments: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        out: dict[str, list[np.ndarray]] = {}
        with torch.inference_mode():
            for start in range(0, len(segments), 16):
                batch = torch.from_numpy(segments[start : start + 16])
                for name, value in self.encoder(batch).items():
                    out.setdefault(name, []).append(value.reshape(len(batch), -1).numpy())
        return {k: np.concatenate(v) for k, v in out.items()}


def parse_extractors(specs: list[str], offline: bool = False) -> list[Extractor]:
    """`waveform`, `stft`, `logmel`, `mfcc`, `<pretrained name>:<layer|all>`,
    `<ssl id/folder>:<conv|N|all>`, or `all` (the built-ins and every installed pretrained
    encoder's layers)."""
    from finally_cli.models.pretrained import PRETRAINED, installed

    if "all" in specs:
        expanded = [*BUILTIN, *(f"{name}:all" for name in installed())]
        specs = [*expanded, *(s for s in specs if s != "all" and s not in expanded)]
    extractors: list[Extractor] = []
    models: dict[str, LayeredFeatures] = {}
    for spec in specs:
        if spec in BUILTIN:
            extractors.append(Extractor(spec, BUILTIN[spec]))
            continue
        model_id, sep, layer = spec.rpartition(":")
        if not sep or not model_id:
            raise ConfigError(
                f"--extractor {spec!r}: expected {', '.join(BUILTIN)}, all, or "
                "MODEL:LAYER (MODEL = a pretrained name or an SSL model; LAYER = a layer or all)"
            )
        if model_id not in models:
            models[model_id] = (
                PretrainedFeatures(model_id)
                if model_id in PRETRAINED
                else SSLFeatures(model_id, offline)
            )
        features = models[model_id]
        layers = features.layer_names() if layer == "all" else [layer]
        for name in layers:
            if name not in features.layer_names():
                raise ConfigError(
                    f"--extractor {spec!r}: layer {name!r} not in "
                    f"{', '.join(features.layer_names())}"
                )
            extractors.append(
                Extractor(
                    f"{model_id}:{name}", lambda s, f=features, name=name: f.features(s, name)
                )
            )
    return extractors
