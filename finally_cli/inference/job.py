"""One input → one output: level pass, staging at the model rate, overlap-add, writing.

A `FileJob` owns its life cycle: `prepare` (level pass, staging, plan, open the output),
`consume` each window's output in order (it says when it is `complete`), then `finish` or
`fail`, each of which returns the file's `FileResult`. The scheduler (`Enhancer`) only asks
it for `WindowTask`s and hands their outputs back.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from finally_cli.audio.chunking import OverlapAdder, WindowPlan, WindowSpec, mirror_indices
from finally_cli.audio.level import INPUT_LIMIT, PEAK_LIMIT, LevelMeter
from finally_cli.errors import AudioError, ModelError, OutputError
from finally_cli.inference.options import EnhancerOptions, FileResult
from finally_cli.inference.sources import Output, Sink, Source


class Fifo:
    """A queue of [frames, channels] buffers with exact-size pops."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self.parts: list[np.ndarray] = []
        self.size = 0

    def push(self, part: np.ndarray) -> None:
        if part.shape[0]:
            self.parts.append(part)
            self.size += part.shape[0]

    def pop(self, frames: int) -> np.ndarray:
        frames = min(frames, self.size)
        out = np.zeros((frames, self.channels), dtype=np.float32)
        filled = 0
        while filled < frames:
            part = self.parts[0]
            take = min(frames - filled, part.shape[0])
            out[filled : filled + take] = part[:take]
            filled += take
            if take == part.shape[0]:
                self.parts.pop(0)
            else:
                self.parts[0] = part[take:]
        self.size -= frames
        return out


def to_tracks(buffer: np.ndarray, channels_mode: str) -> np.ndarray:
    """[frames, channels] → [frames, tracks]: mean for "mix", unchanged for "each"."""
    if channels_mode == "mix" and buffer.shape[1] > 1:
        return buffer.mean(axis=1, keepdims=True, dtype=np.float32)
    return buffer


class Resampler:
    """Streaming soxr resampler over [frames, channels] (identity when rates match)."""

    def __init__(self, rate_in: int, rate_out: int, channels: int) -> None:
        self.stream = None
        if rate_in != rate_out:
            self.stream = soxr.ResampleStream(
                rate_in, rate_out, channels, dtype="float32", quality="HQ"
            )

    def __call__(self, buffer: np.ndarray, last: bool = False) -> np.ndarray:
        if self.stream is None:
            return buffer
        out = self.stream.resample_chunk(np.ascontiguousarray(buffer, dtype=np.float32), last=last)
        return out.reshape(-1, buffer.shape[1])


@dataclass(frozen=True)
class WindowTask:
    """One window of one track of one job: what the scheduler runs and hands back."""

    job: FileJob
    window: int
    track: int
    length: int  # input-rate samples the model runs on

    def read(self, length: int | None = None) -> np.ndarray:
        """The gained window [length] (longer lengths read more of the mirrored tail)."""
        return self.job.read_window(self.window, self.track, length or self.length)

    def hand_back(self, output: np.ndarray) -> float:
        """Give the model's output (possibly padded) to the job; input seconds finalised."""
        return self.job.consume(self, output)


def _pairs(buffers: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, bool]]:
    """(buffer, is_last) over a stream, one buffer of look-ahead."""
    buffer = next(buffers, None)
    while buffer is not None:
        following = next(buffers, None)
        yield buffer, following is None
        buffer = following


