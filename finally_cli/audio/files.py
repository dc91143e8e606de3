"""Audio file names and folders: the extensions we read, folder discovery, atomic writes."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# Read by libsndfile (soundfile).
SOUNDFILE_EXTENSIONS = (
    ".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au", ".w64", ".caf",
)  # fmt: skip
# Read through ffmpeg when it is installed: AAC/ALAC in MP4 containers, and the audio
# track of videos.
FFMPEG_EXTENSIONS = (".m4a", ".m4b", ".aac", ".mp4", ".mov", ".mkv", ".webm", ".wma", ".3gp")


def ffmpeg_available() -> bool:
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def readable_extensions() -> tuple[str, ...]:
    """Every extension this machine can decode (ffmpeg's only when ffmpeg is installed)."""
    return SOUNDFILE_EXTENSIONS + (FFMPEG_EXTENSIONS if ffmpeg_available() else ())


@dataclass
class Found:
    """What a folder scan found: the audio files, and how many others it passed over.

    Attributes:
        files: matching files, sorted.
        ignored: extension (or "(none)") → count of visible files not read.
    """

    files: list[Path] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)

    def ignored_summary(self) -> str:
        """e.g. "3 other files (2 .txt, 1 .m4a)"; "" when nothing was passed over."""
        total = sum(self.ignored.values())
        if not total:
            return ""
        kinds = ", ".join(f"{n} {ext}" for ext, n in self.ignored.most_common())
        return f"{total} other file{'s' if total != 1 else ''} ({kinds})"


def find_audio(
    root: Path, extensions: Iterable[str] = SOUNDFILE_EXTENSIONS, exclude: Path | None = None
) -> Found:
    """Visible files under `root` (recursive, sorted) whose extension is in `extensions`.

    Hidden files (a leading dot, e.g. our own `.name.part` temporaries) are skipped silently;
    anything under `exclude` (e.g. an output folder inside the input folder) is skipped.
    """
    wanted = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    excluded = exclude.resolve() if exclude is not None else None
    found = Found()
    for path in sorted(root.rglob("*")):
        if path.name.startswith(".") or not path.is_file():
            continue
        if excluded is not None and excluded in path.resolve().parents:
            continue
        if path.suffix.lower() in wanted:
            found.files.append(path)
        else:
            found.ignored[path.suffix.lower() or "(none)"] += 1
    return found


# A temporary file or staging folder whose owner is alive is left alone unless nothing has
# touched it for this long (a live owner writes its .part at every window).
STALE_SECONDS = 24 * 3600
_PART = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.part$")


def _owner_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


def _stale(path: Path, pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        age = time.time() - path.lstat().st_mtime
    except OSError:
        return False
    return _owner_gone(pid) or age > STALE_SECONDS


def remove_stale_parts(targets: Iterable[Path]) -> int:
    """Remove `.<name>.<pid>.part` files that a killed run left beside these outputs.

    Only temporaries of the given targets are considered (in a run of several processes,
    each owns its share of the outputs), and only when their process is gone from this
    machine or they are older than `STALE_SECONDS`. Returns how many were removed.
    """
    by_folder: dict[Path, set[str]] = {}
    for target in targets:
        by_folder.setdefault(target.parent, set()).add(target.name)
    removed = 0
    for folder, names in by_folder.items():
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            match = _PART.match(entry.name)
            if match is None or match["name"] not in names or not entry.is_file():
                continue
            path = Path(entry.path)
            if _stale(path, int(match["pid"])):
                path.unlink(missing_ok=True)
                removed += 1
    return removed


def staging_prefix() -> str:
    """Prefix of this process's staging folders: `finally-<host>-<pid>-`."""
    return f"finally-{socket.gethostname()}-{os.getpid()}-"


def remove_stale_staging() -> int:
    """Remove staging folders that killed runs on this machine left in the temporary folder
    (owner process gone, or untouched for `STALE_SECONDS`). Returns how many."""
    pattern = re.compile(rf"^finally-{re.escape(socket.gethostname())}-(\d+)-")
    removed = 0
    try:
        entries = list(os.scandir(tempfile.gettempdir()))
    except OSError:
        return 0
    for entry in entries:
        match = pattern.match(entry.name)
        if (
            match
            and entry.is_dir(follow_symlinks=False)
            and _stale(Path(entry.path), int(match[1]))
        ):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    return removed


def check_writable(path: Path, what: str) -> None:
    """Raises OutputError unless a file could be written at `path` (checked before any work).

    Nothing is created: the nearest existing folder above `path` must be a writable folder.
    """
    from finally_cli.errors import OutputError

    if path.is_dir():
        raise OutputError(f"{path}: {what} is a folder")
    problem = folder_problem(path)
    if problem:
        raise OutputError(f"{path}: cannot write the {what}: {problem}")


def folder_problem(path: Path) -> str | None:
    """Why no file could be made at `path` (judged by its nearest existing ancestor), or None."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is not a folder"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"folder {parent} is not writable"
    return None


def make_parents(path: Path) -> list[Path]:
    """Create the missing folders above `path`; returns those this call made, outermost first."""
    missing = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        remove_made(missing[::-1])
        raise
    return missing[::-1]


def remove_made(folders: list[Path]) -> None:
    """Remove folders `make_parents` made, innermost first, stopping at one no longer empty."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:  # something else was put there meanwhile: keep it and its parents
            return


def temporary_name(path: Path) -> Path:
    """The hidden file beside `path` that a write goes to before it is renamed."""
    return path.with_name(f".{path.name}.{os.getpid()}.part")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` when the block succeeds.

    On any error (or Ctrl-C) the temporary file is removed, so `path` either keeps its old
    content or gets the complete new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
