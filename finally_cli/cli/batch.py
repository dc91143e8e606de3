"""`finally batch IN_DIR -o OUT_DIR`: restore a folder tree into a mirrored tree."""

from __future__ import annotations

import csv
import io
import json
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
    fail,
    handle_errors,
)

if TYPE_CHECKING:
    from finally_cli.inference.options import EnhancerOptions

REPORT_FIELDS = ("input", "output", "status", "duration", "seconds", "error")


def shard() -> tuple[int, int, int]:
    """(rank, world size, local rank) set by `accelerate launch` / torchrun, else (0, 1, 0)."""
    rank = int(os.environ.get("RANK", os.environ.get("PROCESS_RANK", "0")))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return rank, world, local


def report_row(result: object) -> dict:
    """A FileResult as a report row: seconds to the millisecond."""
    row = dict(vars(result))
    row["duration"] = round(float(row["duration"]), 3)
    row["seconds"] = round(float(row["seconds"]), 3)
    return row


def read_report(path: Path) -> dict[str, dict]:
    """Rows of an earlier report at `path`, by input; {} when there is none.

    Raises:
        OutputError: `path` exists but is not a report that `finally batch` wrote.
    """
    from finally_cli.errors import OutputError

    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            rows = json.loads(text)
        else:
            reader = csv.DictReader(io.StringIO(text))
            rows = list(reader) if tuple(reader.fieldnames or ()) == REPORT_FIELDS else None
    except (OSError, UnicodeDecodeError, ValueError):
        rows = None
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and set(r) == set(REPORT_FIELDS) for r in rows
    ):
        raise OutputError(f"{path}: exists and is not a finally batch report; not replaced")
    return {r["input"]: r for r in rows}


def write_report(path: Path, rows: list[dict]) -> None:
    """CSV or JSON (by extension), written to a temporary file and renamed."""
    from finally_cli.audio.files import atomic_write_text

    if path.suffix.lower() == ".json":
        atomic_write_text(path, json.dumps(rows, indent=2) + "\n")
        return
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=REPORT_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def output_paths(
    inputs: list[Path], input_dir: Path, output_dir: Path, output_ext: str
) -> dict[Path, Path]:
    """Input → output path (the input's place in the tree, `output_ext` or its own, `.wav`
    when we cannot write its format).

    Raises:
        ConfigError: two inputs would write one output (`x.wav` and `x.flac`).
    """
    from finally_cli.audio.io import FORMATS
    from finally_cli.errors import ConfigError

    targets: dict[Path, Path] = {}
    owner: dict[Path, Path] = {}
    for path in inputs:
        ext = path.suffix.lower() if output_ext == "keep" else output_ext.lower()
        ext = ext if ext in FORMATS else ".wav"
        target = output_dir / path.relative_to(input_dir).with_suffix(ext)
        if target in owner:
            hint = "rename one" if output_ext == "keep" else "rename one, or pass --output-ext keep"
            raise ConfigError(
                f"{owner[target]} and {path} would both be written to {target}; {hint}"
            )
        owner[target] = path
        targets[path] = target
    return targets


