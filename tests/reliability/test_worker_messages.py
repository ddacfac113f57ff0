"""Hostile and malformed task messages against a real ingest worker (subprocess, real Redis on
a spare DB number, SQLite store): a pickle body is refused without being unpickled, messages
with unexpected fields, wrong types, unknown task names or a garbage body are handled (the
document, where there is one, gets a one-line reason), and the same worker then ingests a good
document."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from relkit import Cluster, hostile_pickle, record_result, text_pdf_bytes
from servicekit import spare_redis_db
from sqlalchemy import select

from db.models import Document, Page
from db.repository import register_document
from db.session import make_engine, migrate, session_factory, session_scope
from doctriage import wiring
from doctriage.settings import Settings
from pipelines.sources import path_to_uri, sha256_file

pytestmark = pytest.mark.services


class Env:
    def __init__(self, tmp: Path, broker: str) -> None:
        self.tmp = tmp
        self.broker = broker
        self.db_url = f"sqlite:///{tmp / 'store.db'}"
        engine = make_engine(self.db_url)
        migrate(engine)
        self.sessions = session_factory(engine)
        self.engine = engine
        self.app = wiring.configure_celery(Settings(broker_url=broker, database_url=self.db_url))

    def document(self, name: str, pages: int = 1) -> int:
        path = self.tmp / name
        path.write_bytes(text_pdf_bytes(pages, name))
        with session_scope(self.sessions) as s:
            return register_document(s, path_to_uri(path), sha256=sha256_file(path))[0]

    def doc(self, doc_id: int) -> tuple[str, str | None]:
        with session_scope(self.sessions) as s:
            d = s.get(Document, doc_id)
            return d.state, d.error

    def publish_raw(self, body: bytes | str, content_type: str, encoding: str,
                    task: str = "doctriage.ingest", **headers: Any) -> str:
        tid = str(uuid.uuid4())
        hdrs = {"lang": "py", "task": task, "id": tid, "root_id": tid, "parent_id": None,
                "group": None, "retries": 0, "eta": None, "expires": None,
                "timelimit": [None, None], "argsrepr": "?", "kwargsrepr": "?",
                "origin": "reliability-test", **headers}
        queue = self.app.amqp.queues["ingest"]  # Celery binds it to its default exchange
        with self.app.producer_or_acquire() as producer:
            producer.publish(body, exchange=queue.exchange, routing_key=queue.routing_key,
                             headers=hdrs, declare=[queue],
                             content_type=content_type, content_encoding=encoding,
                             correlation_id=tid, serializer=None)
        return tid


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Env, Cluster, Any]]:
    tmp = tmp_path_factory.mktemp("messages")
    try:
        broker_cm = spare_redis_db()
        broker = broker_cm.__enter__()
    except Exception as exc:  # redis down or no spare DB
        pytest.skip(f"Redis not usable: {exc}")
    e = Env(tmp, broker)
    cluster = Cluster({**os.environ, "DOCTRIAGE_HOME": str(tmp / "home"),
                       "DOCTRIAGE_DATABASE_URL": e.db_url, "DOCTRIAGE_BROKER_URL": broker,
                       "DOCTRIAGE_ARTIFACT_URL": str(tmp / "artifacts")}, tmp)
    worker = cluster.worker("ingest", "ingest", 1)
    try:
        cluster.wait_ready(worker)
        yield e, cluster, worker
    finally:
        cluster.close()
        e.engine.dispose()
        broker_cm.__exit__(None, None, None)


def _wait_log(worker: Any, needle: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = worker.tail(200_000)
        if needle in text:
            return text
        assert worker.alive(), text[-3000:]
        time.sleep(0.3)
    raise AssertionError(f"{needle!r} not in the worker log:\n{worker.tail()}")


def _wait_doc(e: Env, doc_id: int, states: set[str], timeout: float = 45) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = e.doc(doc_id)
        if row[0] in states:
            return row
        time.sleep(0.3)
    raise AssertionError(f"document {doc_id} is {e.doc(doc_id)}")


def test_pickle_message_is_refused_by_a_real_worker(env, tmp_path: Path) -> None:
    e, _, worker = env
    marker = tmp_path / "pwned"
    tid = e.publish_raw(hostile_pickle(marker), "application/x-python-serialize", "binary")
    text = _wait_log(worker, "ContentDisallowed")
    assert tid in text or "Refusing to deserialize untrusted content of type pickle" in text
    time.sleep(1)
    assert not marker.exists() and worker.alive()
    record_result({"fault": "pickle task message", "kind": "bad_input", "pages_in": 0,
                   "pages_out": 0, "duplicates": 0, "recover_s": None,
                   "outcome": "refused by the worker (ContentDisallowed), never unpickled"})


def test_malformed_task_messages_are_handled_and_the_worker_keeps_serving(env) -> None:
    e, _, worker = env
    from workers.tasks import ingest

    extra_kw = e.document("extra-kwargs.pdf")
    e.app.send_task("doctriage.ingest", args=[extra_kw],
                    kwargs={"unexpected": "field", "pages": [1, 2]})
    _state, error = _wait_doc(e, extra_kw, {"FAILED"})
    assert error.startswith("TypeError: ") and "unexpected" in error and "\n" not in error

    wrong_type = e.document("wrong-type.pdf")
    e.app.send_task("doctriage.ingest", args=[f"{wrong_type}; DROP TABLE documents"])
    e.app.send_task("doctriage.ingest", args=[], kwargs={})  # missing argument
    # A body that is not (args, kwargs, embed): this used to stop the worker for good.
    e.publish_raw(b'{"not": "a celery body"}', "application/json", "utf-8")
    e.publish_raw(b'"just a string"', "application/json", "utf-8")
    e.publish_raw(f"[[{wrong_type}], {{}}, {{}}]".encode(), "application/json", "utf-8",
                  task="doctriage.no_such_task")  # unknown task name
    # Unknown headers/fields beside a valid body are ignored: the document is ingested.
    extra_headers = e.document("extra-headers.pdf", pages=2)
    e.publish_raw(f"[[{extra_headers}], {{}}, {{}}]".encode(), "application/json", "utf-8",
                  **{"x-unexpected": "value", "shadow": {"task": "evil"}})
    assert _wait_doc(e, extra_headers, {"INGESTED", "DONE"})[1] is None
    text = _wait_log(worker, "no_such_task")
    assert "malformed task message body" in text and "Unrecoverable" not in text
    assert worker.alive(), text[-2000:]
    # The malformed ids changed nothing: that document was never touched.
    assert e.doc(wrong_type) == ("RECEIVED", None)

    # The same worker still serves: a good document after all of that.
    good = e.document("good.pdf", pages=3)
    ingest.delay(good)
    assert _wait_doc(e, good, {"INGESTED", "DONE"}) == ("INGESTED", None)
    with session_scope(e.sessions) as s:
        assert len(s.execute(select(Page).where(Page.document_id == good)).all()) == 3
    assert worker.alive()
    record_result({"fault": "task messages with unexpected fields / wrong types / unknown task",
                   "kind": "bad_input", "pages_in": 5, "pages_out": 5, "duplicates": 0,
                   "recover_s": None,
                   "outcome": f"extra kwargs -> FAILED ({error}); others logged and dropped; "
                              "worker kept serving"})
