"""Settings -> the plain options the S3, SQS and backlog code takes (pipelines never read
settings), and the nightly backlog's beat entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctriage.settings import Settings

if TYPE_CHECKING:  # pipelines.s3 loads boto3: only when S3 options are really built
    from pipelines.s3 import S3Options


def s3_options(settings: Settings) -> S3Options:
    from pipelines.s3 import S3Options

    return S3Options(endpoint_url=settings.s3_endpoint_url, region=settings.s3_region)


def current_model_version(settings: Settings, override: Path | None = None) -> str | None:
    """The version in the configured bundle's exits.json, without loading (or building) it."""
    path = Path(override or settings.resolved_model_dir) / "exits.json"
    try:
        return str(json.loads(path.read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def backlog_beat(settings: Settings) -> dict[str, Any] | None:
    """The beat entry for the nightly backlog (settings.backlog_hour, settings.backlog_source),
    or None when no backlog source is configured."""
    if not settings.backlog_source:
        return None
    from workers.backlog_runner import backlog_beat_entry

    return backlog_beat_entry(
        settings.backlog_hour,
        settings.backlog_source,
        model_version=current_model_version(settings),
        s3_endpoint_url=settings.s3_endpoint_url,
        s3_region=settings.s3_region,
        grace_s=settings.stuck_after_s,
    )
