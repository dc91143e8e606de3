"""Run the probing rules for many extractors; table rows, JSON document and heat-map."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from finally_cli.probing.extractors import Extractor
from finally_cli.probing.groups import GroupSet
from finally_cli.probing.rules import (
    check_groups_differ,
    check_groups_have_sound,
    clustering_rule,
    noisy_copies,
    snr_rule,
)


def probe(
    groups: GroupSet,
    extractors: list[Extractor],
    noise: np.ndarray,
    snr_range: tuple[float, float] = (10.0, 20.0),
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[dict]:
    """Scores per extractor: rand_index, adjusted_rand_index, snr_score, dims.

    Raises:
        ConfigError: a group is all silence, two groups' features are identical, or a
            group's features ignore the noise (either would score a meaningless nan or 1.000).
    """
    labels, names = groups.labels, groups.names
    check_groups_have_sound(groups.segments, labels, names)
    noisy, snrs = noisy_copies(groups.segments, noise, snr_range, seed)
    rows = []
    for extractor in extractors:
        clean_features = extractor.fn(groups.segments)
        noisy_features = extractor.fn(noisy)
        row = {"extractor": extractor.name, "dims": int(clean_features.shape[1])}
        check_groups_differ(clean_features, labels, names, extractor.name)
        row.update(clustering_rule(clean_features, labels, seed))
        row["snr_score"] = snr_rule(clean_features, noisy_features, snrs, labels, names)
        rows.append(row)
        if progress:
            progress(extractor.name)
    return rows


def heatmap(rows: list[dict], path: Path, title: str) -> Path | None:
    """Rand index and SNR score across the layers of each layered model (`model:layer` rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layered = [r for r in rows if ":" in r["extractor"]]
    if not layered:
        return None
    models = list(dict.fromkeys(r["extractor"].rsplit(":", 1)[0] for r in layered))
    fig, axes = plt.subplots(len(models), 1, figsize=(10, 1.8 + 1.2 * len(models)), squeeze=False)
    for ax, model in zip(axes[:, 0], models):
        mine = [r for r in layered if r["extractor"].rsplit(":", 1)[0] == model]
        layers = [r["extractor"].rsplit(":", 1)[1] for r in mine]
        grid = np.array([[r["rand_index"] for r in mine], [r["snr_score"] for r in mine]])
        image = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(layers)), layers)
        ax.set_yticks([0, 1], ["Rand index", "SNR score"])
        ax.set_title(model, fontsize="small")
        for (y, x), value in np.ndenumerate(grid):
            ax.text(x, y, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w")
        fig.colorbar(image, ax=ax)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
