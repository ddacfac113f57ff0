"""The Celery configuration the workers run with (no broker needed to check it)."""

from __future__ import annotations

import pytest
from celery import Celery

from doctriage import wiring
from doctriage.settings import get_settings
from workers.celery_app import QUEUES, ROUTES, QueueConfig, configure
from workers.queue_config import StuckRules


def test_configuration_is_json_only_acks_late_prefetch_one() -> None:
    app = configure(QueueConfig("redis://127.0.0.1:6379/15", visibility_timeout_s=1234,
                                reconcile_every_s=30, stuck=StuckRules(stuck_after_s=99)),
                        Celery("t"))
    conf = app.conf
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.task_acks_late is True and conf.worker_prefetch_multiplier == 1
    assert conf.broker_transport_options["visibility_timeout"] == 1234
    assert {q.name for q in conf.task_queues} == set(QUEUES)
    assert conf.task_routes is ROUTES
    beat = conf.beat_schedule["reconcile"]
    assert beat["schedule"] == 30 and beat["kwargs"] == {
        "stuck_after_s": 99, "lost_after_s": 30.0, "ingest_after_s": 90.0,
        "classify_after_s": 30.0, "step_factor": 4.0, "ocr_after_s": 90.0}
    assert beat["options"] == {"expires": 90}  # a stale sweep is dropped, not queued up


def test_shipped_recovery_defaults_reach_the_beat(monkeypatch: pytest.MonkeyPatch) -> None:
    """Recovery in seconds with the defaults: a 10 s sweep, lost messages after 30 s, a
    visibility timeout of 15 minutes (not an hour); the ingest bound follows the OCR timeout
    (a heartbeat waits for the slowest page: OCR timeout + 30 s), and so does the bound for a
    page being OCRed by the ocr step."""
    from workers import steps, tasks

    monkeypatch.setenv("DOCTRIAGE_BROKER_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.setenv("DOCTRIAGE_OCR_TIMEOUT_S", "90")
    get_settings.cache_clear()
    conf = wiring.configure_celery(get_settings()).conf
    get_settings.cache_clear()
    assert conf.broker_transport_options["visibility_timeout"] == 900
    beat = conf.beat_schedule["reconcile"]
    assert beat["schedule"] == 10.0
    assert beat["kwargs"] == {"stuck_after_s": 900.0, "lost_after_s": 30.0,
                              "ingest_after_s": 120.0, "classify_after_s": 30.0,
                              "step_factor": 4.0, "ocr_after_s": 120.0}
    # the task's keyword arguments are exactly StuckRules' fields
    assert steps.StuckRules(**beat["kwargs"]).ingest_after_s == 120.0
    assert steps.StuckRules(**beat["kwargs"]).ocr_after_s == 120.0  # OCR time-out + 30 s
    assert tasks.reconcile.name == "doctriage.reconcile"


def test_every_task_is_routed_to_its_queue() -> None:
    from workers import tasks  # registers the tasks on the app

    workflow = {"doctriage.ingest": "ingest", "doctriage.classify": "classify",
                "doctriage.full_depth": "full_depth", "doctriage.reconcile": "maintenance",
                "doctriage.ocr": "ocr"}
    for name, queue in workflow.items():
        assert ROUTES[name]["queue"] == queue
        assert name in tasks.app.tasks
    assert {r["queue"] for r in ROUTES.values()} <= set(QUEUES)
    assert tasks.ingest.max_retries == 6 and tasks.ingest.autoretry_for


def test_wiring_needs_a_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCTRIAGE_BROKER_URL", raising=False)
    get_settings.cache_clear()
    with pytest.raises(wiring.WiringError, match="no broker"):
        wiring.configure_celery(get_settings())


def test_task_events_are_off_unless_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """Events cost four Redis publishes per task; Flower switches workers' events on itself,
    and DOCTRIAGE_TASK_EVENTS=true sends them from the start (and task-sent events too)."""
    monkeypatch.setenv("DOCTRIAGE_BROKER_URL", "redis://127.0.0.1:6379/15")
    monkeypatch.delenv("DOCTRIAGE_TASK_EVENTS", raising=False)
    get_settings.cache_clear()
    conf = wiring.configure_celery(get_settings()).conf
    assert conf.worker_send_task_events is False and conf.task_send_sent_event is False
    assert conf.worker_enable_remote_control is True  # what Flower's enable_events needs
    monkeypatch.setenv("DOCTRIAGE_TASK_EVENTS", "true")
    get_settings.cache_clear()
    conf = wiring.configure_celery(get_settings()).conf
    assert conf.worker_send_task_events is True and conf.task_send_sent_event is True
    get_settings.cache_clear()


def test_configured_again_for_another_broker_it_publishes_there() -> None:
    """A process that configures the app for a second broker (a test after another, a command
    reading new settings) used to keep publishing through the connections pooled for the first."""
    app = configure(QueueConfig("redis://127.0.0.1:6379/14"), Celery("t"))
    with app.producer_or_acquire() as producer:  # pools a connection (none is opened yet)
        assert producer.connection.as_uri().endswith("/14")
    configure(QueueConfig("redis://127.0.0.1:6379/13"), app)
    with app.producer_or_acquire() as producer:
        assert producer.connection.as_uri().endswith("/13")
    configure(QueueConfig("redis://127.0.0.1:6379/13", classify_chunk=8), app)  # same broker
    with app.producer_or_acquire() as producer:
        assert producer.connection.as_uri().endswith("/13")
    assert app.conf.doctriage_backlog_priority == 6  # the backlog's messages go behind live work
