"""Which pretrained layer should drive the LMOS loss: the probe ranking and its rule."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

RULES = ("rand_index", "snr_score")

# `rank` over docs/probing/*.json (TTS and recorded-word groups, seeds 0-2), best first;
# `loss.features: auto` takes the first whose encoder is installed. Regenerate with
# `finally probe-features --rank ...` (docs/probing.md) when the probing changes.
PROBE_RANKING: tuple[str, ...] = (
    "whisper-tiny.en:conv",
    "whisper-tiny.en:0",
    "ge2e:3",
    "whisper-tiny.en:1",
    "ge2e:2",
    "ge2e:1",
    "ge2e:embedding",
    "whisper-tiny.en:2",
    "whisper-tiny.en:3",
    "whisper-tiny.en:4",
)


def candidates(rows: Iterable[dict]) -> list[str]:
    """Extractors of trainable pretrained encoders (`NAME:LAYER`; DNSMOS never)."""
    from finally_cli.models.pretrained import PRETRAINED

    names = []
    for row in rows:
        name, sep, _ = row["extractor"].rpartition(":")
        if sep and name in PRETRAINED and PRETRAINED[name].trainable:
            names.append(row["extractor"])
    return names


def _ranks(values: list[float]) -> np.ndarray:
    """1 = best (highest); ties share their mean rank; NaN ranks last."""
    from scipy.stats import rankdata

    scores = np.array([-v if np.isfinite(v) else np.inf for v in values])
    return rankdata(scores, method="average")


def rank(documents: list[dict]) -> list[dict]:
    """The rule: rank every candidate layer under each rule in each group set (1 = best
    score), average those ranks, lowest mean rank first; ties go to the higher mean SNR
    score, then to the earlier row (the shallower, cheaper layer).

    Both rules and every group set count alike, so a layer must both cluster the same
    sounds together and move away from them steadily with noise, on TTS and on real speech.
    A layer missing from a document is left out (it was not probed on every set).

    Args:
        documents: `finally probe-features --json` outputs, one per group set.

    Returns:
        rows best first: extractor, mean_rank, and the mean of each rule's score.
    """
    tables = [{r["extractor"]: r for r in doc["results"]} for doc in documents]
    common = [
        name for name in candidates(documents[0]["results"]) if all(name in t for t in tables)
    ]
    if not common:
        return []
    columns = [_ranks([table[name][rule] for name in common]) for table in tables for rule in RULES]
    mean_rank = np.mean(columns, axis=0)
    rows = [
        {
            "extractor": name,
            "mean_rank": float(mean_rank[i]),
            **{rule: float(np.mean([t[name][rule] for t in tables])) for rule in RULES},
        }
        for i, name in enumerate(common)
    ]
    order = {name: i for i, name in enumerate(common)}
    return sorted(rows, key=lambda r: (r["mean_rank"], -r["snr_score"], order[r["extractor"]]))


def best_installed(installed: Iterable[str], ranking: tuple[str, ...] | None = None) -> str | None:
    """The first extractor of `ranking` (default `PROBE_RANKING`) whose encoder is installed."""
    available = set(installed)
    for spec in PROBE_RANKING if ranking is None else ranking:
        if spec.rpartition(":")[0] in available:
            return spec
    return None
