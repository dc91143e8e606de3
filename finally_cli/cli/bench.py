"""`finally bench`: speed and memory of the engine on this machine."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from finally_cli.cli.options import (
    DEFAULT_MODEL,
    JsonOpt,
    ModelOpt,
    OfflineOpt,
    RevisionOpt,
    engine_options,
    handle_errors,
)

if TYPE_CHECKING:
    from finally_cli.inference.options import EnhancerOptions


@handle_errors
@engine_options(
    "device", "precision", "batch_size", "workers", "chunk_seconds", "overlap_seconds",
    "compile_model",
)  # fmt: skip
def bench(
    model: ModelOpt = DEFAULT_MODEL,
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    options: EnhancerOptions = None,  # type: ignore[assignment]  # made by engine_options
    seconds: Annotated[float, typer.Option(help="Seconds of synthetic 48 kHz audio.")] = 60.0,
    short_files: Annotated[
        int,
        typer.Option(
            help="Also run the same audio as N short files (cross-file batching); 0 = off."
        ),
    ] = 0,
    flops: Annotated[
        bool,
        typer.Option(
            "--flops/--no-flops", help="Count FLOPs per audio second (torch.utils.flop_counter)."
        ),
    ] = True,
    blocks: Annotated[
        bool,
        typer.Option(
            "--blocks",
            help="Per-block FLOPs, bytes and time on "
            "one window, the measured matmul rate and copy "
            "bandwidth, and the resulting floor.",
        ),
    ] = False,
    baseline: Annotated[
        list[str] | None,
        typer.Option(
            "--baseline",
            help="Also time a peer on the same long file in the same run (file → file, like "
            "the model): noisereduce, rnnoise, deepfilternet3, nsnet2 or dtln; repeatable.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """RTF, throughput, peak memory and FLOPs of a model (random weights when none ship)."""
    from finally_cli.evaluation.baselines import check_baseline
    from finally_cli.inference.bench import bench_model, run_bench

    if seconds <= 0:
        from finally_cli.errors import ConfigError

        raise ConfigError(f"--seconds {seconds}: must be > 0")
    for name in baseline or []:
        check_baseline(name, timed=True)
    generator = bench_model(model, revision, offline)
    result = run_bench(generator, options, seconds, short_files, flops, baseline or [])
    if blocks:
        from finally_cli.inference.profile import hardware_floor

        result["blocks"] = hardware_floor(generator, result)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "metric",
        "value",
        title=f"finally bench: {result['model']} on {result['device']} ({result['precision']})",
    )
    for key, value in result.items():
        if key != "blocks":
            table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console = Console()
    console.print(table)
    if blocks:
        detail = Table(
            "block",
            "GFLOP / audio s",
            "MB moved / audio s",
            "ms / window",
            "GFLOP/s achieved",
            title="per block (one window, batch 1)",
        )
        for name, entry in result["blocks"]["per_block"].items():
            detail.add_row(
                name,
                f"{entry['gflop_per_audio_second']:.3f}",
                f"{entry['mb_per_audio_second']:.1f}",
                f"{entry['ms']:.1f}",
                f"{entry['achieved_gflops']:.1f}",
            )
        console.print(detail)
        floor = result["blocks"]
        console.print(
            f"matmul {floor['matmul_gflops']:.1f} GFLOP/s, copy "
            f"{floor['copy_gbps']:.1f} GB/s → floor RTF {floor['floor_rtf']:.4f} "
            f"(compute-bound {floor['compute_floor_rtf']:.4f}, memory-bound "
            f"{floor['memory_floor_rtf']:.4f})"
        )
