"""The nightly backlog task on the real Redis broker: it registers what a folder holds,
sends `doctriage.ingest` messages through Celery at the backlog's priority (behind live work),
never lets its own messages pile up past `max_in_queue`, and a second run sends nothing. The
beat entry is built from settings."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from drops_helpers import make_pdf
from servicekit import priority_list, spare_redis_db
from sqlalchemy import update

from db.models import Document
from db.repository import register_document
from db.session import session_scope
from pipelines.artifacts import LocalArtifactStore
from pipelines.sources import path_to_uri
from workers import context
from workers.steps import StepContext

pytestmark = pytest.mark.services
# Kombu's Redis list for the ingest queue's priority level 6 (QueueConfig.backlog_priority).
BACKLOG_INGEST = priority_list("ingest", 6)
KEYS = ("ingest", BACKLOG_INGEST, "classify", "full_depth")


@pytest.fixture
def broker() -> Iterator[str]:
    with spare_redis_db() as url:
        yield url


@pytest.fixture
def celery_store(store: Any, tmp_path: Path, broker: str) -> Iterator[Any]:
    from workers.celery_app import QueueConfig, configure

    configure(QueueConfig(broker_url=broker))
    saved = (context._context_factory, context._runtime_factory)
    ctx = StepContext(sessions=store, artifacts=LocalArtifactStore(tmp_path / "artifacts"))
    context.install(lambda: ctx, lambda: None)  # type: ignore[arg-type,return-value]
    context.reset()
    r = redis.Redis.from_url(broker)
    r.delete(*KEYS)
    yield store
    r.delete(*KEYS)
    context.install(*saved)  # type: ignore[arg-type]
    context.reset()


def test_nightly_backlog_task_paces_and_is_idempotent(
    celery_store: Any, tmp_path: Path, broker: str
) -> None:
    from workers.backlog_runner import nightly_backlog

    folder = tmp_path / "drops"
    folder.mkdir()
    for name in ("a.pdf", "b.pdf", "c.pdf", "d.pdf", "e.pdf"):
        (folder / name).write_bytes(make_pdf(name))
    # One document registered long ago and never ingested (a lost message).
    with session_scope(celery_store) as s:
        old_id, _ = register_document(s, path_to_uri(folder / "a.pdf"), sha256="0" * 64)
        s.execute(update(Document).values(updated_at=datetime.now(UTC) - timedelta(days=2)))

    r = redis.Redis.from_url(broker)
    received: list[int] = []
    depth_seen: list[int] = []
    stop = threading.Event()

    def worker() -> None:  # a slow ingest worker: takes messages in broker order
        while not stop.is_set():
            item = r.brpop(["ingest", BACKLOG_INGEST], timeout=0.2)
            if item is not None:
                assert item[0].decode() == BACKLOG_INGEST  # none at live priority
                depth_seen.append(int(r.llen(BACKLOG_INGEST)) + 1)
                msg = json.loads(item[1])
                assert msg["headers"]["task"] == "doctriage.ingest"
                received.append(int(msg["headers"]["argsrepr"].strip("(),")))
                time.sleep(0.05)

    t = threading.Thread(target=worker)
    t.start()
    try:
        out = nightly_backlog(str(folder), max_in_queue=2)
        deadline = time.monotonic() + 10
        while len(received) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join()
    assert out["registered"] == 5 and out["ingest"] == 1 and out["complete"]
    assert sorted(received).count(old_id) == 1 and len(received) == 6
    assert max(depth_seen) <= 2  # never more than max_in_queue backlog messages waiting
    assert out["paced_s"] > 0

    again = nightly_backlog(str(folder), max_in_queue=2)
    assert again["registered"] == 0 and again["ingest"] == 0 and again["classify"] == 0
    assert r.llen("ingest") == 0 and r.llen(BACKLOG_INGEST) == 0


def test_backlog_beat_entry_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from celery.schedules import crontab

    from doctriage import wiring
    from doctriage.settings import get_settings

    monkeypatch.setenv("DOCTRIAGE_BROKER_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("DOCTRIAGE_BACKLOG_SOURCE", "s3://drops/in/")
    monkeypatch.setenv("DOCTRIAGE_BACKLOG_HOUR", "3")
    get_settings.cache_clear()
    config = wiring.queue_config(get_settings())
    entry = config.extra_beat["backlog"]
    assert entry["task"] == "doctriage.backlog"
    assert entry["schedule"] == crontab(hour=3, minute=0)
    assert entry["kwargs"]["source"] == "s3://drops/in/"
    monkeypatch.delenv("DOCTRIAGE_BACKLOG_SOURCE")
    get_settings.cache_clear()
    assert "backlog" not in wiring.queue_config(get_settings()).extra_beat
