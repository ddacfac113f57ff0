"""Masking credentials in text that leaves the process: log lines (doctriage.logging_setup) and
the error text stored on documents and pages (and so printed in a run's summary).

URL passwords (`scheme://user:***@host`), AWS access key ids, secret-looking `key=value` pairs,
and the literal values of the secret environment variables this process was given.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from pipelines.errors import one_line

MASK = "***"
# Environment variables whose values are secrets wherever they show up.
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MINIO_ROOT_PASSWORD", "POSTGRES_PASSWORD",
    "REDIS_PASSWORD", "FLOWER_BASIC_AUTH",
)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]*:)(?P<pw>[^\s@/]+)(?=@)")
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b")
_SECRET_PAIR = re.compile(
    r"(?P<key>(?:aws_)?(?:secret(?:_access)?_key|secretaccesskey|session_?token|password|passwd"
    r"|api_?key|token)[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\s\"',;}]+)",
    re.IGNORECASE,
)


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Literal secret values found in the environment: named secret variables, and the
    password part of any URL-valued DOCTRIAGE_* variable."""
    env = os.environ if environ is None else environ
    found = [env[name] for name in SECRET_ENV if env.get(name)]
    for name, value in env.items():
        if name.startswith("DOCTRIAGE_") and "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                continue
            if password:
                found.append(password)
    # Longest first, so a secret containing another is masked whole; tiny values would mask
    # ordinary words.
    return sorted({s for s in found if len(s) >= 4}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    text = _AWS_KEY_ID.sub(MASK, text)
    return _SECRET_PAIR.sub(lambda m: m.group("key") + MASK, text)


def stored_error(text: str, limit: int = 2000) -> str:
    """Error text as it may be stored (documents.error, pages.error) or reported: one line
    (control characters and a file name's undecodable bytes escaped: PostgreSQL text takes no
    lone surrogate), credentials masked (including this process's secret environment values),
    at most `limit` characters (masked before cutting, so a cut never exposes half a secret)."""
    return redact(one_line(" ".join(str(text).split())), env_secrets())[:limit]
