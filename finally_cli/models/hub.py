"""Model folders (config.json + model.safetensors + README.md): create, save, resolve, load."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from finally_cli.errors import CheckpointError, ConfigError
from finally_cli.models.config import MAX_PARAMETERS, PRESETS, GeneratorConfig, preset

if TYPE_CHECKING:
    import torch

    from finally_cli.models.generator import FinallyGenerator

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
SSL_PREFIX = "ssl."
SSL_MODEL_PREFIX = "ssl.model."  # pre-trained weights; ssl.norm.* buffers are always ours


PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # finally_cli/


def weights_dirs() -> list[Path]:
    """Folders searched for named models (`--model NAME`), in this order:

    1. `$FINALLY_WEIGHTS_DIR`, when set;
    2. `weights/` of a source checkout (an editable install: pyproject.toml beside it);
    3. `finally_cli/weights/` of an installed wheel, where pyproject.toml puts `weights/` as
       package data (the default model travels with `pip install`).
    """
    dirs = []
    if os.environ.get("FINALLY_WEIGHTS_DIR"):
        dirs.append(Path(os.environ["FINALLY_WEIGHTS_DIR"]))
    checkout = PACKAGE_ROOT.parent
    if (checkout / "pyproject.toml").is_file():
        dirs.append(checkout / "weights")
    dirs.append(PACKAGE_ROOT / "weights")
    return dirs


@dataclass(frozen=True)
class ResolvedModel:
    """Where a `--model` value points: a local folder, plus how it was found."""

    folder: Path
    source: str  # "registry", "folder" or "hub"
    name: str


def is_hub_id(spec: str) -> bool:
    parts = spec.split("@")[0].split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "/", "~"))


def resolve_model(spec: str, revision: str | None = None, offline: bool = False) -> ResolvedModel:
    """Turn a preset name, folder path or Hub id `owner/name[@rev]` into a local folder.

    Raises:
        CheckpointError: when nothing matches or the Hub cannot provide it.
    """
    for base in weights_dirs():
        if "/" not in spec and (base / spec).is_dir():
            return ResolvedModel(base / spec, "registry", spec)
    try:
        path = Path(spec).expanduser()
    except RuntimeError as err:  # "~nouser/x": no such user, or no home folder
        raise CheckpointError(f"{spec}: cannot expand {spec.split('/')[0]}: {err}") from err
    if path.is_dir():
        return ResolvedModel(path, "folder", path.name)
    if path.exists():
        raise CheckpointError(f"{spec}: a model is a folder with {CONFIG_NAME} and {WEIGHTS_NAME}")
    if is_hub_id(spec):
        repo_id, _, inline_rev = spec.partition("@")
        return ResolvedModel(
            download_model(repo_id, revision or inline_rev or None, offline), "hub", repo_id
        )
    named = ", ".join(registry_names()) or "none"
    searched = ", ".join(str(d) for d in weights_dirs() if d.is_dir()) or "no weights folder"
    hint = (
        f"; {spec} is a preset (an architecture without weights): make a model folder with "
        f"`finally models create {spec} -o DIR`"
        if spec in PRESETS
        else ""
    )
    raise CheckpointError(
        f"unknown model {spec!r}: not a folder, a Hub id owner/name, or a model name in "
        f"{searched} (named models: {named}){hint}"
    )


def registry_names() -> list[str]:
    names = set()
    for base in weights_dirs():
        if base.is_dir():
            names.update(p.name for p in base.iterdir() if (p / CONFIG_NAME).is_file())
    return sorted(names)


def download_model(repo_id: str, revision: str | None = None, offline: bool = False) -> Path:
    """Fetch a model repo through the huggingface_hub cache (honours HF_HUB_OFFLINE)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline = offline or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    where = f"{repo_id}@{revision or 'main'}"
    try:
        folder = snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME],
            local_files_only=offline,
        )
    except LocalEntryNotFoundError as err:
        hint = "not in the local Hugging Face cache" if offline else "cannot be downloaded"
        raise CheckpointError(f"{where}: {hint} ({type(err).__name__})") from err
    except RevisionNotFoundError as err:
        raise CheckpointError(f"{where}: revision not found on the Hub") from err
    except RepositoryNotFoundError as err:
        raise CheckpointError(f"{where}: repository not found on the Hub") from err
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{where}: download failed: {err}") from err
    return Path(folder)


