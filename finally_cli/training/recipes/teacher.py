"""Training pairs whose targets are a peer's output instead of the clean speech.

    finally train prepare-val --config finally-small/stage1 ... -o pool --count 3000
    python -m finally_cli.training.recipes.teacher pool -o pool-dfn3 [--teacher deepfilternet3]
    python -m finally_cli.training.recipes.teacher pool -o pool-avg --teacher deepfilternet3 \
        --teacher dtln

A small model regressed onto clean speech from noisy input at 0–5 dB SNR cannot reach its
target (the fine structure under the noise is gone) and hedges: it removes too little noise and
smears what it keeps. A strong peer's output on the same input is a target that a model of its
kind can reach. This writes such a set: for every pair of POOL (a `prepare-val` folder), the
teacher's output on its noisy file becomes the target. Training mixes it in with `data.pairs`
and `data.p_pairs`; the other items keep their clean targets, so what the model learns for
clean, band-limited or coded input does not come from the teacher.

The teacher runs once over many files joined with silence between them (a peer builds its state
once per call), and each output is cut back to its file's frames. OUT has POOL's layout
(noisy/ linked to POOL's files, clean/ the teacher's output as 48 kHz float WAV, manifest.csv
written last, so its presence means the set is complete) and is resumable: files already in
OUT/clean are kept.

Several teachers give the mean of their outputs as the target. Peers err in different ways
(DeepFilterNet3 removes more noise and smears near-clean speech, DTLN keeps more of both), and
on 80 pool pairs the mean of those two scored WB-PESQ 2.004 against the clean speech where
DeepFilterNet3 alone scored 1.966. The mean keeps whatever noise either peer leaves, though:
`--combine geometric` takes instead, per STFT cell, the geometric mean of the peers' magnitudes
(with the phase of their sum), so a cell is quiet when either peer made it quiet. On the test
split's DeepFilterNet3 and DTLN outputs that combination scored DNSMOS OVRL 2.51 / WB-PESQ 2.16
against the mean's 2.47 / 2.26 (docs/training.md item 24). OUT/teacher.json records the
teachers and the combination, and a resume with others is refused.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from finally_cli.audio.files import atomic_path

GAP_SECONDS = 0.5  # silence between joined files: the peers' states settle within it
RATE = 48000  # prepare-val's rate (degradations.RATE, whose module imports torch)
COMBINE_FFT, COMBINE_HOP = 1536, 384  # 32 ms / 8 ms at 48 kHz


def combine_outputs(outputs: list[np.ndarray], how: str = "mean") -> np.ndarray:
    """One target from several teachers' equally long outputs: their mean ("mean"), or per
    STFT cell the geometric mean of their magnitudes with the phase of their sum
    ("geometric")."""
    if how == "mean" or len(outputs) == 1:
        return np.mean(outputs, axis=0)
    if how != "geometric":
        raise ValueError(f"combine: {how!r} is not 'mean' or 'geometric'")
    from scipy import signal

    window = {"nperseg": COMBINE_FFT, "noverlap": COMBINE_FFT - COMBINE_HOP}
    spectra = [signal.stft(np.asarray(x, np.float64), **window)[2] for x in outputs]
    magnitude = np.exp(np.mean([np.log(np.abs(z) + 1e-12) for z in spectra], axis=0))
    total = np.sum(spectra, axis=0)
    phase = total / np.maximum(np.abs(total), 1e-12)
    joined = signal.istft(magnitude * phase, **window)
    audio = joined[1][: outputs[0].size]
    return np.pad(audio, (0, outputs[0].size - audio.size)).astype(np.float32)


def teach(
    pool: Path,
    out: Path,
    teacher: str | list[str],
    per_call: int = 64,
    show: bool = True,
    combine: str = "mean",
) -> tuple[int, int]:
    """Write OUT from POOL with `teacher`'s outputs (several teachers' outputs combined by
    `combine_outputs`) as targets. Returns (written, kept)."""
    from tqdm import tqdm

    from finally_cli.evaluation.baselines import RUNNERS, check_baseline

    teachers = [teacher] if isinstance(teacher, str) else list(teacher)
    if not teachers:
        raise ValueError("teach: no teacher named")
    for name in teachers:
        check_baseline(name)
    names = sorted(p.name for p in (pool / "noisy").iterdir() if p.suffix == ".wav")
    if not names:
        raise SystemExit(f"{pool}/noisy: no .wav files (expected a prepare-val folder)")
    record = {"teachers": teachers, "combine": combine if len(teachers) > 1 else "mean"}
    if record["combine"] not in ("mean", "geometric"):
        raise SystemExit(f"--combine {combine}: expected mean or geometric")
    recorded = out / "teacher.json"
    if recorded.is_file() and json.loads(recorded.read_text()) != record:
        raise SystemExit(f"{out}: written with {recorded.read_text().strip()}, not {record}")
    started = (out / "clean").is_dir() and any((out / "clean").iterdir())
    if not recorded.is_file() and started and record["combine"] != "mean":
        # Written before teacher.json existed, when every set was a mean.
        raise SystemExit(f"{out}: holds mean targets (no teacher.json), not {record}")
    (out / "noisy").mkdir(parents=True, exist_ok=True)
    (out / "clean").mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps(record) + "\n")
    todo = [n for n in names if not (out / "clean" / n).exists()]
    gap = np.zeros(int(GAP_SECONDS * RATE), np.float32)
    label = "+".join(teachers)
    for start in tqdm(range(0, len(todo), per_call), desc=label, disable=not show, unit="call"):
        batch = todo[start : start + per_call]
        pieces, spans, offset = [], [], 0
        for name in batch:
            audio, rate = sf.read(str(pool / "noisy" / name), dtype="float32")
            if rate != RATE or audio.ndim != 1:
                raise SystemExit(f"{pool / 'noisy' / name}: expected mono {RATE} Hz audio")
            pieces += [audio, gap]
            spans.append((offset, audio.size))
            offset += audio.size + gap.size
        joined = np.concatenate(pieces)
        output = combine_outputs([_run(RUNNERS[name], joined) for name in teachers], combine)
        for name, (begin, length) in zip(batch, spans):
            with atomic_path(out / "clean" / name) as tmp:
                sf.write(str(tmp), output[begin : begin + length], RATE, "FLOAT", format="WAV")
    for name in names:
        link = out / "noisy" / name
        if not link.exists():
            link.symlink_to((pool / "noisy" / name).resolve())
    shutil.copyfile(pool / "manifest.csv", out / "manifest.csv")  # last: the set is complete
    return len(todo), len(names) - len(todo)


def _run(runner, joined: np.ndarray) -> np.ndarray:
    """One teacher's output on `joined`, at 48 kHz and exactly its length."""
    output, rate = runner(joined, RATE)
    if rate != RATE:
        import soxr

        output = soxr.resample(output, rate, RATE)
    return np.pad(output, (0, max(0, joined.size - output.size)))[: joined.size]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pool", type=Path, help="a folder written by `finally train prepare-val`")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument(
        "--teacher",
        action="append",
        help="a `finally eval` baseline (default deepfilternet3); repeat for their mean",
    )
    parser.add_argument("--per-call", type=int, default=64, help="files joined per teacher call")
    parser.add_argument(
        "--combine",
        choices=("mean", "geometric"),
        default="mean",
        help="several teachers: the mean of their outputs, or per STFT cell the geometric mean "
        "of their magnitudes",
    )
    args = parser.parse_args(argv)
    if not (args.pool / "manifest.csv").is_file():
        print(f"{args.pool}: not a prepare-val folder (no manifest.csv)", file=sys.stderr)
        return 2
    teachers = args.teacher or ["deepfilternet3"]
    written, kept = teach(args.pool, args.output, teachers, args.per_call, combine=args.combine)
    joined = f"{args.combine} of " if len(teachers) > 1 else ""
    print(f"{args.output}: {written} targets written, {kept} kept ({joined}{' + '.join(teachers)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
