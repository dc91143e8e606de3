"""Paired per-file differences between two `finally eval --csv` files (docs/training.md).

    python docs/recipes/paired.py work/ev/valcond2-B.csv work/ev/valcond2-A.csv [--system NAME]

prints, for each metric, the mean of A and B over the files both scored and the mean of
B − A with its 95 % interval (1.96 standard errors of the per-file differences), then the
per-condition means of B − A. Rows are matched by file; with several systems in a file,
--system picks one (default: the first that is not `input`).
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

METRICS = ["dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "pesq", "estoi", "sisdr"]


def _rows(path: Path, system: str | None) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    systems = [r["system"] for r in rows]
    chosen = system or next((s for s in systems if s != "input"), systems[0] if systems else "")
    picked = {r["file"]: r for r in rows if r["system"] == chosen}
    if not picked:
        raise SystemExit(f"error: {path}: no rows for system {chosen!r}")
    return picked


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _mean_ci(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, 1.96 * math.sqrt(var / n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("b", type=Path, help="the candidate's CSV (B)")
    parser.add_argument("a", type=Path, help="the reference's CSV (A)")
    parser.add_argument("--system", help="system name to read from both files")
    args = parser.parse_args()
    b, a = _rows(args.b, args.system), _rows(args.a, args.system)
    files = sorted(set(a) & set(b))
    if not files:
        raise SystemExit("error: the two files share no scored file")
    print(f"{len(files)} files; B = {args.b.name}, A = {args.a.name}")
    print(f"{'metric':<12} {'A':>8} {'B':>8} {'B-A':>8} {'±95%':>7}")
    by_condition: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for metric in METRICS:
        pairs = [(f, _number(a[f].get(metric)), _number(b[f].get(metric))) for f in files]
        pairs = [(f, x, y) for f, x, y in pairs if not (math.isnan(x) or math.isnan(y))]
        if not pairs:
            continue
        diff, ci = _mean_ci([y - x for _, x, y in pairs])
        mean_a = sum(x for _, x, _ in pairs) / len(pairs)
        mean_b = sum(y for _, _, y in pairs) / len(pairs)
        print(f"{metric:<12} {mean_a:8.4f} {mean_b:8.4f} {diff:+8.4f} {ci:7.4f}")
        for f, x, y in pairs:
            by_condition[a[f].get("condition", "")][metric].append(y - x)
    shown = [
        m
        for m in ("dnsmos_ovrl", "dnsmos_bak", "pesq")
        if any(by_condition[c][m] for c in by_condition)
    ]
    print("\nper condition, B-A: " + " / ".join(shown))
    for condition in sorted(by_condition):
        means = [
            sum(by_condition[condition][m]) / max(len(by_condition[condition][m]), 1) for m in shown
        ]
        print(f"  {condition or '(none)':<14} " + " / ".join(f"{v:+.3f}" for v in means))


if __name__ == "__main__":
    main()
