"""finally-cli: 48 kHz speech restoration with the FINALLY model."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AudioError",
    "CheckpointError",
    "ConfigError",
    "Enhancer",
    "EnhancerOptions",
    "FinallyError",
    "GeneratorConfig",
    "OutputError",
    "create_model",
    "load_model",
    "save_model",
    "__version__",
]

from finally_cli.errors import AudioError, CheckpointError, ConfigError, FinallyError, OutputError

if TYPE_CHECKING:  # pragma: no cover
    from finally_cli.inference.enhancer import Enhancer, EnhancerOptions
    from finally_cli.models.config import GeneratorConfig
    from finally_cli.models.hub import create_model, load_model, save_model

# torch-backed names resolve lazily so `import finally_cli` stays fast.
_LAZY = {
    "Enhancer": "finally_cli.inference.enhancer",
    "EnhancerOptions": "finally_cli.inference.enhancer",
    "GeneratorConfig": "finally_cli.models.config",
    "create_model": "finally_cli.models.hub",
    "load_model": "finally_cli.models.hub",
    "save_model": "finally_cli.models.hub",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'finally_cli' has no attribute {name!r}")
