"""The `finally` command: joins the per-command modules."""

from __future__ import annotations

import warnings
from typing import Annotated

import typer

from finally_cli import __version__
from finally_cli.cli import batch, bench, enhance, eval, models, probe, train
from finally_cli.cli.command import App
from finally_cli.cli.options import STATE

app = App(
    name="finally",
    help="Restore speech recordings to 48 kHz studio quality with the FINALLY model.",
    no_args_is_help=True,
)
app.command("enhance")(enhance.enhance)
app.command("batch")(batch.batch)
app.command("bench")(bench.bench)
app.command("eval")(eval.evaluate)
app.command("probe-features")(probe.probe_features)
app.add_typer(models.app, name="models")
app.add_typer(train.app, name="train")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"finally-cli {__version__}")
        raise typer.Exit()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Library warnings (`FinallyWarning`) as one `warning:` line on stderr; others as usual."""
    from finally_cli.errors import FinallyWarning

    if issubclass(category, FinallyWarning):
        typer.echo(f"warning: {message}", err=True)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    STATE["debug"] = debug
    warnings.showwarning = _show_warning


def main() -> None:
    app()
