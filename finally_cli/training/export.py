"""`finally train export`: a run's generator → a model folder `finally enhance` loads."""

from __future__ import annotations

import json
from pathlib import Path

from finally_cli.errors import CheckpointError
from finally_cli.models.config import GeneratorConfig
from finally_cli.models.hub import create_model, save_model
from finally_cli.training.checkpoint import checkpoints, model_weights, newest_weights


def export_model(
    run_dir: Path,
    out_dir: Path,
    generator=None,
    step: int | None = None,  # noqa: ANN001
    extra: dict | None = None,
    checkpoint_step: int | None = None,
    blend_from: Path | None = None,
    blend: float = 1.0,
    model_overrides: list[str] | None = None,
    average_with: list[Path] | None = None,
) -> Path:
    """Write config.json + model.safetensors + README.md for the newest checkpoint, the
    checkpoint of `checkpoint_step`, or the given in-memory generator.

    With `blend_from` (a model folder of the same architecture, typically the one the run
    started from) the weights written are base + blend · (run − base): interpolating a
    fine-tuned model back towards its start in weight space (WiSE-FT, Wortsman et al., 2022)
    keeps part of what the fine-tune gained and gives back part of what it traded away.

    `model_overrides` (`key.path=value`, as `--set`) change the run's model config before the
    weights are loaded: settings that leave the parameters as they are, such as the restorer's
    inference stages (`spectral_restorer.mix_back`, `spectral_restorer.postfilter_below`).

    `average_with` (run folders of the same model config, e.g. the same recipe from the same
    start with other seeds) averages their checkpoints of the same step (or their newest) with
    this run's before any blend: a uniform model soup (Wortsman et al., 2022).
    """
    run_dir = Path(run_dir)
    averaged = ""
    if generator is None:
        chosen, weights = _checkpoint_weights(run_dir, checkpoint_step)
        config_dict = json.loads((run_dir / "model_config.json").read_text())
        if average_with:
            weights = _average(run_dir, config_dict, weights, average_with, checkpoint_step)
            names = ", ".join(f"`{Path(r).name}`" for r in average_with)
            averaged = f"Weights: the mean of this run's and {names}'s.\n\n"
        if model_overrides:
            from finally_cli.training.config import merge, parse_set

            config_dict = merge(config_dict, parse_set(model_overrides))
        config = GeneratorConfig.from_dict(config_dict)
        generator = create_model(config)
        generator.load_state_dict(weights, strict=True)
        step = json.loads((chosen / "state.json").read_text())["step"]
    blended = ""
    if blend_from is not None:
        _blend(generator, Path(blend_from), blend)
        blended = f"Weights: {blend:g} of the way from `{Path(blend_from).name}` to this run's.\n\n"
    train_config = json.loads((run_dir / "config.json").read_text())
    lines = _metrics_tail(run_dir)
    card = (
        "---\nlicense: apache-2.0\ntags: [speech-enhancement, finally-cli]\n---\n\n"
        f"# {generator.config.name}\n\n"
        f"Trained with `finally train`, stage {train_config['stage']}, {step} steps "
        f"(batch {train_config['batch_size']} × accumulation {train_config['grad_accum']}), "
        f"{generator.config.output_sample_rate} Hz output.\n\n"
        + averaged
        + blended
        + f"Clean data: {', '.join(train_config['data']['clean']) or '-'}; noise: "
        f"{', '.join(train_config['data']['noise']) or 'synthetic'}.\n\n"
        + (f"Validation: {json.dumps(extra['validation'])}\n\n" if extra else "")
        + ("Last logged losses:\n\n```\n" + "\n".join(lines) + "\n```\n" if lines else "")
    )
    save_model(generator, out_dir, card=card)
    return out_dir


def _checkpoint_weights(run_dir: Path, step: int | None) -> tuple[Path, dict]:
    """The checkpoint folder of `step` (default: the newest that reads back whole) and its
    generator weights."""
    found = checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"{run_dir}: no checkpoint to export")
    if step is None:  # the newest that reads back whole (a kill may cut one)
        return newest_weights(run_dir)
    steps = [int(p.name[5:]) for p in found]
    if step not in steps:
        kept = ", ".join(map(str, steps))
        raise CheckpointError(f"{run_dir}: no checkpoint of step {step} (kept: {kept})")
    chosen = found[steps.index(step)]
    return chosen, model_weights(chosen)


def _average(
    run_dir: Path, config: dict, weights: dict, others: list[Path], step: int | None
) -> dict:
    """The element-wise mean of `weights` and the other runs' checkpoints of `step` (each
    one's newest when None); every run must have the same model config."""
    members = [weights]
    for other in map(Path, others):
        config_file = other / "model_config.json"
        if not config_file.is_file():
            raise CheckpointError(f"{other}: not a training run folder (no model_config.json)")
        if json.loads(config_file.read_text()) != config:
            raise CheckpointError(
                f"{other}: its model config differs from {run_dir}'s; only runs of one "
                "architecture can be averaged"
            )
        members.append(_checkpoint_weights(other, step)[1])
    return {
        name: sum(m[name] for m in members) / len(members) if tensor.is_floating_point() else tensor
        for name, tensor in weights.items()
    }


