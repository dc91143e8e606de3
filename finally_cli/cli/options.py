"""Shared Typer option aliases and the error-to-exit-code wrapper."""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from finally_cli.errors import FinallyError
from finally_cli.inference.options import DEFAULT_OUTPUT_RATE

DEFAULT_MODEL = "finally-small"

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        metavar="NAME|FOLDER|HUB_ID",
        help="Name in weights/, a model folder, or a Hub id owner/name\\[@revision].",
    ),
]
RevisionOpt = Annotated[
    str | None, typer.Option(metavar="REV", help="Hub revision (branch, tag or commit).")
]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="Use only the local Hub cache.")]
DeviceOpt = Annotated[str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps.")]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet", "-q", help="No progress bars or status lines; errors still print on stderr."
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print results as JSON.")]
WorkersOpt = Annotated[
    str,
    typer.Option(
        metavar="auto|N",
        help="CPU: windows enhanced at once, one core each: auto (torch's thread count) or N.",
    ),
]


def _engine_parameters() -> dict[str, inspect.Parameter]:
    """The engine options every enhancing command shares, declared once.

    Defaults come from `EnhancerOptions`; `auto` stands for its None (picked per device).
    Vocabulary: a *window* is what the model runs on at once (`--chunk-seconds` long),
    *overlap* is what neighbouring windows share; I/O *buffers* are invisible here.
    """
    from finally_cli.inference.options import EnhancerOptions

    defaults = EnhancerOptions()

    def option(name: str, kind: Any, default: Any, *decls: str, **info: Any) -> inspect.Parameter:
        annotation = Annotated[kind, typer.Option(*decls, **info)]
        return inspect.Parameter(name, KEYWORD, default=default, annotation=annotation)

    params = [
        option("device", str, defaults.device, metavar="DEVICE",
               help="auto, cpu, cuda, cuda:N or mps."),
        option("precision", str, defaults.precision, metavar="fp32|bf16|fp16",
               help="Arithmetic precision; bf16/fp16 on GPU."),
        option("batch_size", str, "auto", metavar="auto|N",
               help="Windows per forward pass (auto: GPU fills 70 % of free memory; "
               "CPU 2 per worker for the recurrent finally-small, else 1)."),
        option("workers", WorkersOpt.__origin__, "auto", *WorkersOpt.__metadata__[0].param_decls,
               metavar="auto|N", help=WorkersOpt.__metadata__[0].help),
        option("chunk_seconds", float, defaults.chunk_seconds, metavar="SECONDS",
               help="Window length (rounded up to the model's length multiple)."),
        option("overlap_seconds", float, defaults.overlap_seconds, metavar="SECONDS",
               help="Cross-faded overlap of neighbouring windows."),
        option("compile_model", bool, defaults.compile, "--compile",
               help="torch.compile the generator (GPU only: on CPU compiling costs minutes; "
               "a warning says so)."),
        option("sample_rate", int, DEFAULT_OUTPUT_RATE, metavar="HZ", help="Output sample rate."),
        option("channels", str, defaults.channels, metavar="mix|each",
               help="mix: one mono output; each: enhance every channel."),
        option("mix", float, defaults.mix, metavar="0..1",
               help="Share of the enhanced signal; 0 = input only."),
        option("subtype", str | None, defaults.subtype, metavar="SUBTYPE",
               help="Output sample format, e.g. PCM_16, PCM_24, FLOAT \\[default: from the "
               "extension]."),
        option("overwrite", bool, defaults.overwrite, "--overwrite",
               help="Replace existing outputs."),
    ]  # fmt: skip
    return {p.name: p for p in params}


KEYWORD = inspect.Parameter.KEYWORD_ONLY
ENGINE_FIELDS = {"compile_model": "compile"}  # CLI parameter → EnhancerOptions field


def engine_options(*names: str) -> Callable[[F], F]:
    """Give a command the shared engine options `names` (all when none are named).

    The command declares a parameter `options: EnhancerOptions`; the decorator adds the
    options to its signature (so Typer shows them), parses them (`auto` → None) and
    passes the `EnhancerOptions` they make.
    """

    def decorate(func: F) -> F:
        from finally_cli.inference.options import EnhancerOptions

        shared = _engine_parameters()
        chosen = [shared[n] for n in (names or shared)]
        signature = inspect.signature(func)
        hints = typing.get_type_hints(
            func, localns={"EnhancerOptions": EnhancerOptions}, include_extras=True
        )
        own = [
            p.replace(annotation=hints[p.name])
            for p in signature.parameters.values()
            if p.name != "options"
        ]
        flags = [p for p in own if p.name == "quiet"]
        own = [p for p in own if p.name != "quiet"]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from finally_cli.inference.options import DEFAULT_OUTPUT_RATE, EnhancerOptions

            values = {p.name: kwargs.pop(p.name) for p in chosen}
            for name in ("batch_size", "workers"):
                if name in values:
                    values[name] = parse_count(values[name], "--" + name.replace("_", "-"))
            if values.get("sample_rate") == DEFAULT_OUTPUT_RATE:
                values["sample_rate"] = None
            fields = {ENGINE_FIELDS.get(k, k): v for k, v in values.items()}
            return func(*args, options=EnhancerOptions(**fields), **kwargs)

        parameters = [p.replace(kind=KEYWORD) for p in own + chosen + flags]
        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=parameters, return_annotation=None
        )
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        del wrapper.__wrapped__  # Typer must read the new signature, not the wrapped one
        return wrapper  # type: ignore[return-value]

    return decorate


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
        from finally_cli.cli.process import Terminated, command_process, single_cpu_launch

        warning = single_cpu_launch()
        if warning:
            typer.echo(warning, err=True)
        try:
            with command_process():
                return func(*args, **kwargs)
        except FinallyError as err:
            if STATE["debug"]:
                raise
            fail(str(err), err.exit_code)
        except Terminated:
            typer.echo("terminated; no partial output was kept", err=True)
            raise typer.Exit(143) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; no partial output was kept", err=True)
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def parse_count(value: str, option: str) -> int | None:
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
