"""More offline data: ktuberling words, Asterisk prompts, Fish Fillets dialogue and real noise
from Debian packages.

Each source is optional: a package that is not installed is skipped and reported as 0 in the
summary. Speech is split by voice (one speaker set per language folder): the test split is
tuxpaint's Greek (offline.py), so no voice here ever goes to test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from finally_cli.training.recipes.offline import link

RATE = 48000
KTUBERLING = Path("/usr/share/ktuberling/sounds")
ASTERISK = Path("/usr/share/asterisk/sounds")
FILLETS = Path("/usr/share/games/fillets-ng/sound")
# Languages (ktuberling) and voices (Asterisk) kept for validation; the rest train. Greek is the
# test language of the whole recipe, so ktuberling's Greek words are left out entirely.
KTUBERLING_VALIDATION = {"lt", "nl"}
KTUBERLING_EXCLUDED = {"el"}
ASTERISK_VALIDATION = {"ru"}
# Fish Fillets NG's spoken dialogue (fillets-ng-data: English; -cs: Czech, ≈ 106 min; -nl:
# Dutch, ≈ 90 min; GPL-2): acted lines of two main voices and a few dozen side characters,
# Vorbis at 22.05/44.1 kHz. Dutch is a validation language of the recipe, so it validates;
# lines over music ("hudba") are left out. Opt-in (`offline --fillets`): trained on, it cost
# noise removal (docs/training.md item 24); their floors are no lower than the home
# recordings' (median 35 dB under the speech, a tenth of the lines within 20 dB).
FILLETS_LANGUAGES = {"cs": "train", "en": "train", "nl": "validation"}
FILLETS_SKIP = re.compile(r"hudba", re.I)

# Real noise: (package, folder, licence). Folders are searched recursively; paths matching
# SPEECHY are skipped (unit acknowledgements, announcers, cockpit call-outs are speech).
# Music is a real background but not most of one: hedgewars' 50 minutes of music are left
# out (colobot, freedroidrpg, etr and the Asterisk hold music already give ~1.5 hours).
NOISE_PACKAGES: tuple[tuple[str, str, str], ...] = (
    ("flightgear-data-base", "/usr/share/games/flightgear/Sounds", "GPL-2+"),
    ("flightgear-data-base", "/usr/share/games/flightgear/Aircraft/c172p/Sounds", "GPL-2+"),
    ("megaglest-data", "/usr/share/games/megaglest", "CC-BY-SA-3.0"),
    ("hedgewars-data", "/usr/share/games/hedgewars/Data/Sounds", "GPL-2 / FDL"),
    ("colobot-common-sounds", "/usr/share/games/colobot", "GPL-3+"),
    ("lincity-ng-data", "/usr/share/games/lincity-ng", "GPL-2+"),
    ("freedroidrpg-data", "/usr/share/freedroidrpg/data/sound", "GPL-2+"),
    ("extremetuxracer-data", "/usr/share/games/etr", "GPL-2+"),
    ("boswars-data", "/usr/share/games/boswars", "GPL-2"),
    ("bucklespring-data", "/usr/share/buckle/wav", "GPL-2"),
    (
        "redeclipse-data",
        "/usr/share/games/redeclipse/data/sounds",
        "CC-BY-SA / zlib (see copyright)",
    ),
    ("torcs-data", "/usr/share/games/torcs/data/sound", "GPL-2+ / Free Art"),
    ("asterisk-moh-opsound-g722", "/usr/share/asterisk/moh", "CC-BY-SA-3.0"),
)
SPEECHY = re.compile(
    r"voice|speech|comment|titles|tutorial|tcas|mk-viii|/units/|announc|taunt|narrat|/player/", re.I
)
AUDIO = {".ogg", ".wav", ".flac", ".mp3", ".g722"}
BED_SECONDS = 30.0


def decode(path: Path, rate: int) -> np.ndarray | None:
    """Mono float32 at `rate`, via libsndfile or (G.722, others) ffmpeg; None if unreadable."""
    import soxr

    try:
        audio, source_rate = sf.read(str(path), dtype="float32", always_2d=True)
        return soxr.resample(audio.mean(axis=1), source_rate, rate).astype(np.float32)
    except (sf.LibsndfileError, RuntimeError, ValueError):
        pass
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return None
    result = subprocess.run(
        [ffmpeg, "-v", "quiet", "-i", str(path), "-ac", "1", "-ar", str(rate), "-f", "f32le", "-"],
        capture_output=True,
    )
    if result.returncode or not result.stdout:
        return None
    return np.frombuffer(result.stdout, dtype=np.float32).copy()


def collect_ktuberling(out: Path, root: Path = KTUBERLING) -> dict[str, int]:
    """Link the recorded words into out/clean/<split>/ktuberling_<lang>/; counts per split."""
    counts: dict[str, int] = {}
    if not root.is_dir():
        return counts
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        language = folder.name.split("@")[0]
        if language in KTUBERLING_EXCLUDED:
            continue
        split = "validation" if language in KTUBERLING_VALIDATION else "train"
        for path in sorted(folder.glob("*.ogg")):
            target = out / "clean" / split / f"ktuberling_{folder.name}" / path.name
            link(path, target)
            counts[split] = counts.get(split, 0) + 1
    return counts


def collect_asterisk(out: Path, root: Path = ASTERISK, workers: int = 2) -> dict[str, int]:
    """Decode the G.722 prompts (16 kHz) to FLAC in out/clean/<split>/asterisk_<voice>/."""
    counts: dict[str, int] = {}
    if not root.is_dir():
        return counts
    jobs = []
    for path in sorted(root.rglob("*.g722")):
        voice = path.relative_to(root).parts[0]  # e.g. en_US_f_Allison, es_MX_f_...
        language = voice.split("_")[0].lower()
        split = "validation" if language in ASTERISK_VALIDATION else "train"
        name = "__".join(path.relative_to(root).parts[1:]).removesuffix(".g722") + ".flac"
        jobs.append((path, out / "clean" / split / f"asterisk_{voice}" / name, split))

    def one(job: tuple[Path, Path, str]) -> str | None:
        path, target, split = job
        if not target.exists():
            audio = decode(path, 16000)
            if audio is None or audio.size < 1600:
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(target), audio, 16000)
        return split

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for split in pool.map(one, jobs):
            if split:
                counts[split] = counts.get(split, 0) + 1
    return counts


def collect_fillets(out: Path, root: Path = FILLETS) -> dict[str, int]:
    """Link the dialogue lines (sound/<level>/<lang>/*.ogg) into
    out/clean/<split>/fillets_<lang>/<level>__<name>; counts per split."""
    counts: dict[str, int] = {}
    if not root.is_dir():
        return counts
    for path in sorted(root.rglob("*.ogg")):
        split = FILLETS_LANGUAGES.get(path.parent.name)
        if split is None or FILLETS_SKIP.search(path.name):
            continue  # sound effects (no language folder) and lines over music
        level = "__".join(path.parent.relative_to(root).parts[:-1])
        target = out / "clean" / split / f"fillets_{path.parent.name}" / f"{level}__{path.name}"
        link(path, target)
        counts[split] = counts.get(split, 0) + 1
    return counts


def noise_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in AUDIO and p.is_file() and not SPEECHY.search(str(p))
    )


def build_noise_beds(
    out: Path, rng: np.random.Generator, packages=NOISE_PACKAGES
) -> list[dict[str, object]]:  # noqa: ANN001
    """Cut each package's sounds into 30 s 48 kHz FLAC beds in out/noise/<package>/.

    Short effects are strung together (random order, short gaps) so that a bed is as long as
    a recording of ambience; long files are cut into beds. Training draws beds uniformly, so
    every package weighs by its duration, not by its number of tiny files.
    """
    report = []
    bed = int(BED_SECONDS * RATE)
    for package, root, licence in packages:
        folder = Path(root)
        if not folder.is_dir():
            report.append({"package": package, "folder": root, "files": 0, "seconds": 0.0})
            continue
        target = out / "noise" / f"{package}__{folder.name}"
        target.mkdir(parents=True, exist_ok=True)
        files = noise_files(folder)
        order = rng.permutation(len(files))
        pieces: list[np.ndarray] = []
        filled, written, total = 0, 0, 0.0
        for index in order:
            audio = decode(files[index], RATE)
            if audio is None or audio.size < RATE // 20 or not np.isfinite(audio).all():
                continue
            peak = float(np.max(np.abs(audio)))
            if peak < 1e-4:
                continue
            audio = audio[: 4 * bed] / peak * 0.5  # long files: at most 2 minutes each
            total += audio.size / RATE
            pieces += [audio, np.zeros(int(rng.uniform(0.0, 0.3) * RATE), dtype=np.float32)]
            filled += audio.size
            while filled >= bed:
                stream = np.concatenate(pieces)
                sf.write(str(target / f"bed_{written:04d}.flac"), stream[:bed], RATE)
                written += 1
                pieces, filled = [stream[bed:]], stream.size - bed
        if filled > 5 * RATE:
            sf.write(str(target / f"bed_{written:04d}.flac"), np.concatenate(pieces), RATE)
            written += 1
        report.append(
            {
                "package": package,
                "folder": root,
                "licence": licence,
                "files": len(files),
                "seconds": round(total, 1),
                "beds": written,
            }
        )
    return report
