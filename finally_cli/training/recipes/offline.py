"""Build the offline data set: tuxpaint speech + noises, synthetic noises, simulated rooms.

    python -m finally_cli.training.recipes.offline -o data/offline [--tts] [--seed 0]

Sources (all from Debian packages reachable without the Hub):
- clean speech: the ~7400 spoken stamp descriptions of `tuxpaint-stamps-default`
  (`*_desc_<lang>.ogg`, 44.1 kHz, 12 languages; GPL-2+ / see the package's copyright file);
  split **by language** (one set of volunteer speakers per language): test = Greek (el),
  validation = Lithuanian + Dutch + Malayalam (lt, nl, ml), train = every other language; so the
  test split shares no recording and no language/speaker set with training;
- optional TTS supplement for training (`--tts`): espeak-ng voices (GPL-3+);
- noise: the package's ~440 stamp sound effects + synthetic coloured noise, mains hum, clicks and
  babble mixed from 4–6 *training* speakers;
- rooms: impulse responses simulated with pyroomacoustics (random shoebox rooms), or synthetic
  exponential tails when it is not installed.

Files from the package are linked, not copied; generated audio is written as FLAC. A README.md
in the output states the sources, licences, counts and the command that built it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf

from finally_cli.training.degradations import synthetic_noise, synthetic_room

TUXPAINT = Path("/usr/share/tuxpaint/stamps")
DESC = re.compile(r"_desc(?:_([A-Za-z@_]+))?\.ogg$")
SPLITS = {"test": {"el"}, "validation": {"lt", "nl", "ml"}}
RATE = 48000


def language_of(path: Path) -> str | None:
    """Language code of a spoken description file ("en" when the name has none)."""
    match = DESC.search(path.name)
    if not match:
        return None
    return (match.group(1) or "en").split("_")[0].lower()


def split_of(language: str) -> str:
    for split, languages in SPLITS.items():
        if language in languages:
            return split
    return "train"


def link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    try:
        os.symlink(source, target)
    except OSError:
        shutil.copy2(source, target)


def collect_speech(root: Path, out: Path) -> dict[str, dict[str, int]]:
    """Link every description into out/clean/<split>/<language>/; returns counts."""
    counts: dict[str, dict[str, int]] = {}
    for path in sorted(root.rglob("*.ogg")):
        language = language_of(path)
        if language is None:
            continue
        split = split_of(language)
        relative = path.relative_to(root)
        name = "__".join(relative.parts)
        link(path, out / "clean" / split / language / name)
        counts.setdefault(split, {}).setdefault(language, 0)
        counts[split][language] += 1
    return counts


def collect_effects(root: Path, out: Path) -> int:
    """Link the stamps' sound effects (non-speech) into out/noise/tuxpaint/."""
    count = 0
    for path in sorted(root.rglob("*.ogg")):
        if DESC.search(path.name):
            continue
        link(path, out / "noise" / "tuxpaint" / "__".join(path.relative_to(root).parts))
        count += 1
    return count


def read48(path: Path) -> np.ndarray:
    import soxr

    audio, rate = sf.read(str(path), dtype="float64", always_2d=True)
    return soxr.resample(audio.mean(axis=1), rate, RATE)


def babble(train_files: list[Path], rng: np.random.Generator, seconds: float) -> np.ndarray:
    samples = int(seconds * RATE)
    mix = np.zeros(samples)
    for path in rng.choice(train_files, size=int(rng.integers(4, 7)), replace=False):
        voice = np.resize(read48(Path(path)), samples)
        mix += voice / (np.sqrt(np.mean(voice**2)) + 1e-9)
    return mix


def synthesise_noises(
    out: Path, train_files: list[Path], count: int, seconds: float, rng: np.random.Generator
) -> int:
    folder = out / "noise" / "synthetic"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        kind = "babble" if i % 4 == 3 and train_files else "synthetic"
        noise = (
            babble(train_files, rng, seconds)
            if kind == "babble"
            else synthetic_noise(rng, int(seconds * RATE))
        )
        noise = 0.5 * noise / (np.max(np.abs(noise)) + 1e-9)
        sf.write(str(folder / f"{kind}_{i:03d}.flac"), noise.astype(np.float32), RATE)
    return count


def simulate_rooms(out: Path, count: int, rng: np.random.Generator) -> str:
    folder = out / "rooms"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import pyroomacoustics as pra
    except ImportError:
        pra = None
    for i in range(count):
        if pra is not None:
            size = rng.uniform([3, 3, 2.4], [10, 8, 4])
            rt60 = rng.uniform(0.2, 1.0)
            absorption, order = pra.inverse_sabine(rt60, size)
            room = pra.ShoeBox(
                size, fs=RATE, materials=pra.Material(absorption), max_order=min(order, 20)
            )
            room.add_source(rng.uniform(0.5, size - 0.5))
            room.add_microphone(rng.uniform(0.5, size - 0.5))
            room.compute_rir()
            ir = np.asarray(room.rir[0][0])
        else:
            ir = synthetic_room(rng, rng.uniform(0.2, 1.0))
        sf.write(
            str(folder / f"room_{i:03d}.flac"), (ir / np.max(np.abs(ir))).astype(np.float32), RATE
        )
    return "pyroomacoustics" if pra is not None else "synthetic exponential tails"


