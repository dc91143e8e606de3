"""Aggregate per-file rows: means, 95 % confidence intervals, deltas; CSV, JSON, rich tables."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np

BASE_COLUMNS = ("system", "file", "condition", "lag_ms", "notes")


def metric_columns(rows: list[dict]) -> list[str]:
    """Metric columns in first-seen order (everything that is not a base column)."""
    seen: list[str] = []
    for row in rows:
        for key in row:
            if key not in BASE_COLUMNS and key not in seen:
                seen.append(key)
    return seen


def _values(rows: list[dict], column: str) -> np.ndarray:
    out = [r.get(column) for r in rows]
    return np.array(
        [v for v in out if isinstance(v, (int, float)) and math.isfinite(v)], dtype=np.float64
    )


def stats(values: np.ndarray) -> dict:
    """Mean, half-width of the 95 % t-interval, and count."""
    from scipy import stats as scipy_stats

    n = int(values.size)
    if n == 0:
        return {"mean": None, "ci95": None, "n": 0}
    mean = float(values.mean())
    if n < 2:
        return {"mean": mean, "ci95": None, "n": n}
    half = float(scipy_stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "ci95": half, "n": n}


def summarize(rows: list[dict], systems: list[str], columns: list[str]) -> dict:
    """{system: {column: {mean, ci95, n, delta}}}; delta = mean − first system's mean."""
    summary: dict = {}
    for system in systems:
        mine = [r for r in rows if r["system"] == system]
        summary[system] = {c: stats(_values(mine, c)) for c in columns}
    first = systems[0] if systems else None
    for system in systems:
        for column in columns:
            entry = summary[system][column]
            base = summary[first][column]["mean"] if first else None
            entry["delta"] = (
                entry["mean"] - base if entry["mean"] is not None and base is not None else None
            )
    return summary


def by_condition(rows: list[dict], systems: list[str], columns: list[str]) -> dict:
    conditions = sorted({r.get("condition", "") for r in rows if r.get("condition")})
    return {
        c: summarize([r for r in rows if r.get("condition") == c], systems, columns)
        for c in conditions
    }


def write_csv(path: Path, rows: list[dict]) -> None:
    columns = list(BASE_COLUMNS) + metric_columns(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _csv_value(row.get(k, "")) for k in columns})


def _csv_value(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=_jsonable) + "\n", encoding="utf-8")


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def format_cell(entry: dict, show_delta: bool) -> str:
    if entry["mean"] is None:
        return "n/a"
    text = f"{entry['mean']:.3f}"
    if entry["ci95"] is not None:
        text += f" ± {entry['ci95']:.3f}"
    if show_delta and entry.get("delta") is not None:
        text += f" ({entry['delta']:+.3f})"
    return text


HEADERS = {
    "dnsmos_sig": "SIG",
    "dnsmos_bak": "BAK",
    "dnsmos_ovrl": "OVRL",
    "dnsmos_p808": "P.808",
    "pesq": "PESQ",
    "estoi": "ESTOI",
    "sisdr": "SI-SDR",
    "lsd": "LSD",
}


def rich_table(summary: dict, columns: list[str], title: str, width: int = 80):  # noqa: ANN201
    """Mean ± 95 % CI and (Δ vs the first system): one row per system when that fits in
    `width` columns, else transposed (one row per metric, one narrow column per system, the
    CI and Δ on lines of their own), so an 80-column terminal shows every number."""
    from rich.table import Table

    systems = list(summary)
    cells = {
        system: [format_cell(entries[c], i > 0) for c in columns]
        for i, (system, entries) in enumerate(summary.items())
    }
    widths = [max([len(HEADERS.get(c, c))] + [len(cells[s][j]) for s in systems])
              for j, c in enumerate(columns)]  # fmt: skip
    wide = max(map(len, systems), default=6) + sum(w + 3 for w in widths) + 4
    if wide <= width:
        table = Table(title=title)
        table.add_column("system")
        for column in columns:
            table.add_column(HEADERS.get(column, column), justify="right")
        for system in systems:
            table.add_row(system, *cells[system])
        return table
    table = Table(title=title, show_lines=True)
    table.add_column("metric")
    for system in systems:
        table.add_column(system, justify="right", overflow="fold")
    for j, column in enumerate(columns):
        # Three short lines per cell: mean, ±CI, signed Δ (the title says against what).
        stacked = [
            cells[system][j].replace(" ± ", "\n±").replace(" (", "\n").rstrip(")")
            for system in systems
        ]
        table.add_row(HEADERS.get(column, column), *stacked)
    return table
