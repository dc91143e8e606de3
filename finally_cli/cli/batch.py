"""`finally batch IN_DIR -o OUT_DIR`: restore a folder tree into a mirrored tree."""

from __future__ import annotations

import csv
import json
import os
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
    fail,
    handle_errors,
)

DEFAULT_EXTENSIONS = "wav,flac,ogg,mp3,opus,aiff,aif,au,w64,caf"
REPORT_FIELDS = ("input", "output", "status", "duration", "seconds", "error")


def find_inputs(root: Path, extensions: set[str], exclude: Path | None) -> list[Path]:
    """Audio files under `root` (recursive, sorted), skipping anything under `exclude`."""
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower().lstrip(".") not in extensions:
            continue
        if path.name.startswith("."):
            continue
        if exclude is not None and exclude in path.resolve().parents:
            continue
        found.append(path)
    return found


def shard() -> tuple[int, int, int]:
    """(rank, world size, local rank) set by `accelerate launch` / torchrun, else (0, 1, 0)."""
    rank = int(os.environ.get("RANK", os.environ.get("PROCESS_RANK", "0")))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def write_report(path: Path, rows: list[dict]) -> None:
    """CSV or JSON (by extension), written to a temporary file and renamed."""
    tmp = path.with_name(f".{path.name}.part")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        tmp.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    else:
        with tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=REPORT_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
    os.replace(tmp, path)


@handle_errors
def batch(
    input_dir: Annotated[
        Path, typer.Argument(metavar="IN_DIR", help="Folder to scan recursively.")
    ],
    output_dir: Annotated[
        Path, typer.Option("--output", "-o", help="Output folder (mirrors IN_DIR).")
    ],
    extensions: Annotated[
        str, typer.Option("--ext", help="Comma-separated input extensions.")
    ] = DEFAULT_EXTENSIONS,
    output_ext: Annotated[
        str, typer.Option("--output-ext", help="Output extension, or 'keep'.")
    ] = ".wav",
    report: Annotated[
        Path | None,
        typer.Option(
            help="Per-file report, .csv or .json \\[default: OUT_DIR/finally-report.csv]."
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
    """Restore every audio file under IN_DIR; finished outputs are skipped, so re-runs resume.

    Windows of many short files share batches. Under `accelerate launch` (or torchrun)
    each process takes its share of the files and its own GPU.
    """
    from finally_cli.audio.io import FORMATS, duration_seconds
    from finally_cli.cli.options import parse_batch_size
    from finally_cli.cli.progress import audio_progress
    from finally_cli.inference.enhancer import Enhancer, EnhancerOptions, FileResult

    if not input_dir.is_dir():
        fail(f"{input_dir}: not a folder", 2)
    rank, world, local_rank = shard()
    if device == "auto" and world > 1:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{local_rank % torch.cuda.device_count()}"
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
    wanted = {e.strip().lower().lstrip(".") for e in extensions.split(",") if e.strip()}
    exclude = output_dir.resolve() if output_dir.resolve() != input_dir.resolve() else None
    inputs = find_inputs(input_dir, wanted, exclude)[rank::world]
    if output_ext != "keep" and not output_ext.startswith("."):
        output_ext = "." + output_ext

    rows: list[dict] = []
    pairs = []
    for path in inputs:
        relative = path.relative_to(input_dir)
        ext = path.suffix.lower() if output_ext == "keep" else output_ext.lower()
        if ext not in FORMATS:
            ext = ".wav"
        target = output_dir / relative.with_suffix(ext)
        if target.exists() and not overwrite:
            rows.append(vars(FileResult(str(path), str(target), "skipped")))
        else:
            pairs.append((path, target))

    report_path = report or output_dir / "finally-report.csv"
    if world > 1:
        report_path = report_path.with_name(f"{report_path.stem}.rank{rank}{report_path.suffix}")
    failed = 0
    try:
        if pairs:
            enhancer = Enhancer.from_pretrained(model, options, revision=revision, offline=offline)
            total = sum(duration_seconds(p) for p, _ in pairs)
            with audio_progress(quiet) as bars:
                task = bars.add_task("audio", total=total)
                files_task = bars.add_task("files", total=len(pairs), unit="files")

                def on_result(result: FileResult) -> None:
                    rows.append(vars(result))
                    bars.advance(files_task)
                    if result.status == "failed":
                        bars.console.print(f"[red]failed[/red] {result.error}", highlight=False)

                enhancer.enhance_files(
                    pairs, progress=lambda s: bars.advance(task, s), on_result=on_result
                )
    finally:
        write_report(report_path, rows)
    failed = sum(1 for r in rows if r["status"] == "failed")
    done = sum(1 for r in rows if r["status"] == "ok")
    skipped = sum(1 for r in rows if r["status"] == "skipped")
    typer.echo(f"{done} enhanced, {skipped} skipped, {failed} failed; report: {report_path}")
    if failed:
        for row in rows:
            if row["status"] == "failed":
                typer.echo(f"error: {row['error']}", err=True)
        raise typer.Exit(1)
