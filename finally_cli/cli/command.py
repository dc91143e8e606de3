"""Help text conventions for every command: flags without a value type, plain usage lines."""

from __future__ import annotations

from typing import Any, get_args, get_origin

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


def _element_name(annotation: Any) -> str:
    """`list[Path] | None` → "PATH": the metavar of one repeated value."""
    for arg in (annotation, *get_args(annotation)):
        if get_origin(arg) is list:
            (element,) = get_args(arg)
            return {"str": "TEXT"}.get(element.__name__, element.__name__.upper())
    return "VALUE"


def tidy_params(params: list) -> None:
    """Flags show no `<bool>` (they take no value: `--overwrite`, never `--overwrite true`);
    repeatable options show `NAME` instead of `<list[str]>`."""
    for param in params:
        repeated = getattr(param, "multiple", False) or param.nargs != 1
        if isinstance(param, TyperArgument) and repeated:
            descriptor = getattr(param, "type_descriptor", None)
            shown = f"<{_element_name(getattr(descriptor, 'annotation', None)).lower()}>..."
            param.display_type_rich = lambda ctx, shown=shown: shown  # type column, not usage
            continue
        if param.metavar is not None:
            continue
        if isinstance(param, TyperOption) and param.is_flag:
            param.metavar = ""
        elif repeated:
            descriptor = getattr(param, "type_descriptor", None)
            param.metavar = _element_name(getattr(descriptor, "annotation", None))


def plain_usage(pieces: list[str]) -> list[str]:
    """`{IN}` → `IN` (required arguments need no braces; optional ones keep [..])."""
    return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


class _Conventions:
    """Mixed into Typer's command and group classes."""

    def get_params(self, ctx: Any) -> list:
        params = super().get_params(ctx)  # type: ignore[misc]
        tidy_params(params)
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return plain_usage(super().collect_usage_pieces(ctx))  # type: ignore[misc]


class Command(_Conventions, TyperCommand):
    pass


class Group(_Conventions, TyperGroup):
    pass


class App(typer.Typer):
    """A Typer app whose commands and groups follow the conventions above."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", Group)
        kwargs.setdefault("pretty_exceptions_enable", False)
        kwargs.setdefault("add_completion", False)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)
