"""A training-only folder of babble: many talkers at once, mixed from training speech.

    python -m finally_cli.training.recipes.babble CLEAN OUT [--count 300] [--seconds 10]

The offline data set holds 10 babble clips among ≈ 2 000 noise files, so a training item meets
babble about once in 200 draws, and babble is where finally-small falls furthest behind the
peers (docs/training.md, item 23). Each clip here sums 3–8 talkers, each a run of random files
from CLEAN joined end to end (so a talker keeps talking instead of repeating one word), at
levels spread over ±6 dB, as in a room full of people. Give it the *training* clean folder only:
the babble must not carry validation or test voices. Write it to a folder of its own and add
it to `data.noise` for training (`--set "data.noise=[offline/noise,babble]"`): the evaluation
sets are mixed from offline/noise alone, so they do not change.

OUT is resumable (clips already there are kept); `OUT/babble.json` records the seed, the
source folder and the files each clip was mixed from.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from finally_cli.audio.files import find_audio
from finally_cli.training.recipes.offline import RATE, read48


def talker(files: list[Path], rng: np.random.Generator, samples: int) -> tuple[np.ndarray, list]:
    """Random files joined end to end (silence trimmed to 0.1–0.4 s gaps) up to `samples`,
    at unit RMS, and the files used."""
    parts, used, length = [], [], 0
    while length < samples:
        path = files[rng.integers(len(files))]
        audio = read48(path)
        active = np.flatnonzero(np.abs(audio) > 0.01 * (np.abs(audio).max() + 1e-12))
        if active.size == 0:
            continue
        audio = audio[active[0] : active[-1] + 1]
        audio = audio / (np.sqrt(np.mean(audio**2)) + 1e-12)
        gap = np.zeros(int(rng.uniform(0.1, 0.4) * RATE))
        parts += [audio, gap]
        used.append(str(path))
        length += audio.size + gap.size
    voice = np.concatenate(parts)
    start = int(rng.integers(0, max(1, voice.size - samples)))
    voice = voice[start : start + samples]
    return voice / (np.sqrt(np.mean(voice**2)) + 1e-12), used


def babble_clip(
    files: list[Path], rng: np.random.Generator, seconds: float, talkers: tuple[int, int] = (3, 8)
) -> tuple[np.ndarray, list]:
    """`talkers` (inclusive range) voices summed at levels within ±6 dB, peak 0.5."""
    samples = int(seconds * RATE)
    mix, sources = np.zeros(samples), []
    for _ in range(int(rng.integers(talkers[0], talkers[1] + 1))):
        voice, used = talker(files, rng, samples)
        mix += voice * 10 ** (rng.uniform(-6, 6) / 20)
        sources.append(used)
    return 0.5 * mix / (np.abs(mix).max() + 1e-12), sources


def build(clean: Path, out: Path, count: int = 300, seconds: float = 10.0, seed: int = 0) -> int:
    """Write `count` babble clips from the speech under `clean` into `out`; the number of
    clips written now (existing ones are kept)."""
    from rich.progress import Progress

    clean, out = clean.resolve(), out.resolve()
    if not clean.is_dir():
        raise SystemExit(f"error: {clean}: not a folder")
    if out == clean or clean in out.parents:
        raise SystemExit(f"error: {out}: must lie outside the speech folder {clean}")
    if count < 1 or seconds <= 0:
        raise SystemExit(f"error: --count {count} / --seconds {seconds}: expected positive values")
    files = find_audio(clean).files
    if len(files) < 8:
        raise SystemExit(f"error: {clean}: {len(files)} audio files, need at least 8")
    report_path = out / "babble.json"
    if out.is_dir() and any(out.iterdir()) and not report_path.exists():
        raise SystemExit(f"error: {out}: not empty and not an earlier babble output")
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    if report and (report.get("seed"), report.get("clean")) != (seed, str(clean)):
        raise SystemExit(f"error: {out}: built with another seed or source; use a new folder")
    report.update(seed=seed, clean=str(clean), seconds=seconds)
    clips = report.setdefault("clips", {})
    out.mkdir(parents=True, exist_ok=True)
    written = 0
    with Progress() as bar:
        task = bar.add_task("babble", total=count)
        for i in range(count):
            name = f"babble_{i:04d}.flac"
            rng = np.random.default_rng([seed, i])  # clip i is the same whatever was built
            if name in clips and (out / name).exists():
                bar.advance(task)
                continue
            mix, sources = babble_clip(files, rng, seconds)
            partial = out / f".{name}.part"
            sf.write(str(partial), mix.astype(np.float32), RATE, format="FLAC")
            os.replace(partial, out / name)
            clips[name] = sources
            written += 1
            if written % 50 == 0:
                report_path.write_text(json.dumps(report, indent=0))
            bar.advance(task)
    report_path.write_text(json.dumps(report, indent=0))
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clean", type=Path, help="training speech (never validation or test)")
    parser.add_argument("out", type=Path, help="folder for the babble clips")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    written = build(args.clean, args.out, args.count, args.seconds, args.seed)
    print(f"{args.out}: {written} babble clips written ({args.count} in all)")


if __name__ == "__main__":
    main()
