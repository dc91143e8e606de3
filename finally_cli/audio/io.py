"""Audio file I/O: header checks and streaming reads with clear errors, atomic streaming writes."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from finally_cli.audio.files import (
    FFMPEG_EXTENSIONS,
    folder_problem,
    make_parents,
    remove_made,
    temporary_name,
)
from finally_cli.errors import AudioError, ConfigError, OutputError

# Frames per read and per ffmpeg pipe buffer (I/O "buffers"; model inputs are "windows").
BUFFER_FRAMES = 65536

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
# Input sample rates we accept, the same range as --sample-rate: a header claiming 1 Hz would
# otherwise be "resampled" into gigabytes of staged audio.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768000


def check_sample_rate(name: str, sample_rate: int) -> None:
    """Raises AudioError when `sample_rate` is outside [1 kHz, 768 kHz]."""
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{name}: sample rate {sample_rate} Hz is outside {MIN_SAMPLE_RATE // 1000} kHz"
            f"-{MAX_SAMPLE_RATE // 1000} kHz; refusing it (a damaged or mislabelled header?)"
        )


@dataclass(frozen=True)
class AudioInfo:
    """What a probe of an input file found."""

    path: Path
    sample_rate: int
    channels: int
    frames: int  # exact for soundfile; from the container's duration for ffmpeg
    decoder: str = "soundfile"  # or "ffmpeg"

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def read_info(path: str | Path) -> AudioInfo:
    """Check that `path` is a readable, non-empty audio file and describe it (header only).

    Files libsndfile does not recognise go to ffmpeg when it is installed (m4a/AAC, the
    audio track of mp4/mkv/webm videos); without ffmpeg the error says it is needed.

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
        reason = _libsndfile_reason(err)
        if reason.startswith("not an audio file"):
            return _ffmpeg_info(path, reason)
        raise AudioError(f"{path}: cannot read: {reason}") from err
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
    check_sample_rate(str(path), int(info.samplerate))
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames))


def _ffmpeg_info(path: Path, reason: str) -> AudioInfo:
    from finally_cli.audio import ffmpeg
    from finally_cli.audio.files import ffmpeg_available

    if not ffmpeg_available():
        if path.suffix.lower() in FFMPEG_EXTENSIONS:
            raise AudioError(f"{path}: cannot read: {ffmpeg.NEEDS_FFMPEG}")
        raise AudioError(f"{path}: cannot read: {reason}")
    rate, channels, frames = ffmpeg.probe_stream(path)
    check_sample_rate(str(path), rate)
    return AudioInfo(path, rate, channels, frames, decoder="ffmpeg")


def _libsndfile_reason(err: Exception) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "Format not recognised" in text or "unknown format" in text.lower():
        return "not an audio file (format not recognised)"
    return text.split(": ", 1)[-1] if text.startswith("Error opening") else text


def duration_seconds(path: str | Path) -> float:
    """Length of an audio file from its header; 0 when it cannot be read (progress totals)."""
    try:
        return read_info(path).seconds
    except AudioError:
        return 0.0


def unfinished_reason(path: Path, source: AudioInfo, sample_rate: int, channels: int) -> str | None:
    """Why the file at `path` is not a finished output of `source`; None when it is.

    A cheap header check, no decoding: readable, not truncated, the expected rate, channel
    count and length (round(frames · rate / source rate); ffmpeg inputs, whose length in the
    header is an estimate, within 1 % + 0.1 s).
    """
    try:
        info = read_info(path)
    except AudioError as err:
        return str(err).removeprefix(f"{path}: ").removeprefix("cannot read: ")
    if info.decoder != "soundfile":
        return "not a file this tool writes"
    if info.sample_rate != sample_rate or info.channels != channels:
        return (
            f"{info.sample_rate} Hz x {info.channels} channels, expected "
            f"{sample_rate} Hz x {channels}"
        )
    expected = int(round(source.frames * sample_rate / source.sample_rate))
    slack = 0 if source.decoder == "soundfile" else expected // 100 + sample_rate // 10
    if abs(info.frames - expected) > slack:
        return f"{info.frames} frames, expected {expected}"
    return None


def unfinished_output(
    source: Path, target: Path, sample_rate: int, channels_mode: str
) -> str | None:
    """Why an existing `target` is not a finished output of `source` (None: it is; a source
    whose header cannot be read is left to fail in the run, its output kept)."""
    try:
        info = read_info(source)
    except AudioError:
        return None
    channels = 1 if channels_mode == "mix" else info.channels
    return unfinished_reason(target, info, sample_rate, channels)


