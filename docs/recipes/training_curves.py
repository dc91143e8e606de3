"""Training curves and the validation table of a chain of stage runs, for a model card.

    python docs/recipes/training_curves.py work/s1 work/s2 work/s3 -o weights/finally-small

writes OUT/training_curves.png (generator loss per logged step, validation PESQ / ESTOI /
DNSMOS OVRL per validation) and prints the validation table as Markdown. Steps are counted
across stages: stage k's step s is plotted at the sum of the earlier stages' steps plus s.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def smooth(values: list[float], width: int = 5) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if len(array) < width:
        return array
    kernel = np.ones(width) / width
    padded = np.concatenate([np.full(width // 2, array[0]), array, np.full(width // 2, array[-1])])
    return np.convolve(padded, kernel, mode="valid")[: len(array)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="stage run folders, in order")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for the PNG")
    parser.add_argument(
        "--input-score",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="the noisy input's own validation score (e.g. pesq=1.59), drawn dashed",
    )
    args = parser.parse_args()

    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(10, 3.4), dpi=90)
    offset = 0
    rows = []
    for run in args.runs:
        config = json.loads((run / "config.json").read_text())
        stage = config["stage"]
        logged = read_jsonl(run / "metrics.jsonl")
        if logged:
            steps = [offset + entry["step"] for entry in logged]
            losses = [entry.get("loss_g", float("nan")) for entry in logged]
            loss_ax.plot(steps, smooth(losses), label=f"stage {stage}")
        validated = read_jsonl(run / "validation.jsonl")
        for entry in validated:
            rows.append({**entry, "stage": stage, "step": offset + entry["step"]})
        offset += max([entry["step"] for entry in logged] + [0])
        loss_ax.axvline(offset, color="grey", linewidth=0.5)
    loss_ax.set_xlabel("step (all stages)")
    loss_ax.set_ylabel("generator loss (5-point mean)")
    loss_ax.set_yscale("log")
    loss_ax.legend()
    inputs = dict(item.split("=", 1) for item in args.input_score)
    # One line per metric and stage: stages may validate on different sets (the recipe's
    # stage 2 uses pairs of its own degradation mix), so their points are not joined.
    markers = "os^"
    for key, label in [("pesq", "WB-PESQ"), ("dnsmos_ovrl", "DNSMOS OVRL"), ("estoi", "ESTOI")]:
        color = None
        for i, stage in enumerate(sorted({row["stage"] for row in rows})):
            points = [(r["step"], r[key]) for r in rows if key in r and r["stage"] == stage]
            if points:
                (line,) = val_ax.plot(
                    *zip(*points),
                    marker=markers[i % 3],
                    color=color,
                    label=label if color is None else None,
                )
                color = line.get_color()
        if key in inputs and color is not None:
            val_ax.axhline(float(inputs[key]), color=color, linestyle="--")
    val_ax.set_xlabel("step (all stages)")
    val_ax.set_title("validation (dashed: the noisy input)" if inputs else "validation")
    val_ax.legend()
    fig.tight_layout()
    args.output.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output / "training_curves.png")
    print(f"wrote {args.output / 'training_curves.png'}\n")
    print("| stage | step | WB-PESQ | ESTOI | DNSMOS OVRL |")
    print("|---|---|---|---|---|")
    for row in rows:
        ovrl = row.get("dnsmos_ovrl")
        print(
            f"| {row['stage']} | {row['step']} | {row.get('pesq', float('nan')):.3f} | "
            f"{row.get('estoi', float('nan')):.3f} | "
            + (f"{ovrl:.3f}" if ovrl is not None else "–")
            + " |"
        )


if __name__ == "__main__":
    main()
