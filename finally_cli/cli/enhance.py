"""`finally enhance IN -o OUT`: restore one file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from finally_cli.cli.options import (
    DEFAULT_MODEL,
    BatchSizeOpt,
    ChannelsOpt,
    ChunkOpt,
    CompileOpt,
    DeviceOpt,
    MixOpt,
    ModelOpt,
    OfflineOpt,
    OverlapOpt,
    OverwriteOpt,
    PrecisionOpt,
    QuietOpt,
    RevisionOpt,
    SampleRateOpt,
    SubtypeOpt,
    WorkersOpt,
    handle_errors,
    parse_batch_size,
)


def default_output(input_path: Path) -> Path:
    from finally_cli.audio.io import FORMATS

    ext = input_path.suffix.lower() if input_path.suffix.lower() in FORMATS else ".wav"
    return input_path.with_name(f"{input_path.stem}_enhanced{ext}")


@handle_errors
def enhance(
    input_path: Annotated[Path, typer.Argument(metavar="IN", help="Audio file to restore.")],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output file; format from its extension \\[default: IN_enhanced.wav].",
        ),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "fp32",
    batch_size: BatchSizeOpt = "auto",
    workers: WorkersOpt = "auto",
    chunk_seconds: ChunkOpt = 10.24,
    overlap_seconds: OverlapOpt = 1.0,
    compile_model: CompileOpt = False,
    sample_rate: SampleRateOpt = None,
    channels: ChannelsOpt = "mix",
    mix: MixOpt = 1.0,
    subtype: SubtypeOpt = None,
    overwrite: OverwriteOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Restore one recording to 48 kHz studio quality."""
    from finally_cli.audio.io import check_output, output_format, probe
    from finally_cli.cli.progress import audio_progress
    from finally_cli.inference.enhancer import Enhancer, EnhancerOptions

    output = output or default_output(input_path)
    options = EnhancerOptions(
        chunk_seconds=chunk_seconds,
        overlap_seconds=overlap_seconds,
        batch_size=parse_batch_size(batch_size),
        workers=parse_batch_size(workers, "--workers"),
        device=device,
        precision=precision,
        sample_rate=sample_rate,
        channels=channels,
        mix=mix,
        subtype=subtype,
        overwrite=overwrite,
        compile=compile_model,
    )
    info = probe(input_path)  # cheap checks before the model loads
    output_format(output, subtype)
    check_output(output, overwrite)
    enhancer = Enhancer.from_pretrained(model, options, revision=revision, offline=offline)
    with audio_progress(quiet) as bars:
        task = bars.add_task(input_path.name, total=info.seconds)
        result = enhancer.enhance_file(input_path, output, progress=lambda s: bars.advance(task, s))
    rtf = result.seconds / max(result.duration, 1e-9)
    typer.echo(
        f"{output}: {result.duration:.1f} s of audio in {result.seconds:.1f} s (RTF {rtf:.3f})"
    )