def read_buffers(info: AudioInfo, buffer_frames: int = BUFFER_FRAMES) -> Iterator[np.ndarray]:
    """Yield float32 buffers [frames, channels] of the whole file, streaming.

    Raises:
        AudioError: the file ends before its header says (truncated) or a read fails.
    """
    if info.decoder == "ffmpeg":
        from finally_cli.audio import ffmpeg

        yield from ffmpeg.decode(info.path, info.sample_rate, info.channels, buffer_frames)
        return
    total = 0
    try:
        with sf.SoundFile(str(info.path)) as handle:
            while total < info.frames:
                block = handle.read(
                    min(buffer_frames, info.frames - total), dtype="float32", always_2d=True
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


def load_mono(path: str | Path) -> tuple[np.ndarray, int]:
    """A whole file as float32 [frames], channels averaged, and its sample rate.

    Raises:
        AudioError: unreadable, empty, or NaN/Inf samples.
    """
    path = Path(path)
    try:
        audio, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        if not _libsndfile_reason(err).startswith("not an audio file"):
            raise AudioError(f"{path}: cannot read: {err}") from err
        info = read_info(path)
        audio = np.concatenate(list(read_buffers(info)) or [np.zeros((0, 1), np.float32)])
        rate = info.sample_rate
    if audio.shape[0] == 0:
        raise AudioError(f"{path}: cannot read: no audio samples")
    if not np.isfinite(audio).all():
        raise AudioError(f"{path}: contains NaN/Inf samples")
    return audio.mean(axis=1), int(rate)


def output_format(path: Path, subtype: str | None) -> tuple[str, str]:
    """Container and subtype for an output path (from its extension, or `subtype`)."""
    ext = path.suffix.lower()
    if not ext:
        raise ConfigError(
            f"{path}: output has no extension; name a file such as {path.name}.wav, or end "
            f"the name with / to write <input>_enhanced.wav into that folder (many files: "
            f"finally batch)"
        )
    if ext not in FORMATS:
        raise ConfigError(
            f"{path}: unsupported output extension {ext}; use one of {', '.join(FORMATS)}"
        )
    container, default = FORMATS[ext]
    chosen = (subtype or default).upper()
    if not sf.check_format(container, chosen):
        raise ConfigError(f"{path}: subtype {chosen} is not valid for {container} files")
    return container, chosen


def default_output(input_path: Path, folder: Path | None = None) -> Path:
    """`<stem>_enhanced.wav` beside the input (or in `folder`): WAV, so nothing is re-encoded
    lossily whatever the input's format."""
    return (folder or input_path.parent) / f"{input_path.stem}_enhanced.wav"


@dataclass(frozen=True)
class OutputFile:
    """An output path that passed every check: known format, writable, nothing clobbered.

    `OutputFile.check` is the one place outputs are checked; writers take the result.
    """

    path: Path
    container: str
    subtype: str
    overwrite: bool

    @classmethod
    def check(cls, path: str | Path, subtype: str | None, overwrite: bool) -> OutputFile:
        """Raises:
        ConfigError: unknown extension or subtype. OutputError: exists (without
            `overwrite`), is a folder, or its folder cannot be written.
        """
        path = Path(path)
        if path.is_dir():
            raise OutputError(
                f"{path}: output is a folder; end it with / to write <input>_enhanced.wav "
                f"into it (many files: finally batch)"
            )
        container, chosen = output_format(path, subtype)
        # A dangling or looping symlink "does not exist", yet writing would replace it.
        if (path.exists() or path.is_symlink()) and not overwrite:
            raise OutputError(f"{path}: output exists (pass --overwrite to replace it)")
        _check_folder(path)
        return cls(path, container, chosen, overwrite)

    @property
    def name(self) -> str:
        return str(self.path)


def _check_folder(path: Path) -> None:
    # Only checked: folders are made when the first block is written (`AtomicWriter`), so a
    # run that fails before then (a bad model, an unreadable input) leaves no empty folder.
    problem = folder_problem(path)
    if problem:
        raise OutputError(f"{path}: cannot write: {problem}")


class AtomicWriter:
    """Streams audio into a hidden temporary file beside the output; `commit` renames it.

    Anything that stops the write early (an error, Ctrl-C) ends in `discard`, so no
    partial output is ever left under the final name.

    Args:
        target: a checked output (`OutputFile.check`).
        sample_rate, channels: of the audio written.
    """

    def __init__(self, target: OutputFile, sample_rate: int, channels: int) -> None:
        path = self.path = target.path
        self.container, self.subtype = target.container, target.subtype
        self.overwrite = target.overwrite
        self.clip = self.subtype not in FLOAT_SUBTYPES
        self.tmp = temporary_name(path)
        self.made: list[Path] = []  # folders this writer created; removed again on discard
        self.handle: sf.SoundFile | None = None
        try:
            self.made = make_parents(path)
            self.handle = sf.SoundFile(
                str(self.tmp),
                "w",
                samplerate=sample_rate,
                channels=channels,
                subtype=self.subtype,
                format=self.container,
            )
        except (sf.LibsndfileError, RuntimeError, OSError) as err:
            self.discard()
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
        remove_made(self.made)
        self.made = []

    def _remove_tmp(self) -> None:
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass
