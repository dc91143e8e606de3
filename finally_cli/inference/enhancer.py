"""The library entry point: `Enhancer` schedules windows of many files through one model.

It batches (GPU) or pipelines (CPU) `WindowTask`s and hands each output back to its
`FileJob`; everything about one file — staging, overlap-add, writing — is the job's.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from finally_cli.audio.chunking import WindowSpec
from finally_cli.audio.files import remove_stale_staging, staging_prefix
from finally_cli.audio.io import OutputFile
from finally_cli.audio.level import PEAK_LIMIT
from finally_cli.errors import FinallyError, FinallyWarning
from finally_cli.inference.device import autocast, check_precision, pick_device
from finally_cli.inference.job import FileJob, WindowTask
from finally_cli.inference.options import EnhancerOptions, FileResult
from finally_cli.inference.sources import ArraySink, ArraySource, FileOutput, FileSource
from finally_cli.models.generator import FinallyGenerator

__all__ = ["Enhancer", "EnhancerOptions", "FileResult"]

# Measured (issue 17): a 30 s file took 173 s on first use with --compile on 2 CPU cores,
# 80x slower than without; compilation pays off only on GPUs.
COMPILE_ON_CPU = (
    "--compile on CPU: compiling takes minutes and the small convolutions gain nothing "
    "(measured on 2 cores: a 30 s file took 173 s, 80x longer than without); use it on a GPU"
)

ProgressFn = Callable[[float], None]
ResultFn = Callable[[FileResult], None]


class Enhancer:
    """Runs a FINALLY generator over files or arrays with bounded memory.

    Args:
        model: a generator (weight norm folded, eval mode).
        options: inference options.
    """

    def __init__(self, model: FinallyGenerator, options: EnhancerOptions | None = None) -> None:
        self.options = options or EnhancerOptions()
        self.device = pick_device(self.options.device)
        check_precision(self.options.precision, self.device)
        if self.options.compile and self.device.type == "cpu":
            warnings.warn(COMPILE_ON_CPU, FinallyWarning, stacklevel=2)
        self.model = model.to(self.device).eval()
        self._forward = (
            torch.compile(self.model, dynamic=False) if self.options.compile else self.model
        )
        self.spec = WindowSpec.for_model(
            model, self.options.chunk_seconds, self.options.overlap_seconds
        )
        # The gained input's peak ceiling (`LevelMeter.gain`): the model's own, or the
        # tanh-safe one for a model that does not say.
        self.peak_limit: float | None = getattr(model, "peak_limit", PEAK_LIMIT)
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
        return self.options.out_rate

    @property
    def batch_size(self) -> int:
        if self._batch_size is None:
            self._batch_size = self._auto_batch_size()
        return self._batch_size

    def _auto_batch_size(self) -> int:
        if self.device.type != "cuda":
            return self._cpu_batch_size()
        # Measure one window's activation memory, then fill ~70 % of what is free.
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        before = torch.cuda.memory_allocated(self.device)
        self.run_windows(np.zeros((1, self.spec.window), dtype=np.float32))
        per_window = max(1, torch.cuda.max_memory_allocated(self.device) - before)
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(max(1, min(64, 0.7 * free // per_window)))

    def _cpu_batch_size(self) -> int:
        """Windows per forward on each CPU worker. The recurrent restorer steps its GRUs
        frame by frame, and at one window per forward each step is a matrix-vector product
        that overhead dominates: two windows per forward ran 1.48× the windows per second
        of one on one thread (finally-small 0.15, 10 s windows; four 1.71×). The
        convolutional HiFi++ chain only gains cache pressure from a batch (one window
        measured ~1.4× faster than four), so it stays at one."""
        return 2 if getattr(self.model, "spectral_restorer", None) is not None else 1

    # -- model -----------------------------------------------------------------------------
    def run_windows(self, windows: np.ndarray) -> np.ndarray:
        """Model on a batch of input-rate windows [batch, samples] → [batch, samples · factor]."""
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
        self._run([(ArraySource(audio, sample_rate), sink)], raise_errors=True)
        assert sink.result is not None
        return sink.result

    def check_output(self, output_path: str | Path | OutputFile) -> OutputFile:
        """The checked output for this run's subtype and overwrite options (`OutputFile.check`)."""
        if isinstance(output_path, OutputFile):
            return output_path
        return OutputFile.check(output_path, self.options.subtype, self.options.overwrite)

    def enhance_file(
        self,
        input_path: str | Path,
        output_path: str | Path | OutputFile,
        progress: ProgressFn | None = None,
    ) -> FileResult:
        """Enhance one file into `output_path` (atomic; raises on failure).

        `output_path` may be an `OutputFile` already checked (by the CLI, before the model
        loaded); a plain path is checked here.
        """
        source = FileSource(input_path)
        output = FileOutput(self.check_output(output_path))
        return self._run([(source, output)], progress=progress, raise_errors=True)[0]

    def enhance_files(
        self,
        pairs: Iterable[tuple[Path, Path]],
        progress: ProgressFn | None = None,
        on_result: ResultFn | None = None,
    ) -> list[FileResult]:
        """Enhance many files, packing windows of different files into shared batches.

        Bad inputs do not stop the run: they come back with status "failed".
        """
        jobs: list[tuple] = []
        for input_path, output_path in pairs:
            try:
                jobs.append((FileSource(input_path), FileOutput(self.check_output(output_path))))
            except FinallyError as err:
                jobs.append(
                    (FileResult(str(input_path), str(output_path), "failed", error=str(err)),)
                )
        return self._run(jobs, progress=progress, on_result=on_result)

    # -- scheduler -------------------------------------------------------------------------
    def _run(
        self,
        jobs: list[tuple],
        progress: ProgressFn | None = None,
        on_result: ResultFn | None = None,
        raise_errors: bool = False,
    ) -> list[FileResult]:
        """Run every job's windows through the model; one result per job, in order of ending.

        Args:
            jobs: (source, output) pairs, or (FileResult,) for inputs already refused.
            raise_errors: re-raise a job's error instead of reporting it (single file).
        """
        results: list[FileResult] = []
        remove_stale_staging()  # what killed runs (SIGKILL, power loss) left behind
        workdir = Path(tempfile.mkdtemp(prefix=staging_prefix()))
        open_jobs: list[FileJob] = []

        def report(result: FileResult) -> None:
            results.append(result)
            if on_result is not None:
                on_result(result)

        def end(job: FileJob, err: FinallyError | None = None) -> None:
            open_jobs.remove(job)
            if err is None:
                try:
                    report(job.finish())
                    return
                except FinallyError as error:
                    err = error
            result = job.fail(err)
            if raise_errors:
                raise err
            report(result)

        def hand_back(task: WindowTask, output: np.ndarray) -> None:
            if task.job.failed:
                return
            try:
                done = task.hand_back(output)
            except FinallyError as err:
                end(task.job, err)
                return
            if progress is not None and done:
                progress(done)
            if task.job.complete:
                end(task.job)

        def tasks() -> Iterator[WindowTask]:
            for entry in jobs:
                if isinstance(entry[0], FileResult):
                    report(entry[0])
                    continue
                job = FileJob(entry[0], entry[1], self.spec, self.options, workdir, self.peak_limit)
                open_jobs.append(job)
                try:
                    job.prepare()
                except FinallyError as err:
                    end(job, err)
                    continue
                yield from job.tasks()

        try:
            if self.device.type == "cpu":
                self._run_pipelined(tasks(), hand_back)
            else:
                self._run_batched(tasks(), hand_back)
        finally:
            for job in open_jobs:
                job.fail()
            shutil.rmtree(workdir, ignore_errors=True)
        return results

    def _run_batched(
        self, stream: Iterator[WindowTask], hand_back: Callable[[WindowTask, np.ndarray], None]
    ) -> None:
        """GPU: windows of any jobs in batches of `batch_size`, padded to the longest (the
        padding reads more of the mirrored tail, and the job cuts it off)."""
        while True:
            batch = []
            for task in stream:
                if not task.job.failed:
                    batch.append(task)
                if len(batch) == self.batch_size:
                    break
            if not batch:
                return
            length = max(task.length for task in batch)
            outputs = self.run_windows(np.stack([task.read(length) for task in batch]))
            for task, output in zip(batch, outputs):
                hand_back(task, output)

    def _run_pipelined(
        self, stream: Iterator[WindowTask], hand_back: Callable[[WindowTask, np.ndarray], None]
    ) -> None:
        """CPU: windows run on the workers, `batch_size` at a time per forward; a batch only
        holds windows of one length (no padding, so every window's output is what it would be
        alone). Windows are read a round ahead (`workers` · `batch_size` of them) and split
        over the workers: the last, short round is spread so that no worker idles while
        another runs two windows. Outputs are handed back in order while the next round runs."""
        per_forward = self.batch_size

        def run_group(audio: list[np.ndarray]) -> np.ndarray:
            return self.run_windows(np.stack(audio))

        if self.workers == 1 and per_forward == 1:
            for task in stream:
                if not task.job.failed:
                    hand_back(task, run_group([task.read()])[0])
            return
        in_flight: collections.deque = collections.deque()

        def drain(keep: int) -> None:
            while len(in_flight) > keep:
                group, future = in_flight.popleft()
                for task, output in zip(group, future.result()):
                    hand_back(task, output)

        with self._cpu_workers() as pool:

            def submit(round_: list[WindowTask]) -> None:
                size = min(per_forward, -(-len(round_) // self.workers))
                for group in _groups_of_one_length(round_, size):
                    live = [task for task in group if not task.job.failed]
                    if live:
                        in_flight.append(
                            (live, pool.submit(run_group, [task.read() for task in live]))
                        )

            pending: list[WindowTask] = []
            for task in stream:
                if task.job.failed:
                    continue
                pending.append(task)
                if len(pending) == self.workers * per_forward:
                    submit(pending)
                    pending = []
                    drain(self.workers)  # one round runs while the next is read
            submit(pending)
            drain(0)


def _groups_of_one_length(tasks: list[WindowTask], size: int) -> Iterator[list[WindowTask]]:
    """Consecutive runs of `tasks` of equal length, cut into groups of at most `size`."""
    group: list[WindowTask] = []
    for task in tasks:
        if group and (len(group) == size or task.length != group[0].length):
            yield group
            group = []
        group.append(task)
    if group:
        yield group