def read_config(folder: Path) -> GeneratorConfig:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{folder}: no {CONFIG_NAME}; not a finally-cli model folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path}: unreadable config: not UTF-8 text ({err.reason})") from err
    except (OSError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path}: unreadable config: {err}") from err
    try:
        config = GeneratorConfig.from_dict(data)
        check_size(config)
    except (ConfigError, TypeError) as err:
        raise CheckpointError(f"{path}: invalid config: {err}") from err
    return config


def parameter_count(config: GeneratorConfig) -> int:
    """Parameters the generator of `config` has (SSL branch included), counted on the meta
    device: nothing is allocated. The config's field bounds keep this fast."""
    import torch

    from finally_cli.models.generator import FinallyGenerator

    with torch.device("meta"):
        model = FinallyGenerator(config)
    return sum(p.numel() for p in model.parameters())


def check_size(config: GeneratorConfig) -> None:
    """Refuse a config whose model would exceed `MAX_PARAMETERS` before anything is built."""
    count = parameter_count(config)
    if count > MAX_PARAMETERS:
        raise ConfigError(
            f"{config.name}: {count / 1e9:.2f} G parameters, more than the cap of "
            f"{MAX_PARAMETERS / 1e9:.0f} G"
        )


def create_model(config: GeneratorConfig | str, seed: int = 0) -> FinallyGenerator:
    """Build a randomly initialised generator (seeded) from a config or preset name."""
    import torch

    from finally_cli.models.generator import FinallyGenerator

    if isinstance(config, str):
        config = preset(config)
    else:
        check_size(config)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return FinallyGenerator(config)
    finally:
        torch.random.set_rng_state(state)


def stored_state_dict(model: FinallyGenerator) -> dict[str, torch.Tensor]:
    """The tensors our checkpoint holds: everything but SSL weights that come from elsewhere."""
    state = model.state_dict()
    if _ssl_external(model):
        state = {k: v for k, v in state.items() if not k.startswith(SSL_MODEL_PREFIX)}
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_model(model: FinallyGenerator, folder: str | Path, card: str | None = None) -> Path:
    """Write config.json + model.safetensors (+ README.md card) into `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(
        json.dumps(model.config.to_dict(), indent=2) + "\n", encoding="utf-8"
    )
    save_file(stored_state_dict(model), str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    (folder / CARD_NAME).write_text(card or default_card(model), encoding="utf-8")
    return folder


def default_card(model: FinallyGenerator) -> str:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for n, p in model.named_parameters() if not n.startswith(SSL_PREFIX))
    return (
        f"---\nlicense: apache-2.0\ntags: [speech-enhancement, finally-cli]\n---\n\n"
        f"# {model.config.name}\n\n"
        f"FINALLY generator ({model.config.output_sample_rate} Hz output), "
        f"{trainable / 1e6:.2f} M generator parameters, {total / 1e6:.2f} M in total.\n\n"
        "**Randomly initialised, not trained**: use it as a training starting point or for "
        "speed benchmarks, not to restore audio.\n"
    )


def load_state(model: FinallyGenerator, folder: Path) -> None:
    """Load model.safetensors into `model` strictly; never unpickles."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / WEIGHTS_NAME
    if not path.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise CheckpointError(
                f"{folder}: only pickle checkpoints ({', '.join(pickles)}); finally-cli never "
                f"unpickles: convert them to {WEIGHTS_NAME}"
            )
        raise CheckpointError(f"{folder}: no {WEIGHTS_NAME} (this model has no weights yet)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a valid safetensors file ({err})") from err
    expected = stored_state_dict(model)
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing keys {_brief(missing)}")
        if extra:
            parts.append(f"unexpected keys {_brief(extra)}")
        raise CheckpointError(f"{path}: does not match config.json: {'; '.join(parts)}")
    for key, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(
                f"{path}: {key} has shape {list(tensor.shape)}, config expects "
                f"{list(expected[key].shape)}"
            )
        check_tensor(path, key, tensor, expected[key].dtype)
    model.load_state_dict(tensors, strict=not _ssl_external(model))


