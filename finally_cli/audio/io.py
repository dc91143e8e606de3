"""Audio file I/O: probing and streaming reads with clear errors, atomic streaming writes."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from finally_cli.errors import AudioError, ConfigError, OutputError

BLOCK_FRAMES = 65536

# Container chosen by the output extension, with the sample format used when --subtype is absent.
FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "PCM_24"),
    ".flac": ("FLAC", "PCM_24"),
    ".ogg": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"),
    ".aiff": ("AIFF", "PCM_24"),
    ".aif": ("AIFF", "PCM_24"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE", "VORBIS", "OPUS", "MPEG_LAYER_III")


@dataclass(frozen=True)
class AudioInfo:
    """What a probe of an input file found."""

    path: Path
    sample_rate: int
    channels: int
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def probe(path: str | Path) -> AudioInfo:
    """Check that `path` is a readable, non-empty audio file and describe it.

    Raises:
        AudioError: missing, empty, unrecognised or zero-length files.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: cannot read: file is empty")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"{path}: cannot read: {_libsndfile_reason(err)}") from err
    if info.frames <= 0:
        raise AudioError(f"{path}: cannot read: no audio samples")
    # libsndfile silently shortens WAV/AIFF files whose data chunk ends early; its
    # header report says "data : <declared> (should be <present>)".
    short = re.search(
        r"^(?:data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", info.extra_info or "", re.M
    )
    if short and int(short.group(2)) < int(short.group(1)):
        raise AudioError(
            f"{path}: cannot read: truncated (header declares {short.group(1)} "
            f"data bytes, only {short.group(2)} present)"
        )
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(f"{path}: cannot read: invalid header")
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames))


def _libsndfile_reason(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "Format not recognised" in text or "unknown format" in text.lower():
        return "not an audio file (format not recognised)"
    return text.split(": ", 1)[-1] if text.startswith("Error opening") else text


def duration_seconds(path: str | Path) -> float:
    """Length of an audio file from its header; 0 when it cannot be read (progress totals)."""
    try:
        info = sf.info(str(path))
        return info.frames / info.samplerate
    except (sf.LibsndfileError, RuntimeError, ZeroDivisionError):
        return 0.0


def read_blocks(info: AudioInfo, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Yield float32 blocks [frames, channels] of the whole file, streaming.

    Raises:
        AudioError: the file ends before its header says (truncated) or a read fails.
    """
    total = 0
    try:
        with sf.SoundFile(str(info.path)) as handle:
            while total < info.frames:
                block = handle.read(
                    min(block_frames, info.frames - total), dtype="float32", always_2d=True
                )
                if block.shape[0] == 0:
                    break
                total += block.shape[0]
                yield block
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{info.path}: cannot read: {_libsndfile_reason(err)}") from err
    if total < info.frames:
        raise AudioError(
            f"{info.path}: cannot read: truncated (header says {info.frames} frames, "
            f"only {total} present)"
        )


def output_format(path: Path, subtype: str | None) -> tuple[str, str]:
    """Container and subtype for an output path (from its extension, or `subtype`)."""
    ext = path.suffix.lower()
    if ext not in FORMATS:
        raise ConfigError(
            f"{path}: unsupported output extension {ext or '(none)'}; use one of "
            f"{', '.join(FORMATS)}"
        )
    container, default = FORMATS[ext]
    chosen = (subtype or default).upper()
    if not sf.check_format(container, chosen):
        raise ConfigError(f"{path}: subtype {chosen} is not valid for {container} files")
    return container, chosen


def check_output(path: Path, overwrite: bool) -> None:
    """Fail early when `path` must not or cannot be written."""
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: output exists (pass --overwrite to replace it)")
    if path.is_dir():
        raise OutputError(f"{path}: output is a folder")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"{path}: cannot write: {err.strerror or err}") from err
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{path}: cannot write: folder {parent} is not writable")


class AtomicWriter:
    """Streams audio into a hidden temporary file beside `path`; `commit` renames it.

    Anything that stops the write early (an error, Ctrl-C) ends in `discard`, so no
    partial output is ever left under the final name.
    """

    def __init__(
        self, path: Path, sample_rate: int, channels: int, subtype: str | None, overwrite: bool
    ) -> None:
        self.path = path
        self.container, self.subtype = output_format(path, subtype)
        check_output(path, overwrite)
        self.overwrite = overwrite
        self.clip = self.subtype not in FLOAT_SUBTYPES
        self.tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            self.handle: sf.SoundFile | None = sf.SoundFile(
                str(self.tmp),
                "w",
                samplerate=sample_rate,
                channels=channels,
                subtype=self.subtype,
                format=self.container,
            )
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            self._remove_tmp()
            raise OutputError(f"{path}: cannot write: {err}") from err
        self.frames = 0

    def write(self, block: np.ndarray) -> None:
        # block: [frames, channels] float
        if self.handle is None or block.shape[0] == 0:
            return
        if self.clip:
            block = np.clip(block, -1.0, 1.0)
        try:
            self.handle.write(np.ascontiguousarray(block, dtype=np.float32))
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            self.discard()
            raise OutputError(f"{self.path}: cannot write: {err}") from err
        self.frames += block.shape[0]

    def commit(self) -> None:
        if self.handle is None:
            return
        try:
            self.handle.close()
            self.handle = None
            if self.path.exists() and not self.overwrite:
                raise OutputError(f"{self.path}: output appeared meanwhile; not replaced")
            os.replace(self.tmp, self.path)
        except OSError as err:
            self.discard()
            raise OutputError(f"{self.path}: cannot write: {err}") from err
        except OutputError:
            self.discard()
            raise

    def discard(self) -> None:
        if self.handle is not None:
            try:
                self.handle.close()
            except (sf.LibsndfileError, RuntimeError, OSError):
                pass
            self.handle = None
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass
