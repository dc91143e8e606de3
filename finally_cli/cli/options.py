"""Shared Typer option aliases and the error-to-exit-code wrapper."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from finally_cli.errors import FinallyError

DEFAULT_MODEL = "finally-small"

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Name in weights/, a model folder, or a Hub id owner/name\\[@revision].",
    ),
]
RevisionOpt = Annotated[str | None, typer.Option(help="Hub revision (branch, tag or commit).")]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Use only the local Hub cache.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]
PrecisionOpt = Annotated[str, typer.Option(help="fp32, bf16 or fp16 (GPU only).")]
BatchSizeOpt = Annotated[str, typer.Option(help="Windows per forward pass: auto or N.")]
WorkersOpt = Annotated[
    str,
    typer.Option(
        help="CPU: windows enhanced at once, one core each: auto (torch's thread count) or N."
    ),
]
ChunkOpt = Annotated[float, typer.Option(help="Window length in seconds.")]
OverlapOpt = Annotated[float, typer.Option(help="Cross-faded overlap between windows, seconds.")]
SampleRateOpt = Annotated[int | None, typer.Option(help="Output sample rate \\[default: 48000].")]
ChannelsOpt = Annotated[
    str, typer.Option(help="mix: one mono output; each: enhance every channel.")
]
MixOpt = Annotated[float, typer.Option(help="Share of the enhanced signal; 0 = input only.")]
SubtypeOpt = Annotated[
    str | None,
    typer.Option(
        help="Output sample format, e.g. PCM_16, PCM_24, FLOAT \\[default: from extension]."
    ),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs.")]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile", help="torch.compile the generator (fastest on GPU; first windows compile)."
    ),
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print results as JSON.")]

STATE = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> None:
    """Print one line on stderr and exit with `code`."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn library errors into one stderr line and their exit code (tracebacks with --debug)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except FinallyError as err:
            if STATE["debug"]:
                raise
            fail(str(err), err.exit_code)
        except KeyboardInterrupt:
            typer.echo("interrupted; no partial output was kept", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def parse_batch_size(value: str, option: str = "--batch-size") -> int | None:
    """`auto` → None, else a positive integer (ConfigError naming `option` otherwise)."""
    from finally_cli.errors import ConfigError

    if value == "auto":
        return None
    try:
        size = int(value)
    except ValueError:
        raise ConfigError(f"{option} {value!r}: expected auto or a positive integer") from None
    if size < 1:
        raise ConfigError(f"{option} {value}: expected auto or a positive integer")
    return size