def check_tensor(path: Path, key: str, tensor: torch.Tensor, expected: torch.dtype) -> None:
    """Refuse a stored tensor that would be cast silently (integers, bools into float weights)
    or that holds NaN/Inf: either one makes the model's output garbage, not an error."""
    import torch

    name = str(tensor.dtype).removeprefix("torch.")
    if tensor.is_floating_point() != expected.is_floating_point or tensor.is_complex():
        raise CheckpointError(
            f"{path}: {key} has dtype {name}, expected {str(expected).removeprefix('torch.')}"
        )
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise CheckpointError(f"{path}: {key} holds non-finite values (NaN or Inf)")


def _ssl_external(model: FinallyGenerator) -> bool:
    return model.config.ssl.enabled and model.config.ssl.weights != "checkpoint"


def _brief(keys: list[str], limit: int = 4) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_ssl_weights(model: FinallyGenerator, offline: bool = False) -> None:
    """Fill the SSL branch from the Hub (or a local folder) when the config says "hub"."""
    ssl = model.config.ssl
    if model.ssl is None or ssl.weights != "hub":
        return
    from transformers import WavLMModel

    offline = offline or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    where = f"{ssl.model_id}@{ssl.revision}"
    try:
        pretrained = WavLMModel.from_pretrained(
            ssl.model_id,
            revision=ssl.revision,
            local_files_only=offline,
            use_safetensors=True,  # never unpickle, whatever transformers defaults to
        )
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"SSL weights {where} unavailable ({type(err).__name__}); they are not stored in "
            "our checkpoint and come from the Hub cache or a local folder"
        ) from err
    try:
        model.ssl.model.load_state_dict(pretrained.state_dict(), strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"SSL weights {where} do not match ssl.arch: {err}") from err


def fingerprint(model: FinallyGenerator) -> str:
    """SHA-256 of a generator's config and weights: the same for the same model, whatever
    folder or name it was loaded from."""
    import hashlib

    import torch

    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def load_model(
    spec: str,
    revision: str | None = None,
    offline: bool = False,
    device: str | torch.device = "cpu",
    for_inference: bool = True,
) -> FinallyGenerator:
    """Load a model by preset name, folder or Hub id.

    Args:
        spec: name in weights/, a local folder, or `owner/name[@revision]`.
        revision: Hub revision (overrides an inline `@rev`).
        offline: use only the local Hugging Face cache.
        device: where to put the model.
        for_inference: fold weight norm and switch to eval mode.

    Raises:
        CheckpointError: unresolvable name, bad config, missing/extra keys, pickles.
    """
    resolved = resolve_model(spec, revision=revision, offline=offline)
    config = read_config(resolved.folder)
    if not (resolved.folder / WEIGHTS_NAME).is_file() and resolved.source == "registry":
        raise CheckpointError(
            f"model {spec!r} has no trained weights yet ({resolved.folder / WEIGHTS_NAME} is "
            f"missing); make a random one with `finally models create {config.name} -o DIR` "
            "and pass --model DIR"
        )
    model = create_model(config, seed=config.ssl.seed)
    load_state(model, resolved.folder)
    load_ssl_weights(model, offline=offline)
    if for_inference:
        model.remove_weight_norm()
        model.eval()
        model.requires_grad_(False)
    return model.to(device)
