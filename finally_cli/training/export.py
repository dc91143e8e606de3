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
) -> Path:
    """Write config.json + model.safetensors + README.md for the newest checkpoint, the
    checkpoint of `checkpoint_step`, or the given in-memory generator."""
    run_dir = Path(run_dir)
    if generator is None:
        found = checkpoints(run_dir)
        if not found:
            raise CheckpointError(f"{run_dir}: no checkpoint to export")
        if checkpoint_step is None:  # the newest that reads back whole (a kill may cut one)
            chosen, weights = newest_weights(run_dir)
        else:
            steps = [int(p.name[5:]) for p in found]
            if checkpoint_step not in steps:
                kept = ", ".join(map(str, steps))
                raise CheckpointError(
                    f"{run_dir}: no checkpoint of step {checkpoint_step} (kept: {kept})"
                )
            chosen = found[steps.index(checkpoint_step)]
            weights = model_weights(chosen)
        config = GeneratorConfig.from_dict(json.loads((run_dir / "model_config.json").read_text()))
        generator = create_model(config)
        generator.load_state_dict(weights, strict=True)
        step = json.loads((chosen / "state.json").read_text())["step"]
    train_config = json.loads((run_dir / "config.json").read_text())
    lines = _metrics_tail(run_dir)
    card = (
        "---\nlicense: apache-2.0\ntags: [speech-enhancement, finally-cli]\n---\n\n"
        f"# {generator.config.name}\n\n"
        f"Trained with `finally train`, stage {train_config['stage']}, {step} steps "
        f"(batch {train_config['batch_size']} × accumulation {train_config['grad_accum']}), "
        f"{generator.config.output_sample_rate} Hz output.\n\n"
        f"Clean data: {', '.join(train_config['data']['clean']) or '-'}; noise: "
        f"{', '.join(train_config['data']['noise']) or 'synthetic'}.\n\n"
        + (f"Validation: {json.dumps(extra['validation'])}\n\n" if extra else "")
        + ("Last logged losses:\n\n```\n" + "\n".join(lines) + "\n```\n" if lines else "")
    )
    save_model(generator, out_dir, card=card)
    return out_dir


def _metrics_tail(run_dir: Path, count: int = 3) -> list[str]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return path.read_text().strip().splitlines()[-count:]
