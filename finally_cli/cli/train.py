"""`finally train ...`: training utilities (ssl-stats: clean statistics for SSL normalisation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from finally_cli.cli.command import App
from finally_cli.cli.options import OfflineOpt, QuietOpt, RevisionOpt, fail, handle_errors

app = App(
    help="Train models and prepare what training needs.",
    invoke_without_command=True,
    subcommand_metavar="[COMMAND [ARGS]...]",
)

ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config", "-c", help="Stage YAML: a path or a shipped name such as finally-small/stage1."
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override, e.g. data.clean=\\[/data/speech] (repeatable)."),
]


@app.callback()
@handle_errors
def train(
    ctx: typer.Context,
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run folder \\[default: runs/<config>].")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the newest checkpoint in --run-dir.")
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Start over in a --run-dir that holds a previous run: removes that run's own "
            "files (logs, checkpoints, best/, tensorboard events), nothing else.",
        ),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Run one training stage: `finally train --config finally-small/stage1 --set data.clean=[DIR]`.

    Stages chain through `init_from` (the previous stage's run or exported folder).
    """
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(2)
    import logging

    from rich.console import Console
    from rich.logging import RichHandler
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from finally_cli.training.config import load_config
    from finally_cli.training.trainer import Trainer

    logging.basicConfig(
        level=logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=Console(stderr=True), show_path=False)],
    )
    cfg = load_config(config, overrides)
    run_dir = run_dir or Path("runs") / config.replace("/", "-").removesuffix(".yaml")
    trainer = Trainer(cfg, run_dir, resume=resume, overwrite=overwrite)
    console = Console(stderr=True)
    columns = [
        TextColumn("[bold]stage {task.fields[stage]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[rate]:.2f} step/s"),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=console, disable=quiet or not console.is_terminal) as bars:
        task = bars.add_task(
            "train", total=cfg.steps, completed=trainer.step, stage=cfg.stage, rate=0.0, loss="-"
        )
        trainer.fit(
            lambda step, logs: bars.update(
                task,
                completed=step,
                rate=logs.get("steps_per_second", 0.0),
                loss=f"{logs.get('loss_g', float('nan')):.4f}",
            )
        )
    typer.echo(f"{run_dir}: stage {cfg.stage} at step {trainer.step}")


@app.command("prepare-val")
@handle_errors
def prepare_val(
    config: ConfigOpt = None,
    overrides: SetOpt = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write.")] = Path(
        "validation"
    ),
    count: Annotated[int, typer.Option(help="Number of pairs.")] = 64,
    seed: Annotated[int | None, typer.Option(help="Seed \\[default: the config's].")] = None,
) -> None:
    """Write a fixed validation set (noisy/clean 48 kHz pairs + manifest.csv) from a seed."""
    from finally_cli.training.config import load_config
    from finally_cli.training.data import pair_dataset
    from finally_cli.training.validation import prepare_validation

    if config is None:
        fail("--config is required", 2)
    from dataclasses import replace

    cfg = load_config(config, overrides)
    # Validation pairs are degraded from clean speech, never a teacher's (`data.pairs`) output.
    cfg = replace(cfg, data=replace(cfg.data, p_pairs=0.0))
    dataset = pair_dataset(cfg, count, 3, 4096, seed)
    prepare_validation(dataset, output, count)
    typer.echo(f"{output}: {count} validation pairs")


