"""`finally eval --html`: one page to listen to and compare the systems file by file, offline."""

from __future__ import annotations

import datetime
import math
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np

from finally_cli.audio.files import atomic_write_text
from finally_cli.errors import OutputError
from finally_cli.evaluation import report_charts, report_page, spectrogram

MARKER = ".finally-eval-report"  # marks a media folder this module wrote (and may replace)
SPEC_ROWS, SPEC_COLUMNS = 160, 400


@dataclass(frozen=True)
class Source:
    """A column of players: the noisy input, a system or the reference (key → audio file)."""

    name: str
    files: dict[str, Path]


def media_folder(path: Path) -> Path:
    """Where the media of the page at `path` go: `REPORT.html` → `REPORT_files/`."""
    return path.with_name(f"{path.stem}_files")


def media_keys(keys: list[str], conditions: dict[str, str], limit: int) -> list[str]:
    """Up to `limit` keys (0 = all), taken round-robin over the conditions, in key order."""
    if limit <= 0 or limit >= len(keys):
        return list(keys)
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(conditions.get(key, ""), []).append(key)
    chosen: list[str] = []
    while len(chosen) < limit:
        for group in groups.values():
            if group and len(chosen) < limit:
                chosen.append(group.pop(0))
    return sorted(chosen, key=keys.index)


def write_media(
    folder: Path,
    keys: list[str],
    sources: list[Source],
    link: str,
    progress: Callable[[], None] | None = None,
) -> dict[str, list[dict]]:
    """FLAC copies (16-bit, own rate, mono) and spectrogram PNGs of each key's sources.

    The spectrograms of one file share one level scale (top = the loudest of them), so
    systems are compared at equal brightness.

    Returns:
        key → [{source, audio, image}], the links relative to the page (`link`/file).
    """
    import soundfile as sf
    import soxr

    from finally_cli.audio.io import load_mono

    media: dict[str, list[dict]] = {}
    for index, key in enumerate(keys):
        levels, entries = [], []
        for number, source in enumerate(sources):
            path = source.files.get(key)
            if path is None:
                continue
            try:
                audio, rate = load_mono(path)
            except Exception:  # noqa: BLE001 - the table already reports unreadable files
                continue
            stem = f"{index:04d}-{number:02d}"
            audio = np.clip(audio, -1.0, 1.0)
            sf.write(str(folder / f"{stem}.flac"), audio, rate, subtype="PCM_16", format="FLAC")
            levels.append(
                spectrogram.power_db(soxr.resample(audio, rate, 48000), SPEC_ROWS, SPEC_COLUMNS)
            )
            entries.append({"source": source.name, "audio": stem, "image": stem})
        top = max((float(level.max()) for level in levels), default=0.0)
        for level, entry in zip(levels, entries):
            (folder / f"{entry['image']}.png").write_bytes(spectrogram.to_png(level, top))
            entry["audio"] = f"{link}/{entry['audio']}.flac"
            entry["image"] = f"{link}/{entry['image']}.png"
        media[key] = entries
        if progress:
            progress()
    return media


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def file_entries(
    rows: list[dict],
    keys: list[str],
    columns: list[str],
    conditions: dict[str, str],
    media: dict[str, list[dict]],
) -> list[dict]:
    """One entry per file for the page: scores per system, notes, media (or None)."""
    by_key: dict[str, dict] = {
        key: {
            "key": key,
            "condition": conditions.get(key, ""),
            "scores": {},
            "notes": [],
            "media": media.get(key),
        }
        for key in keys
    }
    for row in rows:
        entry = by_key.get(row["file"])
        if entry is None:
            continue
        entry["scores"][row["system"]] = {c: _number(row.get(c)) for c in columns}
        if row.get("notes"):
            entry["notes"].append(f"{row['system']}: {row['notes']}")
    return list(by_key.values())


def write_html_report(
    path: Path,
    rows: list[dict],
    systems: list[str],
    columns: list[str],
    summary: dict,
    conditions: dict,
    sources: list[Source],
    keys: list[str],
    file_conditions: dict[str, str],
    notes: Sequence[str] = (),
    limit: int = 40,
    progress: Callable[[], None] | None = None,
) -> Path:
    """Write `path` (the page) and its media folder; returns the page's path.

    Args:
        path: the page, e.g. report.html; media go to report_files/ beside it.
        rows, systems, columns, summary, conditions: as scored by `finally eval`.
        sources: the player columns, in order (noisy input, systems, reference).
        keys: every scored file; `file_conditions`: key → condition.
        notes: lines for the page's header (unavailable metrics, missing files).
        limit: files with players and spectrograms (spread over the conditions); 0 = all.
        progress: called once per file with media.
    """
    folder = media_folder(path)
    if folder.exists() and not (folder / MARKER).exists():
        raise OutputError(f"{folder}: exists and was not written by finally eval --html")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.part")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / MARKER).write_text("media of a finally eval --html report\n", encoding="utf-8")
    chosen = media_keys(keys, file_conditions, limit)
    media = write_media(staging, chosen, sources, folder.name, progress)
    media_note = (
        f"Players and spectrograms are on {len(chosen)} of {len(keys)} files (spread over the "
        f"conditions; eval --html-files N changes the cap, 0 = all)."
        if len(chosen) < len(keys)
        else ""
    )
    data = {
        "systems": systems,
        "columns": [{"key": c, "label": report_charts.label(c)} for c in columns],
        "conditions": sorted({c for c in file_conditions.values() if c}),
        "files": file_entries(rows, keys, columns, file_conditions, media),
        "media_note": media_note or "No audio for this file.",
        "ticks": [
            (text, spectrogram.mel_fraction(hz))
            for text, hz in (("1k", 1000), ("4k", 4000), ("8k", 8000), ("16k", 16000))
        ],
    }
    groups = conditions or {"all files": summary}
    charts = "".join(report_charts.condition_chart(c, groups, systems) for c in columns)
    stamp = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    intro = "".join(
        f'<p class="meta">{escape(line)}</p>'
        for line in [
            f"{len(keys)} files, {len(systems)} systems; mean ± half-width of the 95 % "
            f"t-interval, (Δ) against {systems[0] if systems else '-'}; made {stamp}.",
            *notes,
            *([media_note] if media_note else []),
        ]
    )
    html = report_page.page(
        "finally eval — listening report",
        intro,
        report_charts.summary_table(summary, columns, "all files (click a header to sort)"),
        "By condition" if conditions else "All files",
        charts,
        data,
    )
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)
    atomic_write_text(path, html)
    return path
