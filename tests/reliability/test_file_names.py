"""File names round-trip as bytes (issue 16, defect 5): a local file whose name is not UTF-8
(Latin-1 b"r\\xe9sum\\xe9.pdf") is registered, opened and classified like any other, its URI
stays percent-escaped ASCII in the store (PostgreSQL text takes no lone surrogate), and its name
is shown with the undecodable bytes escaped (``r\\xe9sum\\xe9.pdf``) in every error and summary.
Before the fix the URI's escapes were decoded as UTF-8, so the file was looked for under
"r\\ufffdsum\\ufffd.pdf" and the document ended FAILED with FileNotFoundError."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from relkit import submit_in_process, text_pdf_bytes
from servicekit import fresh_pg_database
from sqlalchemy import select

from db.models import Document
from db.session import make_engine, migrate, session_factory, session_scope
from pipelines.artifacts import LocalArtifactStore
from pipelines.options import IngestOptions
from pipelines.sources import LocalSource, name_of, path_to_uri, uri_to_path
from workers import steps
from workers.embedded import run_embedded
from workers.steps import RerouteOptions, StepContext

EXE = str(Path(sys.executable).with_name("doctriage"))
LATIN1 = b"r\xe9sum\xe9.pdf"  # "résumé.pdf" in Latin-1: not valid UTF-8
SHOWN = "r\\xe9sum\\xe9.pdf"  # how people see it: the bytes escaped, one line, printable


def _write(folder: Path, name: bytes, data: bytes) -> Path:
    """Create a file under a bytes name (as a Latin-1 system or an old archive would)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(os.fsencode(folder) + b"/" + name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return folder / os.fsdecode(name)


def _documents(sessions) -> dict[str, tuple[str, str | None, int | None]]:
    with session_scope(sessions) as s:
        return {d.source_uri: (d.state, d.error, d.page_count)
                for d in s.execute(select(Document)).scalars()}


@pytest.mark.parametrize("name", [LATIN1, b"caf\xc3\xa9 50%25 #1?.pdf", b"x\xff\xfe\x80.pdf",
                                  b"a%E9b.pdf"])
def test_file_uri_round_trips_the_name_bytes(tmp_path: Path, name: bytes) -> None:
    path = _write(tmp_path, name, b"%PDF-1.4\n")
    uri = path_to_uri(path)
    assert uri.isascii() and uri.startswith("file:///")
    assert os.fsencode(uri_to_path(uri)) == os.fsencode(path.resolve())
    with open(uri_to_path(uri), "rb") as fh:
        assert fh.read() == b"%PDF-1.4\n"
    shown = name_of(uri)
    shown.encode("utf-8")  # printable and storable: no lone surrogate
    assert shown == name.decode("utf-8", "backslashreplace")


def test_run_classifies_a_latin1_named_file(tmp_path: Path, tiny_bundle: Path) -> None:
    """`doctriage run` as a user runs it, on the embedded default store (SQLite under
    DOCTRIAGE_HOME): a folder holding a good Latin-1-named PDF and a bad one, and a Latin-1
    file named on the command line (its argv bytes)."""
    home = tmp_path / "home"
    home.mkdir()
    good = _write(tmp_path / "in", LATIN1, text_pdf_bytes(2, tag="resume"))
    _write(tmp_path / "in", b"bad\xff.pdf", b"this is not a document at all")
    named = _write(tmp_path / "other", b"caf\xe9.pdf", text_pdf_bytes(1, tag="cafe"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("DOCTRIAGE_") or k == "DOCTRIAGE_REALDOCS"}
    env["DOCTRIAGE_HOME"] = str(home)
    out = subprocess.run(
        [EXE, "run", str(tmp_path / "in"), os.fsencode(named), "--model", str(tiny_bundle)],
        capture_output=True, env=env, cwd=home, timeout=300,
    )
    stdout = out.stdout.decode("utf-8")  # strict: nothing undecodable was printed
    assert out.returncode == 1, out.stderr.decode("utf-8", "replace")  # the bad file failed
    lines = stdout.splitlines()
    rows = {line.split()[0]: line.split()[1:3] for line in lines if "page" in line.split()[2:3]
            or "pages" in line.split()[2:3]}
    assert rows[SHOWN] == ["2", "pages"] and rows["caf\\xe9.pdf"] == ["1", "page"], stdout
    assert rows["bad\\xff.pdf"] == ["0", "pages"], stdout
    failed = [line for line in lines if line.startswith("failed: ")]
    assert failed == ["failed: bad\\xff.pdf: not a PDF, TIFF, PNG or JPEG file "
                      "(it starts with b'this is ')"], stdout
    assert "\ufffd" not in stdout + out.stderr.decode("utf-8")

    engine = make_engine(f"sqlite:///{home / 'doctriage.db'}")
    try:
        docs = _documents(session_factory(engine))
    finally:
        engine.dispose()
    assert docs[path_to_uri(good)] == ("DONE", None, 2)
    assert docs[path_to_uri(named)] == ("DONE", None, 1)
    assert sorted(state for state, _, _ in docs.values()) == ["DONE", "DONE", "FAILED"]
    assert all(uri.isascii() for uri in docs)


@contextlib.contextmanager
def _store(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        with fresh_pg_database("doctriage_names") as url:
            yield url


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.services)]
)
def test_submit_registers_and_ingest_opens_a_latin1_named_file(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`doctriage submit` registers the file under its byte-exact, ASCII URI; the ingest step
    (what the ingest worker runs) then opens it. A Latin-1-named file gone before ingest fails
    with its name escaped: the error holds no lone surrogate, which PostgreSQL would refuse."""
    good = _write(tmp_path / "in", LATIN1, text_pdf_bytes(2, tag="resume"))
    gone = _write(tmp_path / "in", b"gone\xe9.pdf", text_pdf_bytes(1, tag="gone"))
    with _store(backend, tmp_path) as url:
        result, queued = submit_in_process(monkeypatch, tmp_path / "in", tmp_path / "home", url)
        assert result.exit_code == 0, result.output
        assert "submit: 2 documents, 2 new, 2 queued for ingest" in result.output
        gone.unlink()  # after registration, before the worker opens it

        engine = make_engine(url)
        try:
            ctx = StepContext(sessions=session_factory(engine),
                              artifacts=LocalArtifactStore(tmp_path / "artifacts"),
                              ingest=IngestOptions(), reroute=RerouteOptions())
            with session_scope(ctx.sessions) as s:
                ids = {d.source_uri: d.id for d in s.execute(select(Document)).scalars()}
            assert sorted(queued) == sorted(ids.values())
            result_good = steps.ingest_document(ctx, ids[path_to_uri(good)])
            assert result_good.state == "INGESTED" and len(result_good.page_ids) == 2
            gone_id = ids[path_to_uri(gone)]
            with pytest.raises(FileNotFoundError) as caught:
                steps.ingest_document(ctx, gone_id)
            # what the task records once the retries are spent (workers.tasks._reason)
            steps.fail_document(ctx, gone_id, f"{type(caught.value).__name__}: {caught.value}")
            docs = _documents(ctx.sessions)
        finally:
            engine.dispose()
    assert docs[path_to_uri(good)][:2] == ("INGESTED", None)
    state, error, _ = docs[path_to_uri(gone)]
    assert state == "FAILED"
    assert error is not None and error.startswith("FileNotFoundError: [Errno 2] No such file")
    error.encode("utf-8")  # storable: no lone surrogate (the OSError's repr of the name)
    assert error.endswith("/in/gone\\udce9.pdf'"), error


@pytest.mark.services
def test_embedded_run_on_postgresql_stores_latin1_names(tmp_path: Path, tiny_model) -> None:
    """The steps with PostgreSQL as the store: the Latin-1-named document is DONE, the bad one
    FAILED with its name escaped in the stored error."""
    from classifier.predict import BatcherOptions, ClassifyRuntime

    good = _write(tmp_path / "in", LATIN1, text_pdf_bytes(2, tag="resume"))
    bad = _write(tmp_path / "in", b"bad\xe9.pdf", b"this is not a document at all")
    with fresh_pg_database("doctriage_names") as url:
        engine = make_engine(url)
        try:
            migrate(engine)
            ctx = StepContext(sessions=session_factory(engine),
                              artifacts=LocalArtifactStore(tmp_path / "artifacts"),
                              ingest=IngestOptions(),
                              reroute=RerouteOptions(reroute_below=0.7, audit_fraction=0.1))
            runtime = ClassifyRuntime(tiny_model, BatcherOptions(max_batch=8))
            summary = run_embedded(ctx, runtime, LocalSource([tmp_path / "in"]))
            docs = _documents(ctx.sessions)
        finally:
            engine.dispose()
    assert docs[path_to_uri(good)] == ("DONE", None, 2)
    assert docs[path_to_uri(bad)][:2] == (
        "FAILED", "bad\\xe9.pdf: not a PDF, TIFF, PNG or JPEG file (it starts with b'this is ')")
    assert summary.pages == 2
    names = [d.name for d in summary.per_document]
    assert SHOWN in names and "bad\\xe9.pdf" in names, names


def test_errors_escape_a_names_undecodable_bytes() -> None:
    """A path from os.fsdecode holds lone surrogates for the bytes that are not UTF-8: a stored
    or printed error shows them as the bytes (\\xe9), never as a character no encoder accepts."""
    from pipelines.errors import DocumentError, one_line
    from workers.redaction import stored_error

    name = os.fsdecode(b"r\xe9sum\xe9\n.pdf")
    assert one_line(name) == "r\\xe9sum\\xe9\\n.pdf"
    assert str(DocumentError(name, "not a PDF")) == "r\\xe9sum\\xe9\\n.pdf: not a PDF"
    assert stored_error(f"RuntimeError: cannot read {name}") == (
        "RuntimeError: cannot read r\\xe9sum\\xe9 .pdf")
    assert one_line("\ud800") == "\\ud800"  # any other lone surrogate: as repr() writes it
