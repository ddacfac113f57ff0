"""No pickle on the message path: the Celery app (configured the way every worker is) speaks
JSON only, and kombu, given the app's accept list, refuses a pickle body without running it.
A real worker refusing a pickle message: tests/reliability/test_worker_messages.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from kombu.exceptions import ContentDisallowed
from kombu.serialization import loads, prepare_accept_content
from relkit import hostile_pickle

from doctriage import wiring
from doctriage.settings import Settings


@pytest.fixture
def app():
    return wiring.configure_celery(Settings(broker_url="redis://127.0.0.1:6379/15"))


def test_app_serializes_and_accepts_json_only(app) -> None:
    conf = app.conf
    assert conf.task_serializer == "json"
    assert conf.result_serializer == "json"
    assert conf.event_serializer == "json"
    assert list(conf.accept_content) == ["json"]
    # Results fall back to accept_content when not set on their own.
    assert conf.result_accept_content in (None, ["json"])


def test_kombu_refuses_pickle_with_the_apps_accept_list(app, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    body = hostile_pickle(marker)
    # What a Celery consumer does with accept_content (names -> content types).
    accept = prepare_accept_content(app.conf.accept_content)
    for content_type in ("application/x-python-serialize", "pickle"):
        with pytest.raises(ContentDisallowed):
            loads(body, content_type, "binary", accept=accept)
    assert not marker.exists()
    # The same call decodes a JSON body: the accept list is what refused the pickle.
    assert loads(b'[[7], {}, {}]', "application/json", "utf-8", accept=accept) == [[7], {}, {}]


@pytest.mark.services
def test_messages_on_the_wire_are_json_ids_only(tmp_path: Path) -> None:
    """What `task.delay` puts into the real Redis broker: a JSON body carrying ids only."""
    import base64
    import json

    import redis
    from servicekit import spare_redis_db

    from workers.tasks import classify, ingest

    with spare_redis_db() as url:
        wiring.configure_celery(Settings(broker_url=url))
        ingest.delay(41)
        classify.delay([1, 2, 3])
        client = redis.Redis.from_url(url)
        raw = [client.lpop("ingest"), client.lpop("classify")]
    for envelope, args in zip(raw, ([41], [[1, 2, 3]]), strict=True):
        msg = json.loads(envelope)
        assert msg["content-type"] == "application/json"
        body = json.loads(base64.b64decode(msg["body"]))
        assert body[0] == args and body[1] == {}
