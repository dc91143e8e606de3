"""`finally train ...`: training utilities (ssl-stats: clean statistics for SSL normalisation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from finally_cli.cli.options import OfflineOpt, QuietOpt, RevisionOpt, fail, handle_errors

app = typer.Typer(help="Train models and prepare what training needs.", no_args_is_help=True)


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
    device: Annotated[str, typer.Option(help="cpu, cuda[:N] or auto.")] = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Per-channel mean/std of clean speech at the conv encoder and every transformer layer."""
    import soxr

    from finally_cli.cli.progress import audio_progress
    from finally_cli.evaluation.runner import audio_files, load_mono
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
            network = AutoModel.from_pretrained(ssl, revision=revision, local_files_only=offline)
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
