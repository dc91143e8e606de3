"""`finally eval SYSTEM_DIR... [--reference CLEAN_DIR]`: score and compare systems."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from finally_cli.cli.options import (
    DeviceOpt,
    OfflineOpt,
    QuietOpt,
    RevisionOpt,
    fail,
    handle_errors,
    parse_count,
)

if TYPE_CHECKING:
    from finally_cli.evaluation.runner import EvalPlan


@handle_errors
def evaluate(
    systems: Annotated[
        list[Path] | None,
        typer.Argument(metavar="SYSTEM_DIR", help="Folders of outputs to score."),
    ] = None,
    reference: Annotated[
        Path | None, typer.Option(help="Clean references, matched by relative path.")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="CSV with 'file' and 'condition' columns.")
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated: dnsmos, utmos, wvmos, pesq, estoi, sisdr, lsd \\[default: all]."
        ),
    ] = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="Per-file CSV.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="JSON summary.")] = None,
    plots: Annotated[Path | None, typer.Option(help="Folder for PNG plots.")] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            help="Listening report: players, spectrograms and scores per file; media go to "
            "a _files folder beside it."
        ),
    ] = None,
    html_files: Annotated[
        int,
        typer.Option(help="Files with players in --html (spread over conditions); 0 = all."),
    ] = 40,
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Enhance --noisy with this model and score it."),
    ] = None,
    noisy: Annotated[
        Path | None, typer.Option(help="Noisy inputs (with --model or --baseline).")
    ] = None,
    baseline: Annotated[
        list[str] | None,
        typer.Option(
            help="input, noisereduce, rnnoise, deepfilternet3, nsnet2 or dtln; repeatable."
        ),
    ] = None,
    work_dir: Annotated[Path, typer.Option(help="Where enhanced and baseline outputs go.")] = Path(
        "finally-eval"
    ),
    workers: Annotated[
        str, typer.Option(metavar="auto|N", help="Scoring processes; auto: one per CPU core.")
    ] = "auto",
    revision: RevisionOpt = None,
    offline: OfflineOpt = False,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
) -> None:
    """Score systems with DNSMOS (no reference) and PESQ/ESTOI/SI-SDR/LSD (with a reference)."""
    from rich.console import Console

    from finally_cli.cli.progress import file_progress
    from finally_cli.evaluation.baselines import check_baseline, run_baseline
    from finally_cli.evaluation.metrics import parse_metrics
    from finally_cli.evaluation.report import (
        by_condition,
        metric_columns,
        rich_table,
        summarize,
        write_csv,
        write_json,
    )
    from finally_cli.evaluation.runner import audio_files, make_plan, run_plan

    chosen = parse_metrics(metrics)
    processes = parse_count(workers, "--workers") or os.cpu_count() or 1
    if html_files < 0:
        fail(f"--html-files {html_files}: must be >= 0", 2)
    system_dirs: list[Path] = list(systems or [])
    names: list[str] = [d.name or str(d) for d in system_dirs]
    baselines = list(baseline or [])
    for name in baselines:
        check_baseline(name)
    if (model or baselines) and noisy is None:
        fail("--model and --baseline need --noisy DIR", 2)
    noisy_files: dict[str, Path] = {}
    if noisy is not None:
        noisy_files = audio_files(noisy)
        if "input" in baselines or model:
            system_dirs.insert(0, noisy)
            names.insert(0, "input")
        for name in [b for b in baselines if b != "input"]:
            with file_progress(quiet) as bars:
                task = bars.add_task(name, total=len(noisy_files))
                out = run_baseline(
                    name, noisy_files, work_dir / name, progress=lambda t=task: bars.advance(t)
                )
            system_dirs.append(out)
            names.append(name)
        if model:
            system_dirs.append(
                _enhance_folder(
                    model, noisy, noisy_files, work_dir, revision, offline, device, quiet
                )
            )
            names.append(Path(model).name or model)
    if not system_dirs:
        fail("nothing to score: give SYSTEM_DIR..., or --noisy with --model/--baseline", 2)
    plan = make_plan(system_dirs, reference, manifest, names=names)
    console = Console(stderr=True)
    for system, keys in plan.missing.items():
        console.print(
            f"missing in {system}: {len(keys)} files ({', '.join(keys[:5])}"
            f"{' ...' if len(keys) > 5 else ''})",
            highlight=False,
        )
    for system, keys in plan.unmatched.items():
        console.print(
            f"unmatched in {system} (not scored): {', '.join(keys[:5])}"
            f"{' ...' if len(keys) > 5 else ''}",
            highlight=False,
        )
    total = sum(1 for s in plan.systems for k in plan.keys if k in plan.files[s])
    with file_progress(quiet) as bars:
        task = bars.add_task("scoring", total=total)
        rows, skipped = run_plan(plan, chosen, processes, progress=lambda: bars.advance(task))
    for name, reason in skipped.items():
        console.print(f"{name}: n/a ({reason})", highlight=False)
    for row in rows:
        if str(row.get("notes", "")).startswith(("error", "length")):
            console.print(f"{row['system']}/{row['file']}: {row['notes']}", highlight=False)
    columns = [c for c in metric_columns(rows) if any(isinstance(r.get(c), float) for r in rows)]
    summary = summarize(rows, plan.systems, columns)
    conditions = by_condition(rows, plan.systems, columns)
    out = Console()
    title = f"mean ± 95 % CI (Δ vs {plan.systems[0]})" if plan.systems else "mean ± 95 % CI"
    out.print(rich_table(summary, columns, title, width=out.width))
    for condition, table in conditions.items():
        out.print(rich_table(table, columns, f"condition: {condition}", width=out.width))
    if csv_path:
        write_csv(csv_path, rows)
    if json_path:
        write_json(
            json_path,
            {
                "systems": dict(zip(plan.systems, [str(d) for d in system_dirs])),
                "reference": str(reference) if reference else None,
                "files": len(plan.keys),
                "metrics": columns,
                "unavailable": skipped,
                "missing": plan.missing,
                "unmatched": plan.unmatched,
                "errors": {
                    f"{r['system']}/{r['file']}": r["notes"]
                    for r in rows
                    if str(r.get("notes", "")).startswith("error")
                },
                "summary": summary,
                "conditions": conditions,
            },
        )
    if plots:
        from finally_cli.evaluation.plots import write_plots

        write_plots(plots, rows, plan.systems, columns, conditions)
    if html:
        _write_html(html, html_files, plan, rows, columns, summary, conditions, skipped,
                    noisy_files, system_dirs, noisy, quiet)  # fmt: skip
        console.print(f"listening report: {html}", highlight=False)
    failed = [r for r in rows if str(r.get("notes", "")).startswith("error")]
    if not columns:  # every file failed, no file matched, or every metric is n/a
        why = f"{len(failed)} of {len(rows)} files failed" if rows else "no files to score"
        fail(f"nothing could be scored ({why})", 1)
    if failed:
        console.print(f"{len(failed)} of {len(rows)} files failed (exit 1)", highlight=False)
        raise typer.Exit(1)


def _write_html(
    html: Path,
    limit: int,
    plan: EvalPlan,
    rows: list[dict],
    columns: list[str],
    summary: dict,
    conditions: dict,
    skipped: dict[str, str],
    noisy_files: dict[str, Path],
    system_dirs: list[Path],
    noisy: Path | None,
    quiet: bool,
) -> None:
    from finally_cli.cli.progress import file_progress
    from finally_cli.evaluation.html_report import Source, media_keys, write_html_report

    sources = []
    # The noisy input gets its own players unless it is already scored as a system.
    if noisy_files and not any(d == noisy for d in system_dirs):
        sources.append(Source("noisy input", noisy_files))
    sources += [Source(name, plan.files[name]) for name in plan.systems]
    if plan.reference is not None:
        sources.append(Source("reference", plan.reference))
    notes = [f"{name}: n/a ({reason})" for name, reason in skipped.items()]
    notes += [f"missing in {name}: {', '.join(keys)}" for name, keys in plan.missing.items()]
    with file_progress(quiet) as bars:
        task = bars.add_task("report", total=len(media_keys(plan.keys, plan.conditions, limit)))
        write_html_report(
            html, rows, plan.systems, columns, summary, conditions, sources, plan.keys,
            plan.conditions, notes, limit, progress=lambda: bars.advance(task),
        )  # fmt: skip


def _enhance_folder(
    model: str,
    noisy: Path,
    files: dict,
    work_dir: Path,
    revision: str | None,
    offline: bool,
    device: str,
    quiet: bool,
) -> Path:
    from finally_cli.audio.files import remove_stale_parts
    from finally_cli.audio.io import OutputFile, duration_seconds, unfinished_output
    from finally_cli.cli.progress import audio_progress
    from finally_cli.evaluation.work_dir import claim
    from finally_cli.inference.enhancer import Enhancer, EnhancerOptions
    from finally_cli.models.hub import fingerprint, load_model

    generator = load_model(model, revision=revision, offline=offline)
    # One folder per set of weights, named by their fingerprint: an interrupted eval resumes,
    # a retrained model never gets scored on stale audio, and nothing is ever deleted that
    # eval did not write (`work_dir.claim`).
    digest = fingerprint(generator)
    out_dir = work_dir / f"enhanced-{digest[:12]}"
    names = {key: f"{key}.wav" for key in files}
    made = claim(out_dir, {"fingerprint": digest}, list(names.values()), ".model.json")
    remove_stale_parts(out_dir / name for name in names.values())  # a killed eval's leftovers
    options = EnhancerOptions(device=device)
    pairs = []
    for key, path in files.items():
        target = out_dir / names[key]
        if names[key] in made and not unfinished_output(path, target, options.out_rate, "mix"):
            continue
        pairs.append((path, OutputFile.check(target, None, overwrite=True)))
    if pairs:
        enhancer = Enhancer(generator, options)
        with audio_progress(quiet) as bars:
            task = bars.add_task("enhancing", total=sum(duration_seconds(p) for p, _ in pairs))
            enhancer.enhance_files(pairs, progress=lambda s: bars.advance(task, s))
    return out_dir


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