@handle_errors
@engine_options()
def batch(
    input_dir: Annotated[
        Path, typer.Argument(metavar="IN_DIR", help="Folder to scan recursively.")
    ],
    output_dir: Annotated[
        Path,
        typer.Option("--output", "-o", metavar="OUT_DIR", help="Output folder (mirrors IN_DIR)."),
    ],
    extensions: Annotated[
        str | None,
        typer.Option(
            "--ext",
            metavar="EXT,...",
            show_default=False,
            help="Comma-separated input extensions \\[default: every format this machine "
            "reads; m4a/mp4/mkv/webm... with ffmpeg].",
        ),
    ] = None,
    output_ext: Annotated[
        str, typer.Option("--output-ext", metavar="EXT|keep", help="Output extension, or keep.")
    ] = ".wav",
    report: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            show_default=False,
            help="Per-file report, .csv or .json; re-runs keep earlier rows "
            "\\[default: OUT_DIR/finally-report.csv].",
        ),
    ] = None,
    model: ModelOpt = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    options: EnhancerOptions = None,  # type: ignore[assignment]  # made by engine_options
    quiet: QuietOpt = False,
) -> None:
    """Restore every audio file under IN_DIR; finished outputs are skipped, so re-runs resume.

    Windows of many short files share batches. Under `accelerate launch` (or torchrun)
    each process takes every N-th file and its own GPU; rank 0 writes the one report.
    """
    from dataclasses import replace

    from finally_cli.audio.files import (
        check_writable,
        find_audio,
        readable_extensions,
        remove_stale_parts,
    )
    from finally_cli.audio.io import OutputFile, duration_seconds, unfinished_output
    from finally_cli.cli.shards import ShardGroup, merge_shards, write_shard
    from finally_cli.errors import FinallyError

    if not input_dir.is_dir():
        fail(f"{input_dir}: not a folder", 2)
    rank, world, local_rank = shard()
    group = ShardGroup(rank, world) if world > 1 else None
    if options.device == "auto" and world > 1:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{local_rank % torch.cuda.device_count()}"
            options = replace(options, device=device)
    wanted = readable_extensions()
    if extensions is not None:
        wanted = tuple("." + e.strip().lower().lstrip(".") for e in extensions.split(","))
    source_root, output_root = input_dir.resolve(), output_dir.resolve()
    if source_root == output_root or output_root in source_root.parents:
        fail(
            f"{output_dir}: output folder overlaps the input folder {input_dir} (outputs "
            f"would land among the inputs); choose OUT_DIR outside IN_DIR, or a new folder "
            f"inside it (skipped when scanning)",
            2,
        )
    found = find_audio(input_dir, wanted, output_dir)
    not_read = found.ignored_summary()
    if not found.files:
        fail(f"{input_dir}: no audio files to enhance ({not_read or 'the folder is empty'})", 2)
    if output_ext != "keep" and not output_ext.startswith("."):
        output_ext = "." + output_ext
    # Every process maps the whole list, so a clash stops all of them before any work.
    targets = output_paths(found.files, input_dir, output_dir, output_ext)
    inputs = found.files[rank::world]

    report_path = report or output_dir / "finally-report.csv"
    check_writable(report_path, "report")
    earlier = read_report(report_path)
    remove_stale_parts(targets[path] for path in inputs)  # what a killed run left
    rows: dict[str, dict] = {}
    pairs = []
    refused: set[str] = set()
    for path in inputs:
        target = targets[path]
        if (target.exists() or target.is_symlink()) and not options.overwrite:
            redo = unfinished_output(path, target, options.out_rate, options.channels)
            if redo is not None:  # truncated, empty, garbage or the wrong length
                if not quiet:
                    typer.echo(f"warning: {target}: {redo}; enhancing it again", err=True)
                try:
                    pairs.append((path, OutputFile.check(target, options.subtype, True)))
                except FinallyError as err:  # e.g. a folder at the output path
                    refused.add(str(path))
                    rows[str(path)] = {**dict.fromkeys(REPORT_FIELDS, ""), "input": str(path),
                                       "output": str(target), "status": "failed",
                                       "duration": 0.0, "seconds": 0.0,
                                       "error": str(err)}  # fmt: skip
                continue
            before = earlier.get(str(path))
            if before is not None and before["status"] == "ok" and before["output"] == str(target):
                rows[str(path)] = before  # written by an earlier run: keep its result
            else:
                rows[str(path)] = {**dict.fromkeys(REPORT_FIELDS, ""), "input": str(path),
                                   "output": str(target), "status": "skipped",
                                   "duration": 0.0, "seconds": 0.0}  # fmt: skip
        else:
            pairs.append((path, target))
    try:
        if pairs:
            _enhance(pairs, model, revision, offline, options, quiet, rows, duration_seconds)
    finally:
        if group is None:
            kept = {k: v for k, v in earlier.items() if k not in rows}
            if kept or rows:  # nothing to record (the model failed to load): no new folder
                write_report(report_path, list(kept.values()) + list(rows.values()))
        else:  # also when interrupted: a record of what this rank finished
            write_shard(report_path, rank, list(rows.values()))
    done = {str(path) for path, _ in pairs} | refused
    counts = {
        "enhanced": sum(1 for key in done if rows[key]["status"] == "ok"),
        "skipped": len(inputs) - len(done),
        "failed": sum(1 for key in done if rows[key]["status"] == "failed"),
    }
    for row in rows.values():
        if row["status"] == "failed" and str(row["input"]) in done:
            typer.echo(f"error: {row['error']}", err=True)
    if group is not None:
        counts = group.totals(counts)  # returns when every rank has finished its share
        if rank == 0:
            merged = {r["input"]: r for r in merge_shards(report_path, world)}
            kept = {k: v for k, v in earlier.items() if k not in merged}
            write_report(report_path, list(kept.values()) + list(merged.values()))
        group.barrier()  # no rank ends (and so ends the launch) before the report exists
        group.close()
    if not quiet and rank == 0:
        summary = f"{counts['enhanced']} enhanced, {counts['skipped']} skipped, "
        summary += f"{counts['failed']} failed"
        if world > 1:
            summary += f" ({world} processes)"
        if not_read:
            summary += f"; {not_read} not read"
        typer.echo(f"{summary}; report: {report_path}")
    if counts["failed"]:
        raise typer.Exit(1)


def _enhance(pairs, model, revision, offline, options, quiet, rows, duration) -> None:  # noqa: ANN001
    """Run the enhancer over `pairs`, filling `rows` as files end (progress on stderr)."""
    from finally_cli.cli.progress import audio_progress
    from finally_cli.inference.enhancer import Enhancer

    enhancer = Enhancer.from_pretrained(model, options, revision=revision, offline=offline)
    total = sum(duration(p) for p, _ in pairs)
    with audio_progress(quiet) as bars:
        task = bars.add_task("audio", total=total)
        files_task = bars.add_task("files", total=len(pairs), unit="files")

        def on_result(result: object) -> None:
            rows[result.input] = report_row(result)  # type: ignore[attr-defined]
            bars.advance(files_task)

        enhancer.enhance_files(pairs, progress=lambda s: bars.advance(task, s), on_result=on_result)
