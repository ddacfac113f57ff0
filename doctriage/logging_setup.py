"""Logging for every doctriage process: plain lines for a person at a terminal, or one JSON object
per line (`DOCTRIAGE_LOG_JSON=true`) for a log shipper, each carrying the document/page/task ids
of the work it is about (workers.log_context).

Credentials never reach the output: a redaction step rewrites every formatted line (message,
arguments and traceback alike), masking URL passwords (`scheme://user:***@host`), AWS access key
ids, secret-looking `key=value` pairs, and the literal values of the secret environment
variables this process was given (AWS_SECRET_ACCESS_KEY, passwords in DOCTRIAGE_*_URL, ...).
The masking itself lives in workers.redaction, shared with the error text the workers store.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from workers import log_context
from workers.redaction import MASK, SECRET_ENV, env_secrets, redact

__all__ = ["MASK", "SECRET_ENV", "JsonFormatter", "TextFormatter", "configure_from_settings",
           "configure_logging", "env_secrets", "redact"]


class _Redacting(logging.Formatter):
    def __init__(self, inner: logging.Formatter, secrets: Iterable[str]) -> None:
        super().__init__()
        self.inner = inner
        self.secrets = list(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record), self.secrets)


# LogRecord attributes that are not "extra" fields passed by the caller.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO), level, logger, message, the ids in the
    log context, any `extra=` fields, and the traceback as a string."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        out.update(log_context.current())
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in out:
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time level logger [ids] message` for people."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = log_context.current()
        if not ids:
            return line
        tag = " ".join(f"{k}={v}" for k, v in ids.items() if k != "task")
        head, _, rest = line.partition(f" {record.name} ")
        return f"{head} {record.name} [{tag}] {rest}"


class _CurrentStderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at emit time, not the one at configure time: a CLI
    invoked in-process (tests, notebooks) swaps and closes its stderr after each command."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(level: str = "INFO", *, json_lines: bool = False,
                      stream: Any = None) -> logging.Handler:
    """Install one handler on the root logger (replacing any earlier one of ours)."""
    handler = logging.StreamHandler(stream) if stream is not None else _CurrentStderrHandler()
    inner = JsonFormatter() if json_lines else TextFormatter()
    handler.setFormatter(_Redacting(inner, env_secrets()))
    handler.set_name("doctriage")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "doctriage"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def configure_from_settings(settings: Any) -> logging.Handler:
    return configure_logging(settings.log_level, json_lines=settings.log_json)
