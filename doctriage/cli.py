"""The `doctriage` command line. Each sub-command lives in doctriage/commands/<name>.py and
exposes `register(app)`; this module assembles them and decides how help and usage errors read.

Start-up cost: `doctriage --help` imports every command module, so those modules import only the
standard library, typer and doctriage.commands._common at top level; torch, transformers, Celery,
SQLAlchemy, boto3, matplotlib and the workers/classifier/pipelines modules are imported inside
the command function that needs them (tests/test_cli_startup.py checks `--help` and an instant
error load none of them)."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from doctriage import cli_text

# typer vendors its own click: find its UsageError through a public class, not a private path.
_UsageError = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

cli_text.install()

app = typer.Typer(
    help="doctriage: classify document pages with an early-exit LayoutLMv3, in batch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Plain help text, as click prints it (sub-groups inherit it): rich's boxes cost every
    # --help ~0.15 s of imports (rich.markdown, markdown_it), half of its start-up.
    rich_markup_mode=None,
)

# One module per command group; the order is the order in `doctriage --help`.
COMMAND_MODULES = [
    "pages",
    "synth",
    "audit",
    "train",
    "evaluate",
    "thresholds",
    "run",
    "submit",
    "worker",
    "status",
    "retry",
    "watch",
    "backlog",
    "review",
]


@app.callback()
def _root() -> None:
    """Keep `doctriage` a command group; configure logging (JSON lines when DOCTRIAGE_LOG_JSON)."""
    if not any(name.upper() == "DOCTRIAGE_LOG_JSON" for name in os.environ):
        return  # the default (settings read names in any case); `CMD --help` passes here too
    from doctriage.settings import get_settings

    settings = get_settings()
    if settings.log_json:
        from doctriage.logging_setup import configure_from_settings

        configure_from_settings(settings)


def _modules_to_load(argv: list[str]) -> list[str]:
    """Each module is named after the command it registers; only the one asked for is loaded
    (each is cheap to import, see the module docstring). `--help` and typos load them all."""
    first = next((a for a in argv[1:] if not a.startswith("-")), None)
    return [first] if first in COMMAND_MODULES else COMMAND_MODULES


for _name in _modules_to_load(sys.argv):
    importlib.import_module(f"doctriage.commands.{_name}").register(app)


def main() -> None:
    """Entry point: a usage error is one line on stderr and exit status 2, never a traceback."""
    try:
        code = app(standalone_mode=False)
    except _UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:
            print(exc.ctx.get_help(), file=sys.stderr)
            sys.exit(2)
        print(f"error: {cli_text.usage_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        # A setting that cannot be used (a bad DOCTRIAGE_DATABASE_URL, ...) raised while a
        # command starts: one line and status 2 for every command, whether or not it catches
        # WiringError itself. (Looked up in sys.modules: `doctriage pages` never imports wiring.)
        wiring = sys.modules.get("doctriage.wiring")
        if wiring is not None and isinstance(exc, wiring.WiringError):
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        bad = cli_text.bad_settings_line(exc)  # DOCTRIAGE_MAX_BATCH=abc and the like
        if bad is None:
            raise
        print(f"error: {bad}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # `python -m doctriage.cli ...`
    main()
