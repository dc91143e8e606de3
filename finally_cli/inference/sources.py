"""Where audio comes from (file or array) and where it goes (atomic file or array)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from finally_cli.audio.io import (
    BUFFER_FRAMES,
    AtomicWriter,
    AudioInfo,
    OutputFile,
    check_sample_rate,
    read_buffers,
    read_info,
)
from finally_cli.errors import AudioError


class Source(Protocol):
    name: str
    sample_rate: int
    channels: int
    frames: int  # may be an estimate (ffmpeg); the job counts the exact number

    def buffers(self) -> Iterator[np.ndarray]:
        """Yield float32 buffers [frames, channels]; may be called more than once."""
        ...


class FileSource:
    """An audio file read in buffers (its header is checked on construction)."""

    def __init__(self, path: str | Path) -> None:
        self.info: AudioInfo = read_info(path)
        self.name = str(path)
        self.sample_rate = self.info.sample_rate
        self.channels = self.info.channels
        self.frames = self.info.frames

    def buffers(self) -> Iterator[np.ndarray]:
        return read_buffers(self.info)


class ArraySource:
    """An in-memory signal [frames] or [frames, channels]."""

    def __init__(self, audio: np.ndarray, sample_rate: int, name: str = "<array>") -> None:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            audio = audio[:, None]
        if audio.ndim != 2 or audio.shape[0] == 0 or audio.shape[1] == 0:
            raise AudioError(
                f"{name}: expected [frames] or [frames, channels] with ≥ 1 frame, "
                f"got shape {list(audio.shape)}"
            )
        check_sample_rate(name, int(sample_rate))
        self.audio = audio
        self.name = name
        self.sample_rate = int(sample_rate)
        self.frames, self.channels = audio.shape

    def buffers(self) -> Iterator[np.ndarray]:
        for start in range(0, self.frames, BUFFER_FRAMES):
            yield self.audio[start : start + BUFFER_FRAMES]


class Sink(Protocol):
    def write(self, block: np.ndarray) -> None: ...
    def commit(self) -> None: ...
    def discard(self) -> None: ...


class Output(Protocol):
    """Where a job's result goes: named for reports, opened once the rate is known."""

    name: str

    def open(self, sample_rate: int, channels: int) -> Sink: ...


class FileOutput:
    """A checked output file, written atomically (`AtomicWriter`)."""

    def __init__(self, target: OutputFile) -> None:
        self.target = target
        self.name = target.name

    def open(self, sample_rate: int, channels: int) -> AtomicWriter:
        return AtomicWriter(self.target, sample_rate, channels)


class ArraySink:
    """Collects the output in memory (for `Enhancer.enhance_array`)."""

    name = "<array>"

    def __init__(self) -> None:
        self.parts: list[np.ndarray] = []
        self.result: np.ndarray | None = None

    def open(self, sample_rate: int, channels: int) -> ArraySink:
        return self

    def write(self, block: np.ndarray) -> None:
        self.parts.append(np.asarray(block, dtype=np.float32))

    def commit(self) -> None:
        self.result = np.concatenate(self.parts, axis=0)

    def discard(self) -> None:
        self.parts = []
