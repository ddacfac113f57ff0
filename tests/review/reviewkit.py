"""A store to review and the review app served for real: documents, pages with artifacts (a
drawn raster, as ingest stores it) and predictions written through db.repository, and the app
on a free loopback port in a uvicorn thread."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image, ImageDraw
from sqlalchemy.orm import Session, sessionmaker

from db import repository as repo
from db.session import make_engine, migrate, session_factory, session_scope
from doctriage.review.app import ReviewConfig, create_app
from doctriage.review.serving import listen, make_server
from pipelines.artifacts import LocalArtifactStore, encode_page, page_key
from pipelines.page_content import Page

# The bundle's classes (12: keys 1-9, 0, a, b)
LABELS = ("letter", "form", "email", "handwritten", "advertisement", "scientific_report",
          "budget", "invoice", "memo", "news_article", "resume", "questionnaire")
RASTER = (300, 420)  # under the artifact's 448 px bound: stored as drawn
VERSION = "tiny-0123456789ab"


@dataclass(frozen=True)
class Stored:
    """What the store holds for one page: its early and full answers (None: no row), and
    whether review should list it."""

    early: str | None
    early_conf: float | None
    full: str | None
    full_conf: float | None
    listed: bool
    reason: str | None = None  # why full depth ran (or was asked for)
    audit: bool = False  # drawn for the audit sample

    @property
    def suggested(self) -> str:
        return self.full if self.full is not None else str(self.early)


def _raster(text: str) -> Image.Image:
    image = Image.new("RGB", RASTER, "white")
    ImageDraw.Draw(image).text((20, 20), text, fill="black")
    return image


def add_page(s: Session, artifacts: LocalArtifactStore, uri: str, number: int,
             spec: Stored) -> int:
    """One page of document `uri` with its artifact and predictions."""
    reason, audit = spec.reason, spec.audit
    doc_id, _ = repo.register_document(s, uri, sha256=hashlib.sha256(uri.encode()).hexdigest())
    page = Page(number=number, width=850, height=1100, image=_raster(f"{uri} p{number}"),
                words=["hello"], boxes=[(10, 10, 100, 40)], text_source="text_layer")
    key = artifacts.put(page_key(doc_id, number), encode_page(page))
    (pid,) = repo.upsert_pages(s, doc_id, [repo.PageRecord(number, "text_layer", 1, key,
                                                           850, 1100)])
    rows = []
    if spec.early is not None:
        rows.append(repo.PredictionRecord(pid, VERSION, "early", spec.early,
                                          float(spec.early_conf or 0.0), 1, 2, [0.2, 0.3], 1.0,
                                          f"{VERSION}+p1", reason, audit))
    if spec.full is not None:
        rows.append(repo.PredictionRecord(pid, VERSION, "full", spec.full,
                                          float(spec.full_conf or 0.0), 3, 6, [0.3], 2.0,
                                          f"{VERSION}+p1", reason or "manual", audit,
                                          [(spec.full, float(spec.full_conf or 0.0))] * 4))
    repo.record_predictions(s, rows)
    return pid


def fill(sessions: sessionmaker[Session], artifacts: LocalArtifactStore) -> dict[int, Stored]:
    """24 pages in 6 documents: 20 to review (12 early/full disagreements, 8 below 0.6) and 4
    not (confident, agreeing, or already labelled). Returns each page's answers by id."""
    specs: list[Stored] = []
    for i in range(12):  # disagreements: 8 drawn for the audit, 4 re-routed for low confidence
        audit = i < 8
        specs.append(Stored(LABELS[i % 12], 0.9 if audit else 0.4, LABELS[(i + 3) % 12],
                            0.7 + i / 100, True, "audit_sample" if audit else "low_confidence",
                            audit))
    for i in range(4):  # low confidence, full pass still to run
        specs.append(Stored(LABELS[i], 0.3 + i / 20, None, None, True, "low_confidence"))
    for i in range(4):  # full depth agrees, but below the bar
        specs.append(Stored(LABELS[i + 4], 0.45, LABELS[i + 4], 0.5 + i / 100, True,
                            "low_confidence"))
    specs.append(Stored("memo", 0.95, None, None, False))  # confident
    specs.append(Stored("memo", 0.97, None, None, False))
    specs.append(Stored("invoice", 0.9, "invoice", 0.93, False, "audit_sample", True))
    specs.append(Stored("letter", 0.9, "form", 0.8, False, "audit_sample", True))  # labelled
    out: dict[int, Stored] = {}
    with session_scope(sessions) as s:
        for n, spec in enumerate(specs):
            uri = f"file:///srv/drops/batch-{n // 4}.pdf"
            out[add_page(s, artifacts, uri, n % 4 + 1, spec)] = spec
        labelled = max(out)
        repo.add_human_label(s, labelled, "form", "earlier-reviewer")
    return out


def sqlite_store(root: Path) -> tuple[sessionmaker[Session], LocalArtifactStore]:
    engine = make_engine(f"sqlite:///{root / 'store.db'}")
    migrate(engine)
    return session_factory(engine), LocalArtifactStore(root / "artifacts")


@contextlib.contextmanager
def serving(config: ReviewConfig) -> Iterator[str]:
    """The app on a free port of 127.0.0.1, in a thread; yields its base URL."""
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = make_server(create_app(config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def cookies(self) -> dict[str, str]:
        out = {}
        for header in self.headers.get_all("set-cookie") or []:
            name, _, rest = header.partition("=")
            out[name] = rest.split(";", 1)[0]
        return out


def request(url: str, *, method: str = "GET", body: dict[str, str] | None = None,
            headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None
            ) -> Answer:
    """One HTTP request, redirects not followed (http.client: what the server said)."""
    from urllib.parse import urlencode

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    sent: dict[str, Any] = dict(headers or {})
    if cookies:
        sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    data = None
    if body is not None:
        data = urlencode(body)
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, path or "/", body=data, headers=sent)
        reply = conn.getresponse()
        return Answer(reply.status, reply.headers, reply.read())
    finally:
        conn.close()
