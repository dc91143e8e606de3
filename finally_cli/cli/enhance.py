"""`finally enhance IN -o OUT`: restore one file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from finally_cli.cli.options import (
    DEFAULT_MODEL,
    ModelOpt,
    OfflineOpt,
    QuietOpt,
    RevisionOpt,
    engine_options,
    handle_errors,
)

if TYPE_CHECKING:
    from finally_cli.inference.options import EnhancerOptions


def output_path(input_path: Path, output: str | None) -> Path:
    """The output file: `-o` as given, `<stem>_enhanced.wav` beside the input when absent,
    or inside `-o` when it names a folder (an existing one, or any name ending in /)."""
    from finally_cli.audio.io import default_output

    if output is None:
        return default_output(input_path)
    path = Path(output)
    if output.endswith(("/", os.sep)) or path.is_dir():
        return default_output(input_path, folder=path)
    return path


@handle_errors
@engine_options()
def enhance(
    input_path: Annotated[Path, typer.Argument(metavar="IN", help="Audio or video file.")],
    output: Annotated[
        str | None,
        typer.Option(
            "--output",
            "-o",
            metavar="OUT",
            show_default=False,
            help="Output file, format from its extension (.wav .flac .ogg .opus .aiff .mp3), "
            "or a folder/ to write IN's name + _enhanced.wav into "
            "\\[default: IN's name + _enhanced.wav, beside IN].",
        ),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    options: EnhancerOptions = None,  # type: ignore[assignment]  # made by engine_options
    quiet: QuietOpt = False,
) -> None:
    """Restore one recording to 48 kHz studio quality."""
    from finally_cli.audio.io import OutputFile
    from finally_cli.inference.sources import FileSource

    target = output_path(input_path, output)
    source = FileSource(input_path)  # cheap checks before the model loads
    checked = OutputFile.check(target, options.subtype, options.overwrite)

    from finally_cli.cli.progress import audio_progress
    from finally_cli.inference.enhancer import Enhancer

    enhancer = Enhancer.from_pretrained(model, options, revision=revision, offline=offline)
    with audio_progress(quiet) as bars:
        task = bars.add_task(input_path.name, total=source.info.seconds)
        result = enhancer.enhance_file(
            input_path, checked, progress=lambda s: bars.advance(task, s)
        )
    if not quiet:
        rtf = result.seconds / max(result.duration, 1e-9)
        typer.echo(
            f"{target}: {result.duration:.1f} s of audio in {result.seconds:.1f} s (RTF {rtf:.3f})"
        )
