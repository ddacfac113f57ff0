"""`doctriage watch --redis-events` end to end, the compose setup's path for MinIO: objects in
S3 (moto's real HTTP server), their creation events in MinIO's Redis format on the real Redis,
the watcher run once in embedded mode with the tiny model -> each document registered once and
classified; a duplicate event and a deletion change nothing; the list is left empty."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote_plus

import pytest
from reportlab.pdfgen import canvas
from servicekit import moto_server
from sqlalchemy import func, select
from typer.testing import CliRunner

from db.models import Document, Prediction
from db.session import make_engine, session_factory, session_scope
from pipelines.s3 import object_uri

pytestmark = pytest.mark.services
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}


def pdf(text: str) -> bytes:
    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    c.drawString(72, 720, f"{text}: invoice total amount due within thirty days")
    c.showPage()
    c.save()
    return buf.getvalue()


def minio_entry(bucket: str, key: str, etag: str, name: str = "s3:ObjectCreated:Put") -> str:
    record = {"eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "",
              "eventTime": "2026-11-29T02:00:00.000Z", "eventName": name,
              "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config",
                     "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                     "object": {"key": quote_plus(key, safe="/"), "size": 1, "eTag": etag,
                                "sequencer": "1"}}}
    return json.dumps([{"Event": [record], "EventTime": record["eventTime"]}])


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    with moto_server(AWS) as endpoint:
        yield endpoint


def test_watch_takes_minio_events_from_redis(
    moto_endpoint: str, redis_url: str, tiny_bundle: Path, isolated_home: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import boto3
    import redis

    for k, v in AWS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("DOCTRIAGE_S3_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("DOCTRIAGE_MODEL_DIR", str(tiny_bundle))
    monkeypatch.delenv("DOCTRIAGE_BROKER_URL", raising=False)
    monkeypatch.delenv("DOCTRIAGE_DATABASE_URL", raising=False)
    from doctriage.settings import get_settings

    get_settings.cache_clear()
    from doctriage.cli import app

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    bucket = f"inbox-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    key = f"test-events-{uuid.uuid4().hex[:8]}"
    events = redis.Redis.from_url(redis_url)
    for name in ("in/a.pdf", "in/b c.pdf"):
        etag = s3.put_object(Bucket=bucket, Key=name, Body=pdf(name))["ETag"].strip('"')
        events.rpush(key, minio_entry(bucket, name, etag))
    args = ["watch", f"s3://{bucket}/in/", "--redis-events", redis_url, "--events-key", key,
            "--once"]

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 messages, 2 new" in result.output
    assert events.llen(key) == 0 and not events.keys(f"{key}:processing:*")
    store = session_factory(make_engine(f"sqlite:///{isolated_home / 'doctriage.db'}"))
    with session_scope(store) as s:
        docs = dict(s.execute(select(Document.source_uri, Document.state)).all())
        preds = s.execute(select(func.count()).select_from(Prediction)).scalar_one()
    assert docs == {object_uri(bucket, name): "DONE" for name in ("in/a.pdf", "in/b c.pdf")}
    assert preds >= 2

    # At-least-once delivery: the same event again, and a deletion: nothing new, nothing run.
    etag = s3.head_object(Bucket=bucket, Key="in/a.pdf")["ETag"].strip('"')
    events.rpush(key, minio_entry(bucket, "in/a.pdf", etag),
                 minio_entry(bucket, "in/a.pdf", etag, "s3:ObjectRemoved:Delete"))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "2 messages, 0 new" in result.output
    assert events.llen(key) == 0
    with session_scope(store) as s:
        assert s.execute(select(func.count()).select_from(Document)).scalar_one() == 2
        assert s.execute(select(func.count()).select_from(Prediction)).scalar_one() == preds
