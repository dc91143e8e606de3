"""Match files across systems, score them in worker processes, collect per-file rows."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from finally_cli.audio.files import find_audio
from finally_cli.audio.io import load_mono
from finally_cli.errors import ConfigError
from finally_cli.evaluation.metrics import Metric, unavailable_reason

LENGTH_TOLERANCE_SECONDS = 0.05


@dataclass
class EvalPlan:
    """What to score: systems, per-key file paths, and the reference (if any)."""

    systems: list[str]
    files: dict[str, dict[str, Path]]  # system → key → path
    reference: dict[str, Path] | None
    keys: list[str]
    conditions: dict[str, str] = field(default_factory=dict)
    missing: dict[str, list[str]] = field(default_factory=dict)  # system → keys it lacks
    unmatched: dict[str, list[str]] = field(default_factory=dict)  # system → extra keys


def audio_files(folder: Path) -> dict[str, Path]:
    """Relative path without extension → file, for every audio file under `folder`."""
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a folder")
    return {
        path.relative_to(folder).with_suffix("").as_posix(): path
        for path in find_audio(folder).files
    }


def read_manifest(path: Path) -> dict[str, str]:
    """`file,condition` CSV → key (relative path without extension) → condition."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read manifest: {err}") from err
    if not rows or "file" not in rows[0]:
        raise ConfigError(f"{path}: manifest needs a 'file' column (and optionally 'condition')")
    return {Path(r["file"]).with_suffix("").as_posix(): r.get("condition", "") or "" for r in rows}


def make_plan(
    system_dirs: list[Path],
    reference_dir: Path | None,
    manifest: Path | None = None,
    names: list[str] | None = None,
) -> EvalPlan:
    """Match files by relative path (extension ignored); list what is missing or extra."""
    names = unique_names(names or [d.name or str(d) for d in system_dirs])
    files = {name: audio_files(d) for name, d in zip(names, system_dirs)}
    reference = audio_files(reference_dir) if reference_dir is not None else None
    conditions = read_manifest(manifest) if manifest is not None else {}
    if conditions:
        keys = sorted(conditions)
    elif reference is not None:
        keys = sorted(reference)
    else:
        keys = sorted(set().union(*(set(f) for f in files.values())))
    missing = {n: [k for k in keys if k not in f] for n, f in files.items()}
    if reference is not None:
        missing["reference"] = [k for k in keys if k not in reference]
    unmatched = {n: sorted(set(f) - set(keys)) for n, f in files.items()}
    return EvalPlan(
        names,
        files,
        reference,
        keys,
        conditions,
        {k: v for k, v in missing.items() if v},
        {k: v for k, v in unmatched.items() if v},
    )


def unique_names(names: list[str]) -> list[str]:
    """System names with repeats primed (a, a', a'') so each column stays distinct."""
    out: list[str] = []
    for name in names:
        while name in out:
            name += "'"
        out.append(name)
    return out


def plain_message(err: BaseException) -> str:
    """An exception as one readable line (PESQ raises bytes: b'Buffer needs to be ...')."""
    if type(err).__name__ == "BufferTooShortError":  # pesq's; pesq may not be installed
        return "needs at least 0.25 s of audio"
    text = err.args[0] if len(err.args) == 1 else str(err)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(str(text).split())
    return text or type(err).__name__


def score_file(
    system: str, key: str, path: Path, reference: Path | None, metrics: list[str]
) -> dict:
    """All requested metrics of one file (runs in a worker process).

    A metric that fails leaves its own columns empty and says why in `notes`
    ("error: pesq: needs at least 0.25 s of audio"); the other metrics are still scored.
    """
    import soxr

    from finally_cli.evaluation import metrics as m
    from finally_cli.evaluation.align import align

    row: dict = {"system": system, "file": key, "lag_ms": math.nan, "notes": ""}
    errors: list[str] = []
    remarks: list[str] = []

    def attempt(name: str, compute: Callable[[], object]) -> None:
        try:
            value = compute()
        except Exception as err:  # noqa: BLE001 - one failing metric must not blank the others
            errors.append(f"{name}: {plain_message(err)}")
            return
        if isinstance(value, dict):
            row.update(value)
        else:
            row[name] = value

    try:
        estimate, rate = load_mono(path)
        est48 = soxr.resample(estimate, rate, 48000)
        est16 = soxr.resample(estimate, rate, 16000)
        if "dnsmos" in metrics:
            attempt("dnsmos", lambda: m.dnsmos(est16))
        needs_ref = [n for n in metrics if n in m.REFERENCE_FUNCTIONS]
        if reference is not None and needs_ref:
            clean, clean_rate = load_mono(reference)
            ref48 = soxr.resample(clean, clean_rate, 48000)
            pair = align(ref48, est48, 48000)
            row["lag_ms"] = pair.lag / 48.0
            if abs(pair.length_difference) > LENGTH_TOLERANCE_SECONDS * 48000:
                remarks.append(
                    f"length differs from reference by {pair.length_difference / 48000:+.2f} s"
                )
            ref16 = soxr.resample(pair.reference, 48000, 16000)
            al16 = soxr.resample(pair.estimate, 48000, 16000)
            for name in needs_ref:
                if name == "lsd":
                    attempt("lsd", lambda: m.lsd(pair.reference, pair.estimate))
                else:
                    function = m.REFERENCE_FUNCTIONS[name]
                    attempt(name, lambda f=function: f(ref16, al16))
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the others
        errors.append(plain_message(err))
    if errors:
        remarks.insert(0, "error: " + "; ".join(errors))
    row["notes"] = "; ".join(remarks)
    return row


def _init_worker() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def run_plan(
    plan: EvalPlan, metrics: list[Metric], workers: int, progress: Callable[[], None] | None = None
) -> tuple[list[dict], dict[str, str]]:
    """Score every (system, key) present; returns rows and {metric: why n/a}."""
    skipped = {}
    runnable = []
    for metric in metrics:
        reason = unavailable_reason(metric.name)
        if reason is None and metric.needs_reference and plan.reference is None:
            reason = "needs --reference"
        if reason:
            skipped[metric.name] = reason
        else:
            runnable.append(metric.name)
    tasks = []
    for system in plan.systems:
        for key in plan.keys:
            path = plan.files[system].get(key)
            if path is None:
                continue
            ref = plan.reference.get(key) if plan.reference is not None else None
            tasks.append((system, key, path, ref, runnable))
    rows: list[dict] = []
    if workers <= 1:
        for task in tasks:
            rows.append(score_file(*task))
            if progress:
                progress()
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker) as pool:
            futures = [pool.submit(score_file, *task) for task in tasks]
            for future in as_completed(futures):
                rows.append(future.result())
                if progress:
                    progress()
    order = {s: i for i, s in enumerate(plan.systems)}
    rows.sort(key=lambda r: (order[r["system"]], r["file"]))
    for row in rows:
        row["condition"] = plan.conditions.get(row["file"], "")
        for metric in metrics:
            if metric.name in skipped:
                for column in metric.columns:
                    row[column] = "n/a"
    return rows, skipped