def tts_supplement(out: Path, count: int, rng: np.random.Generator) -> int:
    engine = shutil.which("espeak-ng")
    if engine is None:
        return 0
    from finally_cli.audio.tts import TTS_PHRASES

    folder = out / "clean" / "train" / "tts"
    folder.mkdir(parents=True, exist_ok=True)
    voices = ["en+m1", "en+m3", "en+f2", "en+f4", "de", "it", "pt", "pl"]
    for i in range(count):
        text = " and ".join(rng.choice(TTS_PHRASES, size=3, replace=False))
        subprocess.run(
            [
                engine,
                "-v",
                str(rng.choice(voices)),
                "-s",
                str(rng.integers(130, 180)),
                "-p",
                str(rng.integers(30, 70)),
                "-w",
                str(folder / f"tts_{i:04d}.wav"),
                text,
            ],
            check=True,
            capture_output=True,
        )
    return count


def build(
    out: Path,
    root: Path = TUXPAINT,
    seed: int = 0,
    noises: int = 40,
    noise_seconds: float = 10.0,
    rooms: int = 100,
    tts: int = 0,
    more: bool = True,
    fillets: bool = False,
) -> dict:
    """Build the whole data set into `out`; returns the summary written to summary.json.

    `fillets` adds Fish Fillets NG's dialogue (opt-in: measured to cost noise removal,
    docs/training.md item 24)."""
    if not root.is_dir():
        raise SystemExit(
            f"{root}: not found; install it with `apt install tuxpaint-stamps-default`"
        )
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    speech = collect_speech(root, out)
    effects = collect_effects(root, out)
    train_files = sorted((out / "clean" / "train").rglob("*.ogg"))
    synthetic = synthesise_noises(out, train_files, noises, noise_seconds, rng)
    room_source = simulate_rooms(out, rooms, rng)
    tts_count = tts_supplement(out, tts, rng)
    extra: dict = {}
    if more:
        from finally_cli.training.recipes import sources

        extra = {
            "ktuberling": sources.collect_ktuberling(out),
            "asterisk": sources.collect_asterisk(out),
            "real_noise": sources.build_noise_beds(out, rng),
        }
        if fillets:
            extra["fillets"] = sources.collect_fillets(out)
    summary = {
        "seed": seed,
        "speech": speech,
        "tuxpaint_effects": effects,
        "synthetic_noises": synthetic,
        "rooms": rooms,
        "room_source": room_source,
        "tts": tts_count,
        **extra,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "README.md").write_text(_readme(summary))
    return summary


def _readme(summary: dict) -> str:
    lines = [
        "# finally-cli offline data set",
        "",
        f"Built by `python -m finally_cli.training.recipes.offline` (seed {summary['seed']}).",
        "",
        "| split | languages (files) |",
        "|---|---|",
    ]
    for split, languages in sorted(summary["speech"].items()):
        lines.append(
            f"| {split} | " + ", ".join(f"{k} ({v})" for k, v in sorted(languages.items())) + " |"
        )
    lines += [
        "",
        f"Noise: {summary['tuxpaint_effects']} tuxpaint stamp sound effects, "
        f"{summary['synthetic_noises']} synthetic/babble clips. Rooms: "
        f"{summary['rooms']} impulse responses ({summary['room_source']}). "
        f"TTS supplement: {summary['tts']} espeak-ng utterances.",
        "",
    ]
    if "ktuberling" in summary:
        lines += [
            f"ktuberling words: {summary['ktuberling']}; Asterisk prompts: "
            f"{summary['asterisk']}; Fish Fillets dialogue lines (GPL-2): "
            f"{summary.get('fillets', 'not taken')} (split by voice; see recipes/sources.py).",
            "",
            "| real noise: package | folder | licence | files | seconds | 30 s beds |",
            "|---|---|---|---|---|---|",
        ]
        for row in summary["real_noise"]:
            lines.append(
                f"| {row['package']} | {row['folder']} | {row.get('licence', '')} | "
                f"{row['files']} | {row['seconds']} | {row.get('beds', 0)} |"
            )
        lines.append("")
    lines += [
        "Licences: tuxpaint-stamps-default is GPL-2+ (see "
        "/usr/share/doc/tuxpaint-stamps-default/copyright); espeak-ng output GPL-3+ "
        "voices; generated noises and rooms are ours (Apache-2.0).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--root", type=Path, default=TUXPAINT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noises", type=int, default=40)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--tts", type=int, default=0, help="espeak-ng utterances to add")
    parser.add_argument(
        "--no-more",
        action="store_true",
        help="only tuxpaint + synthetic (skip ktuberling, Asterisk and real-noise packages)",
    )
    parser.add_argument(
        "--fillets",
        action="store_true",
        help="also Fish Fillets NG's dialogue (fillets-ng-data{,-cs,-nl}; costs noise removal)",
    )
    args = parser.parse_args()
    summary = build(
        args.output,
        args.root,
        args.seed,
        args.noises,
        rooms=args.rooms,
        tts=args.tts,
        more=not args.no_more,
        fillets=args.fillets,
    )
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
