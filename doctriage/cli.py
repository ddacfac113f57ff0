"""The `doctriage` command line. Each sub-command lives in doctriage/commands/<name>.py and
exposes `register(app)`; this module only assembles them."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    help="doctriage: classify document pages with an early-exit LayoutLMv3, in batch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# One module per command group; the order is the order in `doctriage --help`.
COMMAND_MODULES = [
    "pages",
]



@app.callback()
def _root() -> None:
    """Keep `doctriage` a command group even while only one sub-command is registered."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"doctriage.commands.{_name}").register(app)


def main() -> None:
    app()
