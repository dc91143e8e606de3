"""One input → one output: level pass, 16 kHz staging, overlap-add, gain/dry-wet, writing."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soxr

from finally_cli.audio.chunking import OverlapAdder, WindowPlan, mirror_indices, plan_windows
from finally_cli.audio.level import LevelMeter
from finally_cli.errors import AudioError
from finally_cli.inference.sources import Sink, Source

MODEL_RATE_IN = 16000


class Fifo:
    """A queue of [frames, channels] blocks with exact-size pops."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.blocks: list[np.ndarray] = []
        self.size = 0

    def push(self, block: np.ndarray) -> None:
        if block.shape[0]:
            self.blocks.append(block)
            self.size += block.shape[0]

    def pop(self, frames: int) -> np.ndarray:
        frames = min(frames, self.size)
        out = np.zeros((frames, self.channels), dtype=np.float32)
        filled = 0
        while filled < frames:
            block = self.blocks[0]
            take = min(frames - filled, block.shape[0])
            out[filled : filled + take] = block[:take]
            filled += take
            if take == block.shape[0]:
                self.blocks.pop(0)
            else:
                self.blocks[0] = block[take:]
        self.size -= frames
        return out


def to_tracks(block: np.ndarray, channels_mode: str) -> np.ndarray:
    """[frames, channels] → [frames, tracks]: mean for "mix", unchanged for "each"."""
    if channels_mode == "mix" and block.shape[1] > 1:
        return block.mean(axis=1, keepdims=True, dtype=np.float32)
    return block


class Resampler:
    """Streaming soxr resampler over [frames, channels] (identity when rates match)."""

    def __init__(self, rate_in: int, rate_out: int, channels: int) -> None:
        self.stream = None
        if rate_in != rate_out:
            self.stream = soxr.ResampleStream(
                rate_in, rate_out, channels, dtype="float32", quality="HQ"
            )

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self.stream is None:
            return block
        out = self.stream.resample_chunk(np.ascontiguousarray(block, dtype=np.float32), last=last)
        return out.reshape(-1, block.shape[1])


