"""`finally probe-features`: how well feature spaces separate and order speech sounds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from finally_cli.cli.options import OfflineOpt, QuietOpt, fail, handle_errors


@handle_errors
def probe_features(
    groups: Annotated[
        Path | None,
        typer.Argument(
            metavar="[GROUPS_DIR]", help="One sub-folder per group of clips of the same sound."
        ),
    ] = None,
    generate: Annotated[
        str | None,
        typer.Option(
            help="Generate groups instead: tts (espeak-ng), words (recorded takes of a word, "
            "ktuberling-data) or tones."
        ),
    ] = None,
    extractor: Annotated[
        list[str] | None,
        typer.Option(
            help="waveform, stft, logmel, mfcc, whisper-tiny.en|ge2e|dnsmos:LAYER|all, "
            "SSL_MODEL:conv|N|all, or all (built-ins + installed pretrained; repeatable)."
        ),
    ] = None,
    group_count: Annotated[int, typer.Option("--groups", help="Generated groups.")] = 8,
    per_group: Annotated[int, typer.Option(help="Generated clips per group.")] = 10,
    segment_seconds: Annotated[float, typer.Option(help="Segment length.")] = 0.5,
    noise: Annotated[
        Path | None, typer.Option(help="Folder of noise clips \\[default: synthetic].")
    ] = None,
    snr_min: Annotated[float, typer.Option(help="Lowest SNR of the SNR rule, dB.")] = 10.0,
    snr_max: Annotated[float, typer.Option(help="Highest SNR of the SNR rule, dB.")] = 20.0,
    seed: Annotated[int, typer.Option(help="Seed for generation, noise and K-means.")] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results as JSON.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Heat-map PNG over model layers.")] = None,
    rank: Annotated[
        list[Path] | None,
        typer.Option(
            help="Probe nothing: rank the pretrained layers in these --json results "
            "(the rule loss.features=auto follows; repeatable)."
        ),
    ] = None,
    offline: OfflineOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Clustering rule (K-means Rand index) and SNR rule (−Spearman) per feature extractor."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from finally_cli.probing import groups as g
    from finally_cli.probing.extractors import parse_extractors
    from finally_cli.probing.probe import heatmap, probe
    from finally_cli.probing.rules import synthetic_noise

    if rank:
        _print_ranking(rank)
        return
    if (groups is None) == (generate is None):
        fail("give GROUPS_DIR or --generate tts|tones (not both)", 2)
    if not segment_seconds > 0:
        fail(f"--segment-seconds {segment_seconds:g}: must be > 0", 2)
    if generate is not None and group_count < 2:  # one group: every clustering scores 1.000
        fail(f"--groups {group_count}: must be >= 2 (the rules compare groups)", 2)
    if generate is not None and per_group < 2:
        fail(f"--per-group {per_group}: must be >= 2", 2)
    if not snr_min < snr_max:
        fail(f"--snr-min {snr_min} must be below --snr-max {snr_max}", 2)
    if groups is not None:
        if not groups.is_dir():
            fail(f"{groups}: not a folder", 2)
        group_set = g.from_folders(groups, segment_seconds)
        source = str(groups)
    elif generate == "tts":
        group_set = g.from_tts(group_count, per_group, segment_seconds, seed)
        source = "tts:espeak-ng"
    elif generate == "words":
        group_set = g.from_recorded_words(group_count, per_group, segment_seconds, seed)
        source = "words:ktuberling-fr"
    elif generate == "tones":
        group_set = g.harmonic_tones(group_count, per_group, segment_seconds, seed)
        source = "tones"
    else:
        fail(f"--generate {generate!r}: expected tts, words or tones", 2)
    samples = group_set.segments.shape[1]
    if noise is not None:
        import soxr

        from finally_cli.audio.io import load_mono
        from finally_cli.evaluation.runner import audio_files

        clips = []
        for path in audio_files(noise).values():
            audio, rate = load_mono(path)
            clips.append(np.resize(soxr.resample(audio, rate, 16000), samples))
        if not clips:
            fail(f"{noise}: no audio files", 2)
        noise_set = np.stack(clips)
    else:
        noise_set = synthetic_noise(16, samples, seed)
    extractors = parse_extractors(extractor or ["waveform", "stft", "logmel", "mfcc"], offline)
    console = Console(stderr=True)
    with console.status("probing", spinner="dots") if not quiet else _null():
        rows = probe(group_set, extractors, noise_set, (snr_min, snr_max), seed)
    table = Table(
        "extractor",
        "dims",
        "Rand index",
        "adj. Rand",
        "SNR score",
        title=f"{len(group_set.names)} groups × {len(group_set.labels)} segments ({source})",
    )
    for row in rows:
        table.add_row(
            row["extractor"],
            str(row["dims"]),
            f"{row['rand_index']:.3f}",
            f"{row['adjusted_rand_index']:.3f}",
            f"{row['snr_score']:.3f}",
        )
    Console().print(table)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(
            json.dumps(
                {
                    "source": source,
                    "groups": group_set.names,
                    "segments": int(len(group_set.labels)),
                    "segment_seconds": segment_seconds,
                    "snr_range_db": [snr_min, snr_max],
                    "seed": seed,
                    "results": rows,
                },
                indent=2,
            )
            + "\n",
            encoding="utf-8",
        )
    if plot:
        if heatmap(rows, plot, f"probing ({source})") is None:
            console.print("no MODEL:LAYER extractor: no heat-map written", highlight=False)


def _print_ranking(paths: list[Path]) -> None:
    from rich.console import Console
    from rich.table import Table

    from finally_cli.errors import ConfigError
    from finally_cli.models.pretrained.ranking import rank

    documents = []
    for path in paths:
        try:
            documents.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as err:
            raise ConfigError(f"--rank {path}: cannot read probe results ({err})") from err
        if "results" not in documents[-1]:
            raise ConfigError(f"--rank {path}: not a probe-features --json file")
    rows = rank(documents)
    if not rows:
        raise ConfigError("--rank: no pretrained layer was probed in every file")
    table = Table("rank", "extractor", "mean rank", "Rand index", "SNR score")
    for i, row in enumerate(rows, start=1):
        table.add_row(
            str(i),
            row["extractor"],
            f"{row['mean_rank']:.2f}",
            f"{row['rand_index']:.3f}",
            f"{row['snr_score']:.3f}",
        )
    Console().print(table)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None
