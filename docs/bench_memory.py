"""Peak RSS of `finally bench` for a long vs a short input (SPEC §9: ratio ≤ 1.2).

    python docs/bench_memory.py [--model finally-small] [--short 60] [--long 3600]

Each length runs in its own process so each peak is that run's alone.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def peak(model: str, seconds: float, device: str) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "finally_cli.cli",
            "bench",
            "--model",
            model,
            "--device",
            device,
            "--seconds",
            str(seconds),
            "--no-flops",
            "--json",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="finally-small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--short", type=float, default=60.0)
    parser.add_argument("--long", type=float, default=3600.0)
    args = parser.parse_args()
    short, long = (
        peak(args.model, args.short, args.device),
        peak(args.model, args.long, args.device),
    )
    ratio = long["peak_rss_mb"] / short["peak_rss_mb"]
    print(
        json.dumps(
            {
                "short_seconds": args.short,
                "short_peak_rss_mb": short["peak_rss_mb"],
                "long_seconds": args.long,
                "long_peak_rss_mb": long["peak_rss_mb"],
                "ratio": ratio,
                "target": 1.2,
                "ok": ratio <= 1.2,
            },
            indent=2,
        )
    )
    sys.exit(0 if ratio <= 1.2 else 1)


if __name__ == "__main__":
    main()
