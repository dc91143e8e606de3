"""PNG plots: per-metric box plots per system, per-condition bars."""

from __future__ import annotations

import math
from pathlib import Path


def _numeric(values: list) -> list[float]:
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def write_plots(
    folder: Path, rows: list[dict], systems: list[str], columns: list[str], conditions: dict
) -> list[Path]:
    """Write box plots (one PNG per metric) and, with conditions, grouped bar charts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for column in columns:
        data = [_numeric([r.get(column) for r in rows if r["system"] == s]) for s in systems]
        if not any(data):
            continue
        fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(systems), 4))
        ax.boxplot([d if d else [math.nan] for d in data], showmeans=True)
        ax.set_xticks(range(1, len(systems) + 1), systems)
        ax.set_title(column)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = folder / f"box_{column}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
        if conditions:
            names = list(conditions)
            fig, ax = plt.subplots(figsize=(2 + 1.0 * len(names) * len(systems) / 2, 4))
            width = 0.8 / max(1, len(systems))
            for i, system in enumerate(systems):
                means = [conditions[c][system][column]["mean"] for c in names]
                xs = [j + i * width for j in range(len(names))]
                ax.bar(xs, [m if m is not None else 0 for m in means], width, label=system)
            ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(names))])
            ax.set_xticklabels(names, rotation=30, ha="right")
            ax.set_title(f"{column} by condition")
            ax.legend(fontsize="small")
            fig.tight_layout()
            path = folder / f"conditions_{column}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
    return written
