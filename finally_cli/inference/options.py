"""What a run of the engine is asked to do (`EnhancerOptions`) and what it reports per file."""

from __future__ import annotations

from dataclasses import dataclass

from finally_cli.errors import ConfigError

CHANNEL_MODES = ("mix", "each")
DEFAULT_OUTPUT_RATE = 48000  # FINALLY's output rate; 16 kHz models are resampled to it


@dataclass(frozen=True)
class EnhancerOptions:
    """How to run a model over audio (the defaults of every CLI command are these).

    Attributes:
        chunk_seconds: window length (rounded up to the model's length multiple).
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
            window of each length pays the compilation). GPU only: refused on CPU, where
            compiling costs minutes (docs/inference.md).
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

    @property
    def out_rate(self) -> int:
        return self.sample_rate or DEFAULT_OUTPUT_RATE


@dataclass
class FileResult:
    """Outcome of one input file."""

    input: str
    output: str
    status: str  # "ok", "failed" or "skipped"
    duration: float = 0.0  # seconds of input audio
    seconds: float = 0.0  # wall-clock seconds spent
    error: str = ""
