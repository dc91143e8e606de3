"""The library entry point: `Enhancer` streams files through batched, overlapped windows."""

from __future__ import annotations

import collections
import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from finally_cli.audio.chunking import round_up
from finally_cli.errors import ConfigError, FinallyError
from finally_cli.inference.device import autocast, check_precision, pick_device
from finally_cli.inference.job import MODEL_RATE_IN, FileJob
from finally_cli.inference.sources import ArraySink, ArraySource, FileSource, Source, file_sink
from finally_cli.models.generator import FinallyGenerator

CHANNEL_MODES = ("mix", "each")
MIN_EDGE = 2048  # 128 ms of mirrored context at each end of the file
DEFAULT_OUTPUT_RATE = 48000


@dataclass(frozen=True)
class EnhancerOptions:
    """How to run a model over audio.

    Attributes:
        chunk_seconds: window length (rounded to the model's length multiple).
        overlap_seconds: audio shared by neighbouring windows, cross-faded.
        batch_size: windows per forward pass; None picks one for the device.
        device: "auto", "cpu", "cuda[:N]" or "mps".
        precision: "fp32", "bf16" or "fp16".
        sample_rate: output sample rate; None means 48 kHz, the FINALLY output rate (a model
            that stops at 16 kHz, e.g. a stage-1/2 export, is resampled to it).
        channels: "mix" (one output channel) or "each" (every channel enhanced).
        mix: share of the enhanced signal (1) against the input (0).
        subtype: output sample format (e.g. PCM_16, FLOAT); None follows the extension.
        overwrite: replace existing outputs.
        compile: run the generator through `torch.compile` (static shapes; the first
            window of each length pays the compilation).
        workers: CPU only — windows run concurrently on this many threads with one core
            each (one forward per core scales better than one forward over all cores: the
            small convolutions of finally-small gain nothing from a second intra-op thread);
            None uses torch's thread count. 1 = one window at a time on all threads. While a
            run uses several workers, torch's (process-wide) intra-op thread count is 1; it is
            restored when the run ends.
    """

    chunk_seconds: float = 10.24
    overlap_seconds: float = 1.0
    batch_size: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    sample_rate: int | None = None
    channels: str = "mix"
    mix: float = 1.0
    subtype: str | None = None
    overwrite: bool = False
    compile: bool = False
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.chunk_seconds <= 0:
            raise ConfigError(f"--chunk-seconds {self.chunk_seconds}: must be > 0")
        if self.overlap_seconds < 0 or self.overlap_seconds > self.chunk_seconds / 2:
            raise ConfigError(
                f"--overlap-seconds {self.overlap_seconds}: must be within "
                f"[0, chunk / 2 = {self.chunk_seconds / 2}]"
            )
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size {self.batch_size}: must be ≥ 1 or auto")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers {self.workers}: must be ≥ 1 or auto")
        if self.channels not in CHANNEL_MODES:
            raise ConfigError(f"--channels {self.channels!r}: expected mix or each")
        if not 0.0 <= self.mix <= 1.0:
            raise ConfigError(f"--mix {self.mix}: must be within [0, 1]")
        if self.sample_rate is not None and not 1000 <= self.sample_rate <= 768000:
            raise ConfigError(f"--sample-rate {self.sample_rate}: must be within [1000, 768000]")


@dataclass
class FileResult:
    """Outcome of one input file."""

    input: str
    output: str
    status: str  # "ok", "failed" or "skipped"
    duration: float = 0.0  # seconds of input audio
    seconds: float = 0.0  # wall-clock seconds spent
    error: str = ""


ProgressFn = Callable[[float], None]
WindowItem = tuple[FileJob, int, int]  # (job, window index, track)
HandBackFn = Callable[[WindowItem, np.ndarray], None]
ResultFn = Callable[[FileResult], None]


