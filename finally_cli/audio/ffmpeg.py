"""Streamed decoding with ffmpeg of what libsndfile cannot read (m4a/AAC, video soundtracks)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from finally_cli.errors import AudioError

NEEDS_FFMPEG = "install ffmpeg to read m4a/AAC files and the audio track of videos"


def probe_stream(path: Path) -> tuple[int, int, int]:
    """(sample rate, channels, estimated frames) of the first audio track of `path`.

    The frame count comes from the container's duration, so it is an estimate; the exact
    count is known once the stream has been decoded.

    Raises:
        AudioError: ffmpeg is missing, the file has no audio track or ffprobe cannot read it.
    """
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None or shutil.which("ffmpeg") is None:
        raise AudioError(f"{path}: cannot read: not a format libsndfile reads; {NEEDS_FFMPEG}")
    entries = "stream=sample_rate,channels,duration:format=duration"
    command = [ffprobe, "-v", "error", "-select_streams", "a:0", "-show_entries", entries,
               "-of", "json", str(path)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["unknown format"])[-1]
        raise AudioError(f"{path}: cannot read: not an audio file ({_short(reason, path)})")
    report = json.loads(done.stdout or "{}")
    streams = report.get("streams") or []
    if not streams:
        raise AudioError(f"{path}: cannot read: no audio track")
    stream = streams[0]
    rate, channels = int(stream.get("sample_rate") or 0), int(stream.get("channels") or 0)
    if rate <= 0 or channels <= 0:
        raise AudioError(f"{path}: cannot read: audio track without sample rate or channels")
    duration = stream.get("duration") or report.get("format", {}).get("duration") or 0
    return rate, channels, max(1, int(round(float(duration) * rate)))


def decode(path: Path, sample_rate: int, channels: int, block_frames: int) -> Iterator[np.ndarray]:
    """Yield float32 buffers [frames, channels] of the first audio track, streaming.

    ffmpeg writes raw float samples into a pipe that is read `block_frames` at a time, so
    memory stays bounded whatever the file length. Stopping the iteration ends ffmpeg.

    Raises:
        AudioError: ffmpeg fails while decoding (its last message is quoted).
    """
    command = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0", "-vn",
               "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(channels),
               "-ar", str(sample_rate), "pipe:1"]  # fmt: skip
    frame_bytes = 4 * channels
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
        assert process.stdout is not None
        finished = False
        try:
            rest = b""
            while True:
                data = process.stdout.read(block_frames * frame_bytes)
                if not data:
                    break
                data = rest + data
                whole = len(data) // frame_bytes * frame_bytes
                rest = data[whole:]
                if whole:
                    yield np.frombuffer(data[:whole], dtype=np.float32).reshape(-1, channels)
            finished = True
        finally:
            if not finished:
                process.kill()
            process.stdout.close()
            code = process.wait()
        if code != 0:
            errors.seek(0)
            lines = errors.read().decode("utf-8", "replace").strip().splitlines()
            reason = _short(lines[-1] if lines else f"ffmpeg exit code {code}", path)
            raise AudioError(f"{path}: cannot read: ffmpeg failed ({reason})")


def _short(message: str, path: Path) -> str:
    """ffmpeg's message without the file name it repeats."""
    return message.replace(f"{path}: ", "").strip()