@app.command()
@handle_errors
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN_DIR", help="A training run folder.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model folder to write.")],
    best: Annotated[
        bool,
        typer.Option(
            "--best", help="Export the best validated model instead of the newest checkpoint."
        ),
    ] = False,
    step: Annotated[
        int | None,
        typer.Option("--step", help="Export the kept checkpoint of this step.", min=1),
    ] = None,
    blend_from: Annotated[
        Path | None,
        typer.Option(
            "--blend-from",
            help="A model folder of the same architecture (e.g. the one the run started from): "
            "write base + BLEND · (run − base).",
        ),
    ] = None,
    blend: Annotated[
        float,
        typer.Option(help="How far from --blend-from towards the run (0 … 1).", min=0.0, max=1.0),
    ] = 1.0,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="key.path=value in the model config, for settings that keep the weights "
            "(e.g. spectral_restorer.postfilter_below=0.15). Repeatable.",
        ),
    ] = None,
    average_with: Annotated[
        list[Path] | None,
        typer.Option(
            "--with",
            help="Another run of the same architecture (e.g. another seed from the same start): "
            "average its checkpoint of the same --step (or its newest) with this run's before any "
            "blend. "
            "Repeatable.",
        ),
    ] = None,
) -> None:
    """Turn a run's newest (best, or chosen) generator into a model folder for `--model`."""
    import shutil

    from finally_cli.training.export import export_model

    if best and step is not None:
        fail("--best and --step: choose one", 2)
    if best and blend_from is not None:
        fail("--best and --blend-from: export a --step to blend", 2)
    if best and overrides:
        fail("--best and --set: export a --step to change its config", 2)
    if best and average_with:
        fail("--best and --with: export a --step to average", 2)
    if best:
        if not (run_dir / "best" / "model.safetensors").is_file():
            fail(f"{run_dir}: no best/ model yet (validation has not run)", 1)
        shutil.copytree(run_dir / "best", output, dirs_exist_ok=True)
    else:
        export_model(
            run_dir,
            output,
            checkpoint_step=step,
            blend_from=blend_from,
            blend=blend,
            model_overrides=overrides,
            average_with=average_with,
        )
    typer.echo(str(output))


@app.command("ssl-stats")
@handle_errors
def ssl_stats(
    clean: Annotated[Path, typer.Option(help="Folder of clean speech (recursive).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Statistics file (.safetensors).")],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Generator whose SSL branch to use (name, folder or Hub id)."
        ),
    ] = None,
    ssl: Annotated[
        str | None, typer.Option(help="Or a transformers SSL model id / folder.")
    ] = None,
    max_files: Annotated[int, typer.Option(help="Use at most this many files (0 = all).")] = 0,
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    device: Annotated[str, typer.Option(help="cpu, cuda\\[:N] or auto.")] = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Per-channel mean/std of clean speech at the conv encoder and every transformer layer."""
    import soxr

    from finally_cli.audio.io import load_mono
    from finally_cli.cli.progress import audio_progress
    from finally_cli.evaluation.runner import audio_files
    from finally_cli.inference.device import pick_device
    from finally_cli.training.ssl_stats import save_statistics, ssl_statistics

    if (model is None) == (ssl is None):
        fail("give exactly one of --model or --ssl", 2)
    torch_device = pick_device(device)
    if model is not None:
        from finally_cli.models.hub import load_model

        generator = load_model(model, revision=revision, offline=offline)
        if generator.ssl is None:
            fail(f"{model}: this model has no SSL branch", 2)
        network = generator.ssl.model
        if generator.ssl.norm is not None:
            generator.ssl.norm.detach()  # statistics of the raw pre-trained features
        source = f"{model}:{generator.config.ssl.model_id}"
    else:
        from transformers import AutoModel

        try:
            network = AutoModel.from_pretrained(
                ssl, revision=revision, local_files_only=offline, use_safetensors=True
            )
        except (OSError, ValueError) as err:
            fail(f"{ssl}: cannot load SSL model ({type(err).__name__})", 2)
        source = str(ssl)
    files = list(audio_files(clean).values())
    if max_files:
        files = files[:max_files]
    if not files:
        fail(f"{clean}: no audio files", 1)
    network = network.to(torch_device)

    def waveforms():  # noqa: ANN202
        for path in files:
            audio, rate = load_mono(path)
            yield soxr.resample(audio, rate, 16000)

    with audio_progress(quiet) as bars:
        task = bars.add_task("ssl-stats", total=None)
        stats = ssl_statistics(network, waveforms(), progress=lambda s: bars.advance(task, s))
    output.parent.mkdir(parents=True, exist_ok=True)
    save_statistics(stats, output, source)
    layers = sorted({k.split("_", 1)[1] for k in stats}, key=lambda n: (n != "conv", len(n), n))
    typer.echo(f"{output}: statistics of {len(files)} files, layers {', '.join(layers)}")
