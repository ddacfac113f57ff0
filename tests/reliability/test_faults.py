"""Fault injection on the real distributed path: PostgreSQL (a fresh database), Redis (a spare
DB number), Celery worker subprocesses started with `doctriage worker`, moto's S3 server. Each
run carries >= 200 generated text-layer pages through ingest -> classify -> full_depth with a
tiny model, injects one fault mid-run, and then checks that every page has exactly one
prediction per pass, that no document is stuck, and that the counts match the input.

The workers run with the SHIPPED recovery settings (visibility timeout, reconcile period, stuck
bounds: doctriage/settings.py), nothing shortened for the test: the recovery times recorded for
bench/faults.py are what a deployment gets. Run with `pytest -m faults tests/reliability`.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from relkit import (
    Cluster,
    kill_redis_clients,
    pg_available,
    record_result,
    terminate_backends,
    text_pdf_bytes,
    write_corpus,
)
from servicekit import (
    CLAIM_KEY,
    DOCTRIAGE_BIN,
    fresh_pg_database,
    moto_server,
    spare_redis_db,
)
from sqlalchemy import func, select
from synthkit import scanned_pdf

from db.models import Document, Page, Prediction
from db.session import make_engine, session_factory, session_scope
from workers.steps import RerouteOptions, needs_full_depth

pytestmark = [pytest.mark.faults, pytest.mark.services]

# The goal with the shipped defaults: a lost broker message or a dead classify worker costs at
# most this, from the fault to every page final.
RECOVER_LIMIT_S = 120
# The tiny model answers these pages with 0.60-0.64: about half go to the full-depth pass.
REROUTE = RerouteOptions(reroute_below=0.63, audit_fraction=0.05, seed=0)
RUN_LIMIT_S = 240  # each scenario must finish well inside this
FINAL_DOC = ("DONE", "FAILED", "SKIPPED")
FINAL_PAGE = ("DONE", "FAILED")


@dataclass
class Snapshot:
    docs: dict[str, int]
    pages: dict[str, int]
    early: int
    full: int

    @property
    def n_pages(self) -> int:
        return sum(self.pages.values())


class Harness:
    def __init__(self, tmp: Path, db_url: str, broker: str, bundle: Path,
                 extra_env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.db_url = db_url
        self.broker = broker
        self.env = {
            **os.environ,
            "DOCTRIAGE_HOME": str(tmp / "home"),
            "DOCTRIAGE_DATABASE_URL": db_url,
            "DOCTRIAGE_BROKER_URL": broker,
            "DOCTRIAGE_MODEL_DIR": str(bundle),
            "DOCTRIAGE_ARTIFACT_URL": str(tmp / "artifacts"),
            "DOCTRIAGE_OCR_MODE": "text",
            "DOCTRIAGE_DPI": "50",
            "DOCTRIAGE_MAX_BATCH": "8",
            "DOCTRIAGE_MAX_DELAY_MS": "50",
            "DOCTRIAGE_REROUTE_BELOW": str(REROUTE.reroute_below),
            "DOCTRIAGE_AUDIT_FRACTION": str(REROUTE.audit_fraction),
            "DOCTRIAGE_SEED": str(REROUTE.seed),
            "OMP_NUM_THREADS": "1",
            "OMP_THREAD_LIMIT": "1",
            **(extra_env or {}),
        }
        self.cluster = Cluster(self.env, tmp)
        self.engine = make_engine(db_url)
        self.sessions = session_factory(self.engine)

    # -- processes ------------------------------------------------------------------------

    def ingest_worker(self, wait: bool = True) -> Any:
        return self._worker("ingest", "ingest", 1, wait)

    def classify_worker(self, wait: bool = True) -> Any:
        return self._worker("classify", "classify,full_depth", 2, wait)

    def ocr_worker(self, wait: bool = True) -> Any:
        return self._worker("ocr", "ocr", 1, wait)

    def maintenance_worker(self, wait: bool = True) -> Any:
        return self._worker("maintenance", "maintenance", 1, wait, "--beat")

    def _worker(self, name: str, queues: str, conc: int, wait: bool, *extra: str) -> Any:
        proc = self.cluster.worker(name, queues, conc, *extra)
        if wait:
            self.cluster.wait_ready(proc)
        return proc

    def submit(self, folder: Path) -> subprocess.Popen:
        """`doctriage submit FOLDER` in the background: workers start on the first documents
        while later ones are still being registered, so observation starts right away."""
        self._submit = subprocess.Popen(
            [DOCTRIAGE_BIN, "submit", str(folder)], env=self.env, cwd=self.tmp,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return self._submit

    def submitted(self) -> None:
        _, err = self._submit.communicate(timeout=120)
        assert self._submit.returncode == 0, err

    def start_all_then_submit(self, sizes: list[int],
                              wait_maintenance: bool = True) -> tuple[Any, float]:
        """The common run: a corpus of `sizes` pages per document, the workers up (ingest and
        classify ready), then the submission. Returns the classify worker (the usual victim)
        and when the submission started."""
        write_corpus(self.tmp / "docs", sizes)
        self.maintenance_worker(wait=wait_maintenance)
        self.ingest_worker()
        classify = self.classify_worker()
        t_start = time.monotonic()
        self.submit(self.tmp / "docs")
        return classify, t_start

    def finish(self, sizes: list[int]) -> tuple[dict[str, Any], float]:
        """The submission ended, every document and page final; the verified counts and the
        time all was final."""
        self.submitted()
        self.wait_finished(len(sizes), sum(sizes))
        t_done = time.monotonic()
        return self.verify(len(sizes), sum(sizes)), t_done

    def flush_broker(self) -> dict[str, int]:
        """FLUSHDB on our broker DB number; returns the messages each queue held then."""
        import redis

        client = redis.Redis.from_url(self.broker)
        lost = {q: client.llen(q) for q in ("ingest", "classify", "full_depth", "ocr")}
        claim = client.get(CLAIM_KEY)
        # In one MULTI/EXEC: another run looking for an empty DB number must never see ours
        # empty and unclaimed between the two (it would share our broker and eat our messages).
        with client.pipeline(transaction=True) as pipe:
            pipe.flushdb()
            if claim is not None:
                pipe.set(CLAIM_KEY, claim)
            pipe.execute()
        return lost

    def close(self) -> None:
        self.cluster.close()
        self.engine.dispose()

    # -- observation ----------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        with session_scope(self.sessions) as s:
            docs = dict(s.execute(select(Document.state, func.count()).group_by(Document.state))
                        .all())
            pages = dict(s.execute(select(Page.state, func.count()).group_by(Page.state)).all())
            per_pass = dict(s.execute(select(Prediction.pass_name, func.count())
                                      .group_by(Prediction.pass_name)).all())
        return Snapshot(docs, pages, per_pass.get("early", 0), per_pass.get("full", 0))

    def wait_for(self, what: str, cond: Callable[[Snapshot], bool], timeout: float,
                 poll: float = 0.1) -> Snapshot:
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            if cond(snap):
                return snap
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {p.name} ---\n{p.tail(1500)}" for p in self.cluster.procs)
                pytest.fail(f"{what}: not reached in {timeout:.0f}s: {snap}\n{logs}")
            time.sleep(poll)

    def wait_finished(self, n_docs: int, n_pages: int, timeout: float = RUN_LIMIT_S) -> Snapshot:
        def done(s: Snapshot) -> bool:
            return (sum(s.docs.values()) == n_docs and s.n_pages == n_pages
                    and all(k in FINAL_DOC for k in s.docs)
                    and all(k in FINAL_PAGE for k in s.pages))
        return self.wait_for("every document and page final", done, timeout, poll=0.5)

    def pages_in(self, state: str) -> list[int]:
        with session_scope(self.sessions) as s:
            return list(s.execute(select(Page.id).where(Page.state == state)).scalars())

    def verify(self, n_docs: int, n_pages: int, failed_docs: int = 0) -> dict[str, Any]:
        """Exactly one early prediction per page, one full-depth one exactly for the pages
        that needed it, nothing stuck, counts matching the input."""
        with session_scope(self.sessions) as s:
            docs = list(s.execute(select(Document.state, Document.error, Document.page_count)))
            pages = list(s.execute(select(Page.id, Page.state, Page.attempts, Page.document_id)))
            preds = list(s.execute(select(Prediction.page_id, Prediction.pass_name,
                                          Prediction.confidence)))
        assert len(docs) == n_docs
        states = [d.state for d in docs]
        assert states.count("FAILED") == failed_docs, [d for d in docs if d.state != "DONE"]
        assert states.count("DONE") == n_docs - failed_docs
        assert len(pages) == n_pages and {p.state for p in pages} == {"DONE"}
        assert sum(d.page_count or 0 for d in docs) == n_pages
        early = [p.page_id for p in preds if p.pass_name == "early"]
        full = [p.page_id for p in preds if p.pass_name == "full"]
        duplicates = (len(early) - len(set(early))) + (len(full) - len(set(full)))
        assert duplicates == 0
        assert sorted(early) == sorted(p.id for p in pages)  # every page, exactly once
        conf = {p.page_id: p.confidence for p in preds if p.pass_name == "early"}
        need_full = {pid for pid, c in conf.items() if needs_full_depth(pid, c, REROUTE)}
        assert set(full) == need_full
        redone = sum(max(0, p.attempts - 1) for p in pages)
        return {"pages_out": len(set(early)), "full_depth": len(full), "duplicates": duplicates,
                "redone_page_claims": redone}


@pytest.fixture
def harness(tmp_path: Path, tiny_bundle: Path) -> Iterator[Callable[..., Harness]]:
    if (reason := pg_available()) is not None:
        pytest.skip(reason)
    made: list[Harness] = []
    with fresh_pg_database("doctriage_faults") as db_url, spare_redis_db() as broker:
        def make(extra_env: dict[str, str] | None = None) -> Harness:
            h = Harness(tmp_path, db_url, broker, tiny_bundle, extra_env)
            made.append(h)
            return h
        try:
            yield make
        finally:
            for h in made:
                h.close()


def _report(fault: str, pages_in: int, result: dict[str, Any],
            times: tuple[float, float, float], **extra: Any) -> None:
    """One row for bench/faults.py; `times`: (fault, all final, run start), monotonic."""
    t_fault, t_done, t_start = times
    record_result({"fault": fault, "kind": "fault", "pages_in": pages_in,
                   "pages_out": result["pages_out"], "duplicates": result["duplicates"],
                   "recover_s": round(t_done - t_fault, 1), "run_s": round(t_done - t_start, 1),
                   "full_depth": result["full_depth"],
                   "redone_page_claims": result["redone_page_claims"],
                   "outcome": "; ".join([f"{result['full_depth']} full-depth predictions",
                                         f"{result['redone_page_claims']} page re-claims",
                                         *(f"{k}={v}" for k, v in extra.items())]),
                   **extra})


# -- the faults --------------------------------------------------------------------------------


def test_classify_worker_sigkill_mid_batch(harness, tmp_path: Path) -> None:
    h = harness({"DOCTRIAGE_MAX_DELAY_MS": "400"})  # pages wait in the batcher: a batch is open
    sizes = [8] * 25
    victim, t_start = h.start_all_then_submit(sizes, wait_maintenance=False)
    h.wait_for("classification under way",
               lambda s: s.early >= 24 and s.pages.get("CLASSIFYING", 0) > 0, 120, poll=0.02)
    in_flight = len(h.pages_in("CLASSIFYING"))
    Cluster.kill(victim, signal.SIGKILL)
    t_fault = time.monotonic()
    h.classify_worker()  # the restart that finishes the work
    result, t_done = h.finish(sizes)
    assert in_flight > 0
    _report("classify worker SIGKILL mid-batch (restarted)", sum(sizes), result, (t_fault,
            t_done, t_start), pages_in_flight_at_kill=in_flight)
    assert t_done - t_fault <= RECOVER_LIMIT_S


def test_ingest_worker_sigkill_mid_100_page_document(harness, tmp_path: Path) -> None:
    h = harness({"DOCTRIAGE_DPI": "150"})  # slower pages: a window to kill it in
    folder = tmp_path / "docs"
    (folder).mkdir()
    (folder / "a-big-100p.pdf").write_bytes(text_pdf_bytes(100, "big"))
    sizes = [100] + [8] * 13
    write_corpus(folder, sizes[1:], prefix="z")
    h.maintenance_worker(wait=False)
    h.classify_worker(wait=False)
    victim = h.ingest_worker()
    t_start = time.monotonic()
    h.submit(folder)

    def big_half_read(s: Snapshot) -> bool:
        with session_scope(h.sessions) as ss:
            doc = ss.execute(select(Document).where(Document.source_uri.like("%a-big-100p.pdf"))
                             ).scalar_one_or_none()
            if doc is None or doc.state != "INGESTING":
                return False
            n = ss.execute(select(func.count()).select_from(Page)
                           .where(Page.document_id == doc.id)).scalar()
        return 20 <= n < 100

    h.wait_for("the 100-page document half read", big_half_read, 120, poll=0.05)
    pages_at_kill = h.snapshot().n_pages
    Cluster.kill(victim, signal.SIGKILL)
    t_fault = time.monotonic()
    h.ingest_worker()
    result, t_done = h.finish(sizes)
    _report("ingest worker SIGKILL mid 100-page document (restarted)", sum(sizes), result,
            (t_fault, t_done, t_start), page_rows_at_kill=pages_at_kill)


def test_redis_flushdb_and_connection_reset_then_reconcile(harness, tmp_path: Path) -> None:
    """FLUSHDB on our broker DB number (the same loss as FLUSHALL for the app's broker, without
    wiping other runs' databases on the shared server), then CLIENT KILL of every connection on
    it (what a restart does to the clients). Queued and unacknowledged messages are gone: the
    reconcile task finds the work in the database and enqueues it again."""
    h = harness()
    sizes = [8] * 25
    _, t_start = h.start_all_then_submit(sizes)
    h.wait_for("a third classified", lambda s: s.early >= 70, 150, poll=0.05)
    lost = h.flush_broker()
    killed = kill_redis_clients(h.broker)
    t_fault = time.monotonic()
    result, t_done = h.finish(sizes)
    _report("Redis FLUSHDB (own DB) + client connections killed, reconcile re-enqueues",
            sum(sizes), result, (t_fault, t_done, t_start), messages_lost=lost,
            connections_killed=killed)
    assert t_done - t_fault <= RECOVER_LIMIT_S


def test_redis_flushdb_alone_then_reconcile(harness, tmp_path: Path) -> None:
    """FLUSHDB without the restart: the connections stay up but kombu's routing tables
    (_kombu.binding.*) are gone with the messages, so the next publish finds no route until
    the producers reconnect and declare again. Nothing may end FAILED or stuck because of it."""
    h = harness()
    sizes = [8] * 25
    _, t_start = h.start_all_then_submit(sizes)
    h.wait_for("a fifth classified", lambda s: s.early >= 40, 150, poll=0.05)
    lost = h.flush_broker()
    t_fault = time.monotonic()
    result, t_done = h.finish(sizes)
    logs = "".join(p.tail(10**7) for p in h.cluster.procs)
    _report("Redis FLUSHDB (own DB) alone, connections kept; reconcile re-enqueues",
            sum(sizes), result, (t_fault, t_done, t_start), messages_lost=lost,
            route_errors=logs.count("InconsistencyError") + logs.count("Cannot route message"))
    assert t_done - t_fault <= RECOVER_LIMIT_S


def test_postgresql_connections_terminated_mid_run(harness, tmp_path: Path) -> None:
    h = harness()
    sizes = [8] * 25
    _, t_start = h.start_all_then_submit(sizes)
    h.wait_for("a fifth classified", lambda s: s.early >= 40, 150, poll=0.05)
    # Every 0.2 s for 8 s: idle pooled connections (pool_pre_ping's case) and, some of the
    # time, connections in the middle of a task's transaction (the retry's case).
    t_fault = time.monotonic()
    terminated = 0
    while time.monotonic() - t_fault < 8:
        terminated += terminate_backends(h.db_url)
        time.sleep(0.2)
    result, t_done = h.finish(sizes)
    logs = "".join(p.tail(10**7) for p in h.cluster.procs)
    retries = logs.count(" retry: Retry in ")
    assert terminated > 0
    _report("PostgreSQL pg_terminate_backend of all connections every 0.2 s for 8 s",
            sum(sizes), result, (t_fault, t_done, t_start), backends_terminated=terminated,
            task_retries=retries)


def test_sigterm_of_classify_worker_with_pages_in_the_batcher(harness, tmp_path: Path) -> None:
    h = harness({"DOCTRIAGE_MAX_DELAY_MS": "1500"})  # deeper stages wait for a fuller batch
    sizes = [8] * 25
    victim, t_start = h.start_all_then_submit(sizes, wait_maintenance=False)
    h.wait_for("pages waiting in the batcher",
               lambda s: s.early >= 16 and s.pages.get("CLASSIFYING", 0) > 0, 120, poll=0.02)
    held = set(h.pages_in("CLASSIFYING"))
    os.kill(victim.popen.pid, signal.SIGTERM)  # warm shutdown of the worker's main process
    t_fault = time.monotonic()
    victim.popen.wait(90)
    left = held & set(h.pages_in("CLASSIFYING"))
    assert not left, f"{len(left)} of {len(held)} pages the stopped worker held are unfinished"
    h.classify_worker()
    result, t_done = h.finish(sizes)
    _report("classify worker SIGTERM with pages in the stage batcher", sum(sizes), result,
            (t_fault, t_done, t_start), pages_in_batcher_at_sigterm=len(held),
            worker_exit_code=victim.popen.returncode)


def test_ocr_worker_sigkill_mid_page(harness, tmp_path: Path) -> None:
    """Deferred OCR on scans (the tiny bundle has no OCR-free exit: every page is OCRed by the
    ocr queue): its prefork worker is SIGKILLed while tesseract reads a page, then restarted.
    The page's message is unacknowledged; the reconciler takes the OCRING page back after the
    shipped bound (ocr_timeout_s + 30 s), and every page ends answered once."""
    h = harness({"DOCTRIAGE_OCR_MODE": "auto"})
    folder = tmp_path / "docs"
    folder.mkdir()
    sizes = [2, 1, 2, 1, 2, 1]
    for i, n in enumerate(sizes):
        label = ("letter", "memo")[i % 2]
        (folder / f"scan-{i:02d}-{n}p.pdf").write_bytes(scanned_pdf(label, n, f"faults-ocr{i}"))
    h.maintenance_worker(wait=False)
    h.ingest_worker(wait=False)
    h.classify_worker(wait=False)
    victim = h.ocr_worker()
    t_start = time.monotonic()
    h.submit(folder)
    h.wait_for("a page being OCRed", lambda s: s.pages.get("OCRING", 0) > 0, 180, poll=0.02)
    in_flight = h.pages_in("OCRING")
    Cluster.kill(victim, signal.SIGKILL)
    t_fault = time.monotonic()
    h.ocr_worker()
    result, t_done = h.finish(sizes)
    with session_scope(h.sessions) as s:
        sources = list(s.execute(select(Page.text_source, Page.word_count)))
        ocr_ran = set(s.execute(select(Prediction.ocr_ran)).scalars())
    assert in_flight and {src for src, _ in sources} == {"ocr"}
    assert all(words > 0 for _, words in sources) and ocr_ran == {True}
    _report("ocr worker SIGKILL mid-page (restarted)", sum(sizes), result, (t_fault, t_done,
            t_start), pages_in_ocr_at_kill=len(in_flight))
    assert t_done - t_fault <= RECOVER_LIMIT_S


def _scans(folder: Path, sizes: list[int], tag: str) -> Path:
    folder.mkdir()
    for i, n in enumerate(sizes):
        label = ("letter", "memo")[i % 2]
        (folder / f"scan-{i:02d}-{n}p.pdf").write_bytes(scanned_pdf(label, n, f"{tag}{i}"))
    return folder


def _ocr_tasks(h: Harness) -> list[dict[str, int]]:
    """The results the ocr workers logged, one per message they ran."""
    logs = "".join(p.log.read_text(errors="replace") for p in h.cluster.procs
                   if p.name == "ocr" and p.log.exists())
    return [ast.literal_eval(m) for m in
            re.findall(r"doctriage\.ocr\[[^\]]+\] succeeded in [\d.]+s: (\{[^}]*\})", logs)]


def _ocred_pages(h: Harness) -> list[int]:
    """The pages OCR read (a generated scan may also hold a blank page, which needs none);
    checks each has words and that its answers say OCR ran."""
    with session_scope(h.sessions) as s:
        pages = list(s.execute(select(Page.id, Page.text_source, Page.word_count)))
        ran = dict(s.execute(select(Prediction.page_id, Prediction.ocr_ran)).all())
    assert not {src for _, src, _ in pages} & {"awaiting_ocr", "ocr_avoided"}
    ocred = [pid for pid, src, words in pages if src == "ocr" and words > 0]
    assert len(ocred) == sum(src == "ocr" for _, src, _ in pages) >= len(pages) // 2
    assert all(ran[pid] is True for pid in ocred)
    return ocred


def test_redelivered_ocr_messages_do_nothing_twice(harness, tmp_path: Path) -> None:
    """Every page's OCR message delivered again, twice while the page waits for OCR or is being
    read (what a lost ack or a visibility time-out does) and once more after the run ended.
    The duplicates find the page no longer awaiting OCR and skip it: tesseract reads each page
    once, and every page is answered once."""
    from celery import Celery

    h = harness({"DOCTRIAGE_OCR_MODE": "auto"})
    sizes = [2, 1, 2, 1, 2, 1]
    folder = _scans(tmp_path / "docs", sizes, "faults-redeliver")
    h.maintenance_worker(wait=False)
    h.ingest_worker(wait=False)
    h.classify_worker(wait=False)
    h.ocr_worker()
    sender = Celery(broker=h.broker)

    def redeliver(page_id: int) -> None:
        sender.send_task("doctriage.ocr", args=[[page_id]], queue="ocr")

    t_start = time.monotonic()
    h.submit(folder)
    seen: set[int] = set()

    def settled() -> bool:
        snap = h.snapshot()
        return snap.n_pages == sum(sizes) and all(k in FINAL_PAGE for k in snap.pages)

    while not settled() and time.monotonic() - t_start < RUN_LIMIT_S:
        for page_id in set(h.pages_in("OCR_QUEUED")) | set(h.pages_in("OCRING")):
            if page_id not in seen:
                seen.add(page_id)
                redeliver(page_id)
                redeliver(page_id)
        time.sleep(0.05)
    t_fault = time.monotonic()
    result, t_done = h.finish(sizes)
    with session_scope(h.sessions) as s:
        every_page = list(s.execute(select(Page.id)).scalars())
    for page_id in every_page:  # after the end: once more each
        redeliver(page_id)
    ocred = _ocred_pages(h)
    expected = len(ocred) + 2 * len(seen) + len(every_page)
    deadline = time.monotonic() + 120
    while len(_ocr_tasks(h)) < expected and time.monotonic() < deadline:
        time.sleep(0.5)
    tasks = _ocr_tasks(h)
    logs = "".join(p.log.read_text(errors="replace") for p in h.cluster.procs
                   if p.name == "ocr")
    odd = [ln for ln in logs.splitlines() if "doctriage.ocr[" in ln
           and "succeeded" not in ln and "received" not in ln]
    assert len(seen) == len(ocred) and len(tasks) == expected, (len(seen), len(ocred), odd)
    assert sum(t["classify"] for t in tasks) == len(ocred)  # tesseract once per page
    assert sum(t["skipped"] for t in tasks) == expected - len(ocred)
    assert h.verify(len(sizes), sum(sizes)) == result  # the late duplicates changed nothing
    _report("ocr messages redelivered (2 extra while waiting/reading, 1 after the end)",
            sum(sizes), result, (t_fault, t_done, t_start),
            duplicate_messages=expected - sum(sizes))


def test_redis_flushdb_with_pages_waiting_for_ocr(harness, tmp_path: Path) -> None:
    """FLUSHDB while scanned pages wait in the ocr queue (and some classify and ingest
    messages with them): the reconciler finds OCR_QUEUED pages whose queue is empty and sends
    them again; every page ends OCRed once and answered once."""
    h = harness({"DOCTRIAGE_OCR_MODE": "auto"})
    sizes = [2, 1, 2, 1, 2, 1, 2, 1]
    folder = _scans(tmp_path / "docs", sizes, "faults-flush-ocr")
    h.maintenance_worker()
    h.ingest_worker(wait=False)
    h.classify_worker(wait=False)
    h.ocr_worker()
    t_start = time.monotonic()
    h.submit(folder)
    h.wait_for("pages waiting for OCR", lambda s: s.pages.get("OCR_QUEUED", 0) >= 2, 180,
               poll=0.02)
    lost = h.flush_broker()
    t_fault = time.monotonic()
    result, t_done = h.finish(sizes)
    assert lost["ocr"] > 0, lost
    ocred = _ocred_pages(h)
    ran = _ocr_tasks(h)  # the reconciler's re-sent messages included
    assert sum(t["classify"] for t in ran) == len(ocred)  # tesseract once per page
    _report("Redis FLUSHDB (own DB) with pages waiting in the ocr queue", sum(sizes), result,
            (t_fault, t_done, t_start), messages_lost=lost)
    assert t_done - t_fault <= RECOVER_LIMIT_S


@pytest.fixture
def moto_s3() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


def test_s3_object_deleted_between_event_and_ingestion(harness, tmp_path: Path,
                                                       moto_s3: str) -> None:
    import boto3

    aws = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "DOCTRIAGE_S3_ENDPOINT_URL": moto_s3}
    h = harness(aws)
    s3 = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="faults")
    sizes = [8] * 26
    for i, n in enumerate(sizes):
        s3.put_object(Bucket="faults", Key=f"in/doc-{i:03d}.pdf", Body=text_pdf_bytes(n, f"s{i}"))
    t_start = time.monotonic()
    watch = subprocess.run([DOCTRIAGE_BIN, "watch", "s3://faults/in/", "--once"], env=h.env,
                           capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert watch.returncode == 0, watch.stderr
    s3.delete_object(Bucket="faults", Key="in/doc-007.pdf")  # after the event, before ingest
    t_fault = time.monotonic()
    h.maintenance_worker(wait=False)
    h.classify_worker(wait=False)
    h.ingest_worker()
    h.wait_finished(len(sizes), sum(sizes) - 8)
    t_done = time.monotonic()
    result = h.verify(len(sizes), sum(sizes) - 8, failed_docs=1)
    with session_scope(h.sessions) as s:
        (uri, error), = s.execute(select(Document.source_uri, Document.error)
                                  .where(Document.state == "FAILED")).all()
    assert uri == "s3://faults/in/doc-007.pdf"
    assert error.startswith("ObjectChanged: ") and "deleted" in error and "\n" not in error
    _report("S3 object deleted between event and ingestion", sum(sizes) - 8, result, (t_fault,
            t_done, t_start), failed_document=f"{uri}: {error}")
