"""Folders under eval's --work-dir: eval removes only the files it made there, never others."""

from __future__ import annotations

import json
from pathlib import Path

from finally_cli.audio.files import atomic_write_text
from finally_cli.errors import OutputError


def claim(out_dir: Path, stamp: dict, names: list[str], stamp_name: str) -> set[str]:
    """Make `out_dir` ready for the outputs `names` (relative paths) made under `stamp`.

    The stamp file lists every output eval made (or was about to make) in the folder. Under
    another stamp (other weights, another runner) those outputs, and only those, are removed;
    a file eval did not make at an output path is refused, never replaced.

    Returns:
        The names already made under this same stamp (to be checked before reuse).

    Raises:
        OutputError: an output path holds a file eval did not write.
    """
    record = _read_json(out_dir / stamp_name)
    made: set[str] = set()
    if isinstance(record, dict):
        files = record.pop("files", None)
        if record == stamp:
            # Stamps from before the file list vouch for the whole folder they stamped.
            made = (
                set(files)
                if isinstance(files, list)
                else {n for n in names if _exists(out_dir / n)}
            )
        elif isinstance(files, list):
            for name in files:
                path = out_dir / str(name)
                if out_dir.resolve() in path.resolve().parents:  # never outside the folder
                    path.unlink(missing_ok=True)
    for name in names:
        path = out_dir / name
        if name not in made and _exists(path):
            raise OutputError(
                f"{path}: exists and was not written by finally eval; not replaced (move it, "
                f"or choose another --work-dir)"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    # Recorded before any output is written: a kill mid-way leaves nothing unclaimed.
    text = json.dumps({**stamp, "files": sorted(made | set(names))})
    atomic_write_text(out_dir / stamp_name, text)
    return {n for n in made if _exists(out_dir / n)}


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
