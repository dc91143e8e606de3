"""Static parts of the listening report: the summary table and per-condition SVG charts."""

from __future__ import annotations

import math
from html import escape

from finally_cli.evaluation.metrics import column_direction
from finally_cli.evaluation.report import HEADERS

# Colour-blind-safe qualitative palette (Okabe–Ito), cycled when there are more systems.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000")


def label(column: str) -> str:
    """Column header with its direction, e.g. 'PESQ ↑' or 'LSD ↓'."""
    return f"{HEADERS.get(column, column)} {'↑' if column_direction(column) else '↓'}"


def summary_table(summary: dict, columns: list[str], caption: str) -> str:
    """HTML table: one row per system, `mean ± 95 % CI` and Δ vs the first system; best bold.

    Cells carry `data-value` (the mean) so the page can sort rows by any column.
    """
    best = {}
    for column in columns:
        means = [e[column]["mean"] for e in summary.values() if e[column]["mean"] is not None]
        if means:
            best[column] = max(means) if column_direction(column) else min(means)
    head = "".join(f'<th data-type="num" scope="col">{escape(label(c))}</th>' for c in columns)
    body = []
    for i, (system, entries) in enumerate(summary.items()):
        cells = [f'<th scope="row" data-value="{escape(system)}">{escape(system)}</th>']
        for column in columns:
            entry = entries[column]
            if entry["mean"] is None:
                cells.append('<td data-value="">n/a</td>')
                continue
            text = f"{entry['mean']:.3f}"
            if entry["ci95"] is not None:
                text += f" <small>± {entry['ci95']:.3f}</small>"
            if i > 0 and entry.get("delta") is not None:
                text += f' <small class="delta">({entry["delta"]:+.3f})</small>'
            strong = best.get(column) == entry["mean"]
            cls = ' class="best"' if strong else ""
            cells.append(f'<td data-value="{entry["mean"]:.6g}"{cls}>{text}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<table class="sortable summary"><caption>{escape(caption)}</caption>'
        f'<thead><tr><th data-type="text" scope="col">system</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    raw = (high - low) / max(1, count - 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def condition_chart(column: str, groups: dict[str, dict], systems: list[str]) -> str:
    """SVG: per group (condition), each system's mean as a dot with its 95 % CI as a bar.

    Args:
        column: the metric column.
        groups: {group name: summary} with summary[system][column] = {mean, ci95, ...}.
        systems: the systems, in legend order.
    """
    points = []  # (group index, system index, mean, ci)
    for g, summary in enumerate(groups.values()):
        for s, system in enumerate(systems):
            entry = summary.get(system, {}).get(column, {})
            if entry.get("mean") is not None:
                points.append((g, s, entry["mean"], entry.get("ci95") or 0.0))
    if not points:
        return ""
    low = min(m - c for _, _, m, c in points)
    high = max(m + c for _, _, m, c in points)
    pad = (high - low) * 0.08 or 0.5
    low, high = low - pad, high + pad
    group_width = max(60, 18 * len(systems) + 20)
    left, top, plot_height = 48, 24, 180
    width = max(left + group_width * len(groups) + 10, 240)
    legend, x, legend_y = [], left, top + plot_height + 36
    for s, system in enumerate(systems):
        entry_width = 24 + 7 * len(system)
        if x + entry_width > width and x > left:
            x, legend_y = left, legend_y + 16
        legend.append((x, legend_y, s, system))
        x += entry_width
    height = legend_y + 10

    def y(value: float) -> float:
        return top + plot_height * (high - value) / (high - low)

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(label(column))} by condition: mean and 95 % CI per system</title>",
        f'<text x="{left}" y="14" class="chart-title">{escape(label(column))}</text>',
    ]
    for tick in _ticks(low, high):
        parts.append(
            f'<line x1="{left}" x2="{width - 10}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'class="grid"/><text x="{left - 6}" y="{y(tick) + 4:.1f}" class="tick" '
            f'text-anchor="end">{tick:g}</text>'
        )
    step = (group_width - 20) / max(1, len(systems))
    for g, name in enumerate(groups):
        centre = left + g * group_width + group_width / 2
        parts.append(
            f'<text x="{centre:.1f}" y="{top + plot_height + 16}" class="tick" '
            f'text-anchor="middle">{escape(name)}</text>'
        )
    for g, s, mean, ci in points:
        x = left + g * group_width + 10 + step * (s + 0.5)
        color = PALETTE[s % len(PALETTE)]
        parts.append(
            f"<g><title>{escape(systems[s])}: {mean:.3f} ± {ci:.3f}</title>"
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y(mean + ci):.1f}" y2="{y(mean - ci):.1f}" '
            f'stroke="{color}" stroke-width="2"/>'
            f'<circle cx="{x:.1f}" cy="{y(mean):.1f}" r="4" fill="{color}"/></g>'
        )
    for x, legend_y, s, system in legend:
        parts.append(
            f'<circle cx="{x + 5}" cy="{legend_y - 4}" r="4" fill="{PALETTE[s % len(PALETTE)]}"/>'
            f'<text x="{x + 13}" y="{legend_y}" class="tick">{escape(system)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
