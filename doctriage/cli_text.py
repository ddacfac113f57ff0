"""How the command line reads: help text (usage lines, type names) and one-line messages for
values typer rejects. `install()` applies the display overrides once, before commands register.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any, get_args

from typer.core import TyperArgument, TyperGroup, TyperOption

# typer 0.29 shows Python types (`--json <bool>`, `PATHS <list[str]>`) and a required argument
# as `{path}` in the usage line. The overrides below are the one place that decides the wording:
# `--dpi INTEGER`, a bare `--json`, `--ocr auto|ocr|text`, `doctriage pages [OPTIONS] PATH`, and
# each command's whole summary in a group's list. They replace display methods only (parsing is
# typer's); a typer release that renames them fails tests/test_cli_startup.py, which reads every
# command's --help. Per-option `metavar=` still wins where a declaration gives one.

_TYPE_NAMES: dict[Any, str] = {
    int: "INTEGER", float: "FLOAT", str: "TEXT", Path: "PATH", datetime: "DATETIME", date: "DATE",
}


def _choice_names(param: Any) -> list[str]:
    return [str(c.value if isinstance(c, Enum) else c) for c in param.type_descriptor.choices]


def _type_name(param: Any) -> str | None:
    """INTEGER, FLOAT, TEXT, PATH, auto|ocr|text; TEXT... for a list; None for a flag."""
    desc = param.type_descriptor
    if getattr(param, "is_flag", False) or desc.annotation is bool:
        return None
    if desc.is_choice:
        return "|".join(_choice_names(param))
    annotation = get_args(desc.annotation)[0] if desc.is_list else desc.annotation
    name = _TYPE_NAMES.get(annotation) or getattr(annotation, "__name__", "VALUE").upper()
    return f"{name}..." if desc.is_list else name


def _option_type(self: TyperOption, ctx: Any) -> str | None:
    return self.metavar if self.metavar is not None else _type_name(self)


def _argument_name(self: TyperArgument) -> str:
    return self.metavar or (self.name or "ARG").upper()


def _argument_usage(self: TyperArgument, ctx: Any) -> list[str]:
    name = self.display_name_raw + ("..." if self.nargs != 1 else "")
    return [name if self.required else f"[{name}]"]




def _format_commands(self: TyperGroup, ctx: Any, formatter: Any) -> None:
    """Each command with its whole first help paragraph, wrapped (click cuts it at ~45
    characters, mid-sentence)."""
    rows = []
    for name in self.list_commands(ctx):
        command = self.get_command(ctx, name)
        if command is not None and not command.hidden:
            text = command.short_help or (command.help or "").split("\n\n")[0]
            rows.append((name, " ".join(text.split())))
    if rows:
        with formatter.section("Commands"):
            formatter.write_dl(rows)




def _param_label(param: Any) -> str:
    """`--dpi` for an option (its longest spelling), `PAGE_ID` for an argument."""
    if isinstance(param, TyperArgument):
        return param.display_name_raw
    return max(param.opts, key=len) if param.opts else str(param.name)


def _bad_value(exc: Any) -> str | None:
    """typer checks values with pydantic and passes pydantic's sentence on ("Input should be a
    valid integer, unable to parse string as an integer", "Value error, 'x' is not one of ...").
    Say it our way instead: `--dpi: 'abc' is not an integer`. None: not a value typer rejected."""
    param, cause = getattr(exc, "param", None), exc.__cause__
    errors = cause.errors() if hasattr(cause, "errors") else None
    if param is None or not errors:
        return None
    kind, value, limits = errors[0]["type"], errors[0].get("input"), errors[0].get("ctx") or {}
    if param.type_descriptor.is_choice:
        problem = f"{value!r} is not one of {', '.join(_choice_names(param))}"
    elif kind.startswith("int_"):
        problem = f"{value!r} is not an integer"
    elif kind.startswith(("float_", "finite_")):
        problem = f"{value!r} is not a number"
    elif kind.startswith("bool_"):
        problem = f"{value!r} is not true or false"
    elif kind.startswith(("datetime_", "date_")):
        problem = f"{value!r} is not an ISO date or date-time"
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        words = {"greater_than_equal": ("at least", "ge"), "greater_than": ("more than", "gt"),
                 "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}
        phrase, key = words[kind]  # as the commands' own range checks word it
        return f"{_param_label(param)} must be {phrase} {limits.get(key)}, got {value}"
    else:
        problem = f"{value!r} is not a valid {(_type_name(param) or 'value').lower()}"
    return f"{_param_label(param)}: {problem}"


def usage_line(exc: Any) -> str:
    """A parse error worded like the commands' own (`fail`): one line, no command path (the
    user just typed it), a lower-case start and no full stop: `--dpi: 'abc' is not an integer`,
    `missing argument 'PATH'`, `no such option: --jsn (Possible options: --json)`."""
    text = " ".join((_bad_value(exc) or exc.format_message()).split())
    if text[:1].isupper() and text[1:2].islower():  # "Missing ...", not "PAGE_ID: ..."
        text = text[0].lower() + text[1:]
    return text.removesuffix(".")



def install() -> None:
    """Apply the display overrides (idempotent)."""
    TyperOption.display_type_rich = _option_type  # type: ignore[method-assign]
    TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]
    TyperArgument.display_name_raw = property(_argument_name)  # type: ignore[assignment,method-assign]
    TyperArgument.get_usage_pieces = _argument_usage  # type: ignore[method-assign]
    TyperGroup.format_commands = _format_commands  # type: ignore[method-assign]


def bad_settings_line(exc: BaseException) -> str | None:
    """One line for environment settings pydantic refused (`Settings` only), naming each
    variable, the value given and why: `DOCTRIAGE_MAX_BATCH='abc': input should be a valid
    integer, ...`. None for any other error."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError) or exc.title != "Settings":
        return None
    parts = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(part) for part in err.get("loc", ())) or "?"
        message = str(err.get("msg", "invalid")).splitlines()[0]
        given = f"={err['input']!r}" if isinstance(err.get("input"), str | int | float) else ""
        parts.append(f"DOCTRIAGE_{field.upper()}{given}: {message[:1].lower()}{message[1:]}")
    return "bad setting: " + "; ".join(parts)