class FileJob:
    """Enhances one source into one output through windows run by a shared scheduler.

    Args:
        source: the input signal.
        output: where the result goes; opened after the level pass.
        spec: the model's window geometry.
        options: channels, output rate and dry/wet mix of the run.
        workdir: folder for the staged model-rate signal.
        peak_limit: the gained input's peak ceiling (the model's `peak_limit`; None: the
            active level alone sets the gain).
    """

    def __init__(
        self,
        source: Source,
        output: Output,
        spec: WindowSpec,
        options: EnhancerOptions,
        workdir: Path,
        peak_limit: float | None = PEAK_LIMIT,
    ) -> None:
        self.source = source
        self.peak_limit = peak_limit
        self.output = output
        self.spec = spec
        self.channels_mode = options.channels
        self.tracks = 1 if options.channels == "mix" else source.channels
        self.out_rate = options.out_rate
        self.mix = options.mix
        self.workdir = workdir
        self.frames = source.frames  # exact once `prepare` has read the source
        self.plan: WindowPlan | None = None
        self.sink: Sink | None = None
        self.gain = 1.0
        self.input_limit = INPUT_LIMIT
        self.failed = False
        self.complete = False  # every window consumed: ready to finish
        self.started = time.perf_counter()
        self._stage_path: Path | None = None

    @property
    def target(self) -> int:
        """Output frames: round(frames · out_rate / in_rate)."""
        return int(round(self.frames * self.out_rate / self.source.sample_rate))

    @property
    def input_seconds(self) -> float:
        return self.frames / self.source.sample_rate

    # -- pass 1 -----------------------------------------------------------------------
    def prepare(self) -> None:
        """Level pass + resampling to the model rate into a staging file; opens the output."""
        self.started = time.perf_counter()
        meter = LevelMeter(self.source.sample_rate)
        resampler = Resampler(self.source.sample_rate, self.spec.input_rate, self.tracks)
        try:
            staged, position, gain = self._stage(meter, resampler)
        except OSError as err:  # disk full, file-size limit: this file fails, the run goes on
            where = self._stage_path.parent if self._stage_path else self.workdir
            raise OutputError(
                f"{self.source.name}: cannot stage the input in {where}: {err.strerror or err}"
            ) from err
        self.frames = position
        self.gain = gain
        self.input_limit = meter.input_limit(gain, self.peak_limit)
        self.plan = self.spec.plan(staged)
        self._adder = OverlapAdder(self.plan, self.spec.factor, self.tracks)
        self._wet_resampler = Resampler(self.spec.output_rate, self.out_rate, self.tracks)
        self._wet = Fifo(self.tracks)
        self._dry = Fifo(self.tracks)
        self._dry_stream: Iterator[np.ndarray] | None = None
        if self.mix < 1.0:
            self._dry_stream = self._dry_buffers()
        self._written = 0
        self.sink = self.output.open(self.out_rate, self.tracks)

    def _stage(self, meter: LevelMeter, resampler: Resampler) -> tuple[int, int, float]:
        """Pass 1 into the staging file; returns (staged samples, input frames, gain)."""
        handle = tempfile.NamedTemporaryFile(dir=self.workdir, suffix=".f32", delete=False)
        self._stage_path = Path(handle.name)
        staged = 0
        position = 0
        with handle:
            for buffer, last in _pairs(self.source.buffers()):
                if not np.isfinite(buffer).all():
                    bad = int(np.argmax(~np.isfinite(buffer).all(axis=1)))
                    at = (position + bad) / self.source.sample_rate
                    raise AudioError(
                        f"{self.source.name}: contains NaN/Inf samples "
                        f"(first at {at:.3f} s); refusing to process it"
                    )
                position += buffer.shape[0]
                meter.update(buffer)
                out = resampler(to_tracks(buffer, self.channels_mode), last=last)
                handle.write(np.ascontiguousarray(out, dtype=np.float32).tobytes())
                staged += out.shape[0]
            if position == 0:
                raise AudioError(f"{self.source.name}: cannot read: no audio samples")
            if staged == 0:  # fewer input samples than one model-rate sample
                handle.write(np.zeros((1, self.tracks), dtype=np.float32).tobytes())
                staged = 1
        return staged, position, meter.gain(self.peak_limit)

    def tasks(self) -> Iterator[WindowTask]:
        """The windows to run, in the order `consume` needs them (tracks within a window)."""
        if self.plan is None:
            raise RuntimeError("FileJob.tasks() before prepare()")
        for window, length in enumerate(self.plan.lengths):
            for track in range(self.tracks):
                yield WindowTask(self, window, track, length)

    def read_window(self, window: int, track: int, length: int) -> np.ndarray:
        """Gained model-rate samples of a window, mirrored past the signal ends."""
        plan = self.plan
        if plan is None or self._stage_path is None:
            raise RuntimeError("FileJob.read_window() outside prepare()..finish()")
        start = plan.starts[window] - plan.edge
        indices = np.arange(start, start + length)
        inside = (indices >= 0) & (indices < plan.samples)
        if not inside.all():
            indices = mirror_indices(indices, plan.samples)
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
        # Only a spike the level pass left out exceeds the input limit once gained (the rest
        # stays below it): clamped, it cannot drive the model's output to full scale.
        gained = data * np.float32(self.gain)
        return np.clip(gained, -self.input_limit, self.input_limit, out=gained)

    # -- pass 2 -----------------------------------------------------------------------
    def consume(self, task: WindowTask, output: np.ndarray) -> float:
        """Take one window's model output (extra padded samples are cut); returns input
        seconds newly finalised. Sets `complete` after the last window's last track."""
        assert self.plan is not None
        output = output[: task.length * self.spec.factor]
        if not np.isfinite(output).all():
            at = self.plan.starts[task.window] / self.spec.input_rate
            raise ModelError(
                f"{self.source.name}: the model's output holds NaN/Inf (window at {at:.2f} s); "
                f"no output written"
            )
        final = self._adder.add(task.window, task.track, output)  # [tracks, frames]
        if final.shape[1]:
            wet = final.T / np.float32(self.gain)
            self._push(self._wet_resampler(wet))
        if task.window == self.plan.count - 1 and task.track == self.tracks - 1:
            self.complete = self._adder.done
        return final.shape[1] / self.spec.output_rate

    def _dry_buffers(self) -> Iterator[np.ndarray]:
        resampler = Resampler(self.source.sample_rate, self.out_rate, self.tracks)
        for buffer, last in _pairs(self.source.buffers()):
            yield resampler(to_tracks(buffer, self.channels_mode), last=last)

    def _push(self, wet: np.ndarray, flush: bool = False) -> None:
        self._wet.push(wet)
        if self._dry_stream is not None:
            while self._dry.size < self._wet.size or flush:
                buffer = next(self._dry_stream, None)
                if buffer is None:
                    break
                self._dry.push(buffer)
            frames = self._wet.size if flush else min(self._wet.size, self._dry.size)
            wet_part = self._wet.pop(frames)
            dry_part = self._dry.pop(frames)
            if dry_part.shape[0] < frames:
                dry_part = np.pad(dry_part, ((0, frames - dry_part.shape[0]), (0, 0)))
            out = self.mix * wet_part + (1.0 - self.mix) * dry_part
        else:
            out = self._wet.pop(self._wet.size)
        self._write(out)

    def _write(self, part: np.ndarray) -> None:
        assert self.sink is not None
        part = part[: max(0, self.target - self._written)]
        if part.shape[0]:
            self.sink.write(part)
            self._written += part.shape[0]

    # -- the end --------------------------------------------------------------------------
    def finish(self) -> FileResult:
        """Flush resamplers, pad/trim to the exact output length, commit the output.

        Raises:
            FinallyError: the output cannot be written (call `fail` then).
        """
        assert self.sink is not None and self.complete
        tail = self._wet_resampler(np.zeros((0, self.tracks), dtype=np.float32), last=True)
        self._push(tail, flush=True)
        if self._written < self.target:
            self._write(np.zeros((self.target - self._written, self.tracks), np.float32))
        self.sink.commit()
        self._cleanup()
        return self._result("ok")

    def fail(self, error: BaseException | str = "") -> FileResult:
        """Discard any partial output and the staging file; idempotent."""
        self.failed = True
        if self.sink is not None:
            self.sink.discard()
        self._cleanup()
        return self._result("failed", str(error))

    def _result(self, status: str, error: str = "") -> FileResult:
        seconds = time.perf_counter() - self.started
        return FileResult(
            self.source.name, self.output.name, status, self.input_seconds, seconds, error
        )

    def _cleanup(self) -> None:
        if self._stage_path is not None:
            self._stage_path.unlink(missing_ok=True)
            self._stage_path = None