# Restorer settings that only act at inference: a blend may write them differently from the
# base's (`--set spectral_restorer.mix_back=1 --blend-from ...`), the weights are the same.
INFERENCE_ONLY = (
    "mix_back",
    "mix_back_from_db",
    "mix_back_to_db",
    "mix_back_spike_from",
    "mix_back_spike_to",
    "mix_back_kept",
    "postfilter_below",
)


# what `init_from` may add to a base
GROWN = (
    "hidden",
    "residual_gru_layers",
    "magnitude_bins",
    "backward_gru_hidden",
    "freq_conv_channels",
    "bin_refiner_channels",
)


def _architecture(config: dict) -> dict:
    """A model config without the inference-only restorer settings and what `init_from` may
    grow (residual and backward GRU layers, magnitude input bins, the frequency conv): a
    grown base is matched separately."""
    restorer = {
        k: v
        for k, v in config.get("spectral_restorer", {}).items()
        if k not in INFERENCE_ONLY and k not in GROWN
    }
    return {**config, "spectral_restorer": restorer}


def _blend(generator, base_dir: Path, blend: float) -> None:  # noqa: ANN001
    """generator ← base + blend · (generator − base), in place.

    The base may have a narrower `hidden`, fewer residual GRU layers or magnitude input bins
    than the run, or no backward GRU, frequency conv or bin refiner (the run grew them with
    `init_from`): it is
    grown the same way first — each new layer's projection (the bin refiner's last layer) and
    each new input bin's weights at zero, so the grown base computes exactly what the base
    did, and the new layer's own weights, which that output does not depend on, taken from
    the run. The blend then scales what the new layers and bins add by `blend`."""
    import torch

    from finally_cli.models.hub import read_config
    from finally_cli.training.checkpoint import read_tensors
    from finally_cli.training.model_setup import (
        _grown_backward,
        _grown_hidden,
        _grown_inputs,
        _grown_refiner,
    )

    if not (base_dir / "model.safetensors").is_file():
        raise CheckpointError(f"--blend-from {base_dir}: not a model folder (no model.safetensors)")
    base_config = read_config(base_dir).to_dict()
    own_config = generator.config.to_dict()
    base_restorer = base_config.get("spectral_restorer", {})
    own_restorer = own_config.get("spectral_restorer", {})
    base_layers = base_restorer.get("residual_gru_layers", 0)
    shrunk = any(base_restorer.get(k, 0) > own_restorer.get(k, 0) for k in GROWN)
    if _architecture(base_config) != _architecture(own_config) or shrunk:
        raise CheckpointError(f"--blend-from {base_dir}: another architecture than the run's model")
    base = read_tensors(base_dir, "model")
    state = generator.state_dict()
    # A wider run: the base's units keep their places, the new units' own weights come from
    # the run, and whatever reads them starts at zero (as `init_from` grows it).
    base.update(_grown_hidden(generator, state, base, read_config(base_dir)))
    base.update(_grown_backward(state, base))  # a wider backward GRU: the same
    base.update(_grown_refiner(state, base))  # more refiner channels: the same
    for name, value in state.items():
        if name in base:
            continue
        parts = name.split(".")
        grown = (
            len(parts) > 2
            and parts[-3] in ("residual_grus", "residual_projections")
            and parts[-2].isdigit()
            and int(parts[-2]) >= base_layers
        )
        zero_start = ("backward_projection", "freq_projection")
        layers = ("backward_gru", "bin_context", *zero_start)
        modules = ("freq_conv", "bin_refiner", "bin_activations")
        added = len(parts) > 2 and (parts[-2] in layers or parts[-3] in modules)
        if grown or added:
            # what the grown base reads of a new block starts at zero: the projections and
            # the bin refiner's last layer (gain 1)
            zero = parts[-3] == "residual_projections" or parts[-2] in zero_start
            zero = zero or parts[-3:-1] == ["bin_refiner", "2"]
            base[name] = torch.zeros_like(value) if zero else value.clone()
    base.update(_grown_inputs(state, base))  # new input bins: zero weights, as `init_from`
    if set(base) != set(state) or any(base[k].shape != state[k].shape for k in state):
        raise CheckpointError(f"--blend-from {base_dir}: its weights do not match the run's model")
    with torch.no_grad():
        mixed = {
            k: base[k] + blend * (v - base[k]) if v.is_floating_point() else v
            for k, v in state.items()
        }
    generator.load_state_dict(mixed, strict=True)


def _metrics_tail(run_dir: Path, count: int = 3) -> list[str]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return path.read_text().strip().splitlines()[-count:]