class FileJob:
    """Enhances one source into one sink through windows run by a shared scheduler.

    Args:
        source: the input signal.
        make_sink: called after the level pass with (sample_rate, channels).
        channels_mode: "mix" or "each".
        out_rate: output sample rate.
        model_rate: the generator's output sample rate.
        mix: wet share, 1 = enhanced only, 0 = input only.
        chunk, overlap, edge, multiple: window plan parameters (16 kHz samples).
        workdir: folder for the staged 16 kHz signal.
    """

    def __init__(
        self,
        source: Source,
        make_sink: Callable[[int, int], Sink],
        channels_mode: str,
        out_rate: int,
        model_rate: int,
        mix: float,
        chunk: int,
        overlap: int,
        edge: int,
        multiple: int,
        workdir: Path,
    ) -> None:
        self.source = source
        self.make_sink = make_sink
        self.channels_mode = channels_mode
        self.tracks = 1 if channels_mode == "mix" else source.channels
        self.out_rate = out_rate
        self.model_rate = model_rate
        self.factor = model_rate // MODEL_RATE_IN
        self.mix = mix
        self.chunk, self.overlap, self.edge, self.multiple = chunk, overlap, edge, multiple
        self.workdir = workdir
        self.target = int(round(source.frames * out_rate / source.sample_rate))
        self.plan: WindowPlan | None = None
        self.sink: Sink | None = None
        self.gain = 1.0
        self.failed = False
        self.finished = False
        self.started = time.perf_counter()
        self.seconds = 0.0
        self._staged: int | None = None
        self._stage_path: Path | None = None

    # -- pass 1 -----------------------------------------------------------------------
    def prepare(self) -> None:
        """Level pass + resampling to 16 kHz into a memory-mapped staging file."""
        self.started = time.perf_counter()
        meter = LevelMeter(self.source.sample_rate)
        resampler = Resampler(self.source.sample_rate, MODEL_RATE_IN, self.tracks)
        handle = tempfile.NamedTemporaryFile(dir=self.workdir, suffix=".f32", delete=False)
        self._stage_path = Path(handle.name)
        staged = 0
        position = 0
        with handle:
            blocks = self.source.blocks()
            block = next(blocks, None)
            while block is not None:
                following = next(blocks, None)
                if not np.isfinite(block).all():
                    bad = int(np.argmax(~np.isfinite(block).all(axis=1)))
                    at = (position + bad) / self.source.sample_rate
                    raise AudioError(
                        f"{self.source.name}: contains NaN/Inf samples "
                        f"(first at {at:.3f} s); refusing to process it"
                    )
                position += block.shape[0]
                meter.update(block.mean(axis=1))
                meter.peak = max(meter.peak, float(np.abs(block).max()))
                out = resampler(to_tracks(block, self.channels_mode), last=following is None)
                handle.write(np.ascontiguousarray(out, dtype=np.float32).tobytes())
                staged += out.shape[0]
                block = following
            if staged == 0:  # fewer input samples than one 16 kHz sample
                handle.write(np.zeros((1, self.tracks), dtype=np.float32).tobytes())
                staged = 1
        self.gain = meter.gain()
        self._staged = staged
        self.plan = plan_windows(staged, self.chunk, self.overlap, self.edge, self.multiple)
        self.adder = OverlapAdder(self.plan, self.factor, self.tracks)
        self.wet_resampler = Resampler(self.model_rate, self.out_rate, self.tracks)
        self.wet = Fifo(self.tracks)
        self.dry = Fifo(self.tracks)
        self._dry_blocks: Iterator[np.ndarray] | None = None
        if self.mix < 1.0:
            self._dry_blocks = self._dry_stream()
        self.written = 0
        self.sink = self.make_sink(self.out_rate, self.tracks)

    def items(self) -> Iterator[tuple[int, int]]:
        assert self.plan is not None
        for window in range(self.plan.count):
            for track in range(self.tracks):
                yield window, track

    def read_window(self, window: int, track: int, length: int) -> np.ndarray:
        """Gained 16 kHz samples of a window, mirrored past the signal ends."""
        assert self.plan is not None and self._staged is not None
        start = self.plan.starts[window] - self.plan.edge
        indices = np.arange(start, start + length)
        inside = (indices >= 0) & (indices < self.plan.samples)
        if not inside.all():
            indices = mirror_indices(indices, self.plan.samples)
        first, last = int(indices.min()), int(indices.max())
        # Plain reads, not a memory map: mapped pages would count towards RSS and grow
        # with the file length.
        rows = np.fromfile(
            self._stage_path,
            dtype=np.float32,
            count=(last - first + 1) * self.tracks,
            offset=first * self.tracks * 4,
        ).reshape(-1, self.tracks)
        data = rows[indices - first, track]
        return data * np.float32(self.gain)

    # -- pass 2 -----------------------------------------------------------------------
    def consume(self, window: int, track: int, output: np.ndarray) -> float:
        """Take one window's model output; returns input seconds newly finalised."""
        final = self.adder.add(window, track, output)  # [tracks, frames] at model rate
        if final.shape[1]:
            wet = final.T / np.float32(self.gain)
            self._push(self.wet_resampler(wet))
        return final.shape[1] / self.model_rate

    def _dry_stream(self) -> Iterator[np.ndarray]:
        resampler = Resampler(self.source.sample_rate, self.out_rate, self.tracks)
        blocks = self.source.blocks()
        block = next(blocks, None)
        while block is not None:
            following = next(blocks, None)
            yield resampler(to_tracks(block, self.channels_mode), last=following is None)
            block = following

    def _push(self, wet: np.ndarray, flush: bool = False) -> None:
        self.wet.push(wet)
        if self._dry_blocks is not None:
            while self.dry.size < self.wet.size or flush:
                block = next(self._dry_blocks, None)
                if block is None:
                    break
                self.dry.push(block)
            frames = self.wet.size if flush else min(self.wet.size, self.dry.size)
            wet_part = self.wet.pop(frames)
            dry_part = self.dry.pop(frames)
            if dry_part.shape[0] < frames:
                dry_part = np.pad(dry_part, ((0, frames - dry_part.shape[0]), (0, 0)))
            out = self.mix * wet_part + (1.0 - self.mix) * dry_part
        else:
            out = self.wet.pop(self.wet.size)
        self._write(out)

    def _write(self, block: np.ndarray) -> None:
        assert self.sink is not None
        block = block[: max(0, self.target - self.written)]
        if block.shape[0]:
            self.sink.write(block)
            self.written += block.shape[0]

    def finish(self) -> None:
        """Flush resamplers, pad/trim to the exact output length, commit the sink."""
        assert self.sink is not None
        tail = self.wet_resampler(np.zeros((0, self.tracks), dtype=np.float32), last=True)
        self._push(tail, flush=True)
        if self.written < self.target:
            self._write(np.zeros((self.target - self.written, self.tracks), dtype=np.float32))
        self.sink.commit()
        self.finished = True
        self.seconds = time.perf_counter() - self.started
        self.cleanup()

    def fail(self) -> None:
        self.failed = True
        if self.sink is not None:
            self.sink.discard()
        self.seconds = time.perf_counter() - self.started
        self.cleanup()

    def cleanup(self) -> None:
        self._staged = None
        if self._stage_path is not None:
            self._stage_path.unlink(missing_ok=True)
            self._stage_path = None

    @property
    def input_seconds(self) -> float:
        return self.source.frames / self.source.sample_rate