class Enhancer:
    """Runs a FINALLY generator over files or arrays with bounded memory.

    Args:
        model: a generator (weight norm folded, eval mode) or None to load `model_name`.
        options: inference options.
    """

    def __init__(self, model: FinallyGenerator, options: EnhancerOptions | None = None) -> None:
        self.options = options or EnhancerOptions()
        self.device = pick_device(self.options.device)
        check_precision(self.options.precision, self.device)
        self.model = model.to(self.device).eval()
        self._forward = (
            torch.compile(self.model, dynamic=False) if self.options.compile else self.model
        )
        self.model_rate = model.config.output_sample_rate
        self.multiple = model.length_multiple
        chunk = int(round(self.options.chunk_seconds * MODEL_RATE_IN))
        self.chunk = max(self.multiple, round_up(chunk, self.multiple))
        self.overlap = min(
            int(round(self.options.overlap_seconds * MODEL_RATE_IN)), self.chunk // 2
        )
        self.edge = max(MIN_EDGE, self.overlap // 2)
        self._batch_size = self.options.batch_size
        self.workers = 1
        if self.device.type == "cpu" and not self.options.compile:
            self.workers = self.options.workers or torch.get_num_threads()

    @classmethod
    def from_pretrained(
        cls,
        spec: str,
        options: EnhancerOptions | None = None,
        revision: str | None = None,
        offline: bool = False,
    ) -> Enhancer:
        from finally_cli.models.hub import load_model

        return cls(load_model(spec, revision=revision, offline=offline), options)

    @property
    def out_rate(self) -> int:
        return self.options.sample_rate or DEFAULT_OUTPUT_RATE

    @property
    def batch_size(self) -> int:
        if self._batch_size is None:
            self._batch_size = self._auto_batch_size()
        return self._batch_size

    def _auto_batch_size(self) -> int:
        if self.device.type != "cuda":
            # On CPU one window per worker: a larger batch per forward only adds cache
            # pressure (batch 1 measured ~1.4x faster than batch 4 on the HiFi++ widths).
            return self.workers
        # Measure one chunk's activation memory, then fill ~70 % of what is free.
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        self.run_windows(np.zeros((1, self.chunk), dtype=np.float32))
        per_window = max(1, torch.cuda.max_memory_allocated(self.device) - before)
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(max(1, min(64, 0.7 * free // per_window)))

    # -- model -----------------------------------------------------------------------------
    def run_windows(self, windows: np.ndarray) -> np.ndarray:
        """Model on a batch of 16 kHz windows [batch, samples] → [batch, samples · factor]."""
        with torch.inference_mode(), autocast(self.options.precision, self.device):
            tensor = torch.from_numpy(windows)
            if self.device.type == "cuda":  # pinned pages let the copy overlap queued work
                tensor = tensor.pin_memory()
            tensor = tensor.to(self.device, non_blocking=True).unsqueeze(1)
            output = self._forward(tensor)
        return output.squeeze(1).float().cpu().numpy()

    @contextlib.contextmanager
    def _cpu_workers(self) -> Iterator[ThreadPoolExecutor]:
        """The window workers, with torch's intra-op threads at 1 while they run (restored
        after): one core per window instead of all cores on one window."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="finally-window") as pool:
                yield pool
        finally:
            torch.set_num_threads(threads)

    # -- public API ------------------------------------------------------------------------
    def enhance_array(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Enhance an in-memory signal [frames] or [frames, channels].

        Returns:
            float32 [frames_out, tracks] at `out_rate`, frames_out = round(frames · out_rate /
            sample_rate); tracks = 1 with channels="mix".
        """
        sink = ArraySink()
        source = ArraySource(audio, sample_rate)
        results = self._run([(source, lambda rate, ch: sink)])
        if results[0].status != "ok":
            raise FinallyError(results[0].error)
        assert sink.result is not None
        return sink.result

    def enhance_file(
        self, input_path: str | Path, output_path: str | Path, progress: ProgressFn | None = None
    ) -> FileResult:
        """Enhance one file into `output_path` (atomic; raises on failure)."""
        source = FileSource(input_path)
        output = Path(output_path)
        self._check_output(output)
        result = self._run(
            [(source, self._sink_factory(output))], progress=progress, raise_errors=True
        )[0]
        return result

    def enhance_files(
        self,
        pairs: Iterable[tuple[Path, Path]],
        progress: ProgressFn | None = None,
        on_result: ResultFn | None = None,
    ) -> list[FileResult]:
        """Enhance many files, packing windows of different files into shared batches.

        Bad inputs do not stop the run: they come back with status "failed".
        """
        results: list[FileResult] = []
        jobs: list[tuple[Source | FileResult, Callable | None]] = []
        for input_path, output_path in pairs:
            try:
                source = FileSource(input_path)
                self._check_output(output_path)
                jobs.append((source, self._sink_factory(output_path)))
            except FinallyError as err:
                failed = FileResult(str(input_path), str(output_path), "failed", error=str(err))
                jobs.append((failed, None))
        return self._run(jobs, progress=progress, on_result=on_result, collect=results)

    def _check_output(self, output: Path) -> None:
        from finally_cli.audio.io import check_output, output_format

        output_format(output, self.options.subtype)
        check_output(output, self.options.overwrite)

    def _sink_factory(self, output: Path) -> Callable:
        def make(rate: int, channels: int):  # noqa: ANN202
            return file_sink(output, rate, channels, self.options.subtype, self.options.overwrite)

        make.output = str(output)  # type: ignore[attr-defined]
        return make

    # -- scheduler -------------------------------------------------------------------------
    def _run(
        self,
        jobs: list,
        progress: ProgressFn | None = None,
        on_result: ResultFn | None = None,
        collect: list[FileResult] | None = None,
        raise_errors: bool = False,
    ) -> list[FileResult]:
        results: list[FileResult] = [] if collect is None else collect
        workdir = Path(tempfile.mkdtemp(prefix="finally-"))
        open_jobs: list[FileJob] = []

        def report(result: FileResult) -> None:
            results.append(result)
            if on_result is not None:
                on_result(result)

        def result_of(job: FileJob, error: str = "") -> FileResult:
            output = getattr(job.make_sink, "output", "<array>")
            status = "failed" if error else "ok"
            return FileResult(
                job.source.name, output, status, job.input_seconds, job.seconds, error
            )

        def abandon(job: FileJob, err: FinallyError) -> None:
            job.fail()
            open_jobs.remove(job)
            if raise_errors:
                raise err
            report(result_of(job, str(err)))

        def finish(job: FileJob) -> None:
            job.finish()
            open_jobs.remove(job)
            report(result_of(job))

        def hand_back(item: WindowItem, output: np.ndarray) -> None:
            """Give one window's output to its job; finish or abandon the job as it ends."""
            job, window, track = item
            if job.failed:
                return
            try:
                done = job.consume(window, track, output[: job.plan.lengths[window] * job.factor])
                if progress is not None and done:
                    progress(done)
                if job.adder.done and window == job.plan.count - 1 and track == job.tracks - 1:
                    finish(job)
            except FinallyError as err:
                abandon(job, err)

        def items() -> Iterator[WindowItem]:
            for source, make_sink in jobs:
                if isinstance(source, FileResult):
                    report(source)
                    continue
                job = FileJob(
                    source,
                    make_sink,
                    self.options.channels,
                    self.out_rate,
                    self.model_rate,
                    self.options.mix,
                    self.chunk,
                    self.overlap,
                    self.edge,
                    self.multiple,
                    workdir,
                )
                open_jobs.append(job)
                try:
                    job.prepare()
                except FinallyError as err:
                    abandon(job, err)
                    continue
                for window, track in job.items():
                    yield job, window, track

        try:
            if self.device.type == "cpu":
                self._run_pipelined(items(), hand_back)
            else:
                stream = items()
                exhausted = False
                while not exhausted:
                    batch = []
                    while len(batch) < self.batch_size:
                        item = next(stream, None)
                        if item is None:
                            exhausted = True
                            break
                        if not item[0].failed:
                            batch.append(item)
                    if batch:
                        self._run_batch(batch, hand_back)
        finally:
            for job in open_jobs:
                if not job.finished:
                    job.fail()
            shutil.rmtree(workdir, ignore_errors=True)
        return results

    def _run_pipelined(self, stream: Iterator[WindowItem], hand_back: HandBackFn) -> None:
        """CPU: windows run on the workers, each at its own length (no padding); outputs are
        handed back in order while the next windows run. One window more than the workers
        (or `batch_size`) is kept in flight so no worker waits on the main thread's I/O."""

        def run_one(audio: np.ndarray) -> np.ndarray:
            return self.run_windows(audio[None])[0]

        if self.workers == 1:
            for item in stream:
                if not item[0].failed:
                    hand_back(item, run_one(self._read(item)))
            return
        in_flight: collections.deque = collections.deque()
        with self._cpu_workers() as pool:
            for item in stream:
                if not item[0].failed:
                    in_flight.append((item, pool.submit(run_one, self._read(item))))
                if len(in_flight) > max(self.batch_size, self.workers):
                    done, future = in_flight.popleft()
                    hand_back(done, future.result())
            while in_flight:
                done, future = in_flight.popleft()
                hand_back(done, future.result())

    @staticmethod
    def _read(item: WindowItem) -> np.ndarray:
        job, window, track = item
        return job.read_window(window, track, job.plan.lengths[window])

    def _run_batch(self, batch: list[WindowItem], hand_back: HandBackFn) -> None:
        """Run one padded batch of (job, window, track) items and hand each output back."""
        length = max(job.plan.lengths[window] for job, window, _ in batch)
        windows = [job.read_window(window, track, length) for job, window, track in batch]
        outputs = self.run_windows(np.stack(windows))
        for item, output in zip(batch, outputs):
            hand_back(item, output)
