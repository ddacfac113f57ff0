"""S3 polling against moto's real HTTP server: each object is registered once, an idle poll is
one cheap request, keys that sort before the high-water mark are found by the sweep, and
non-documents are skipped with a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from drops_helpers import ListCounter, make_pdf
from sqlalchemy import select

from db.models import Document
from db.session import session_scope
from db.states import DocumentState
from pipelines.s3 import (
    ObjectChanged,
    PollMark,
    S3Object,
    S3Options,
    S3Source,
    S3UriError,
    key_problem,
    object_uri,
    parse_s3_uri,
    poll,
    skip_reason,
    sniff_type,
    split_object_uri,
)
from workers.intake.registration import register_documents


def _register(store: Any, source: S3Source, objects: Any) -> Any:
    """The watch path: listed objects -> references -> the one registration path."""
    return register_documents(store, source.refs(objects), screen=source.screen)


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://b/in/2026/").bucket == "b"
    assert parse_s3_uri("s3://b/in/2026/").prefix == "in/2026/"
    assert parse_s3_uri("s3://b").prefix == ""
    for bad in ("b/x", "s3:///x", "file:///x", "s3://b c/x"):
        with pytest.raises(S3UriError):
            parse_s3_uri(bad)


@pytest.mark.parametrize("key", ["a b,c.pdf", "dir/ünï.pdf", "100%?#x.pdf", "tab\there.pdf"])
def test_object_uri_round_trips_any_key(key: str) -> None:
    uri = object_uri("bkt", key)
    assert "\t" not in uri
    assert split_object_uri(uri) == ("bkt", key)


def test_key_problems() -> None:
    assert key_problem("in/a.pdf") is None
    assert key_problem("in/../etc/passwd.pdf").startswith("rejected key")
    assert key_problem("in/./a.pdf").startswith("rejected key")
    assert "NUL" in key_problem("a\x00.pdf")
    assert key_problem("a\x1b[31m.pdf").startswith("rejected key")
    assert key_problem("a..b.pdf") is None  # dots inside a name are fine


def test_sniff_and_skip_reasons() -> None:
    assert sniff_type(b"%PDF-1.7\n") == "pdf"
    assert sniff_type(b"\x89PNG\r\n\x1a\n....") == "png"
    assert sniff_type(b"II*\x00") == "tiff"
    assert sniff_type(b"hello") is None
    assert skip_reason(S3Object("b", "d/", "e", size=0)) == "folder marker"
    assert skip_reason(S3Object("b", "x.pdf", "e", size=0)) == "zero bytes"
    assert skip_reason(S3Object("b", "x.pdf", "e", size=10)) is None
    assert skip_reason(S3Object("b", "x.txt", "e", size=5), b"hello").startswith("unknown type")
    assert skip_reason(S3Object("b", "scan", "e", size=5), b"%PDF-1.4") is None


def _uris(factory: Any) -> dict[str, tuple[str, str | None]]:
    with session_scope(factory) as s:
        rows = s.execute(select(Document.source_uri, Document.state, Document.error))
        return {u: (st, err) for u, st, err in rows}


def test_poll_registers_each_pdf_once_and_idle_poll_is_one_request(
    s3: Any, bucket: str, s3_options: S3Options, any_store: Any
) -> None:
    store = any_store
    for name in ("2026/01/a.pdf", "2026/01/b.pdf", "2026/02/c.pdf"):
        s3.put_object(Bucket=bucket, Key=f"in/{name}", Body=make_pdf(name))
    s3.put_object(Bucket=bucket, Key="elsewhere/x.pdf", Body=make_pdf("x"))
    counter = ListCounter(s3)
    source = S3Source(f"s3://{bucket}/in/", s3, s3_options)

    first = poll(source, PollMark())
    assert first.swept and len(first.objects) == 3
    got = _register(store, source, first.objects)
    assert len(got.new_ids) == 3 and not got.skipped

    # Nothing changed: one ListObjectsV2 request (StartAfter the high-water key), nothing new.
    calls = counter.calls
    second = poll(source, first.mark)
    assert not second.swept
    assert counter.calls - calls == 1 == second.list_requests
    assert second.objects == []
    assert _register(store, source, second.objects).new_ids == []

    # A later key is found by the tail listing at once, in one request.
    s3.put_object(Bucket=bucket, Key="in/2026/03/d.pdf", Body=make_pdf("d"))
    third = poll(source, second.mark)
    assert [o.key for o in third.objects] == ["in/2026/03/d.pdf"] and third.list_requests == 1
    assert len(_register(store, source, third.objects).new_ids) == 1

    # Re-registering everything again (a redelivery, an overlap) creates nothing.
    again = _register(store, source, first.objects + third.objects)
    assert again.new_ids == [] and again.known == 4
    assert len(_uris(store)) == 4


def test_sweep_finds_keys_before_the_high_water_mark_and_replaced_objects(
    s3: Any, bucket: str, s3_options: S3Options, store: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="m.pdf", Body=make_pdf("m"))
    source = S3Source(f"s3://{bucket}/", s3, S3Options(s3_options.endpoint_url, sweep_every_s=600))
    t0 = datetime.now(UTC)
    r = poll(source, PollMark(), now=t0)
    _register(store, source, r.objects)

    s3.put_object(Bucket=bucket, Key="a-early.pdf", Body=make_pdf("early"))  # sorts before "m"
    s3.put_object(Bucket=bucket, Key="m.pdf", Body=make_pdf("m, second version"))  # replaced
    tail = poll(source, r.mark, now=t0 + timedelta(seconds=5))
    assert tail.objects == [] and not tail.swept  # out of the tail's reach, by design

    sweep = poll(source, tail.mark, now=t0 + timedelta(seconds=601))
    assert sweep.swept
    got = _register(store, source, sweep.objects)
    assert len(got.new_ids) == 2
    uris = _uris(store)
    assert object_uri(bucket, "a-early.pdf") in uris
    with session_scope(store) as s:
        versions = s.execute(
            select(Document.version_key).where(Document.source_uri == object_uri(bucket, "m.pdf"))
        ).scalars().all()
    assert len(set(versions)) == 2  # both versions of m.pdf, each registered once

    # The mark round-trips through its JSON form.
    assert PollMark.from_json(sweep.mark.to_json()) == sweep.mark


def test_pagination_is_counted(s3: Any, bucket: str, s3_options: S3Options) -> None:
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"p/{i:03d}.pdf", Body=b"%PDF-1.4 tiny")
    source = S3Source(f"s3://{bucket}/p/", s3, S3Options(s3_options.endpoint_url, page_size=2))
    first = poll(source, PollMark())
    assert len(first.objects) == 5 and first.list_requests == 3
    assert poll(source, first.mark).list_requests == 1


def test_non_documents_are_skipped_with_a_reason(
    s3: Any, bucket: str, s3_options: S3Options, store: Any
) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
    objects = {
        "in/folder/": b"",
        "in/empty.pdf": b"",
        "in/notes.txt": b"just some text",
        "in/no-suffix-scan": png,  # unknown suffix, but the bytes are a PNG: a document
        "in/../escape.pdf": make_pdf("x"),
        "in/bell\x07.pdf": make_pdf("x"),
        "in/good.pdf": make_pdf("good"),
    }
    for key, body in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    source = S3Source(f"s3://{bucket}/in/", s3, s3_options)
    listed = poll(source, PollMark()).objects
    assert {o.key for o in listed} == set(objects)
    got = _register(store, source, listed)
    assert len(got.new_ids) == 2  # good.pdf and the sniffed PNG
    rows = _uris(store)
    reason = {k: rows[object_uri(bucket, k)] for k in objects}
    assert reason["in/folder/"] == (DocumentState.SKIPPED, "folder marker")
    assert reason["in/empty.pdf"] == (DocumentState.SKIPPED, "zero bytes")
    assert reason["in/notes.txt"][1].startswith("unknown type: suffix .txt")
    assert reason["in/../escape.pdf"][1].startswith("rejected key")
    assert reason["in/bell\x07.pdf"][1].startswith("rejected key")
    assert reason["in/no-suffix-scan"] == (DocumentState.RECEIVED, None)
    assert reason["in/good.pdf"] == (DocumentState.RECEIVED, None)
    # Skipped once means skipped for good: a second pass registers and sniffs nothing.
    assert _register(store, source, listed).known == len(objects)
    # The source protocol (used by `doctriage run s3://...`): every object, from one listing,
    # with the listing's reasons; its screen sniffs the rest and leaves the documents.
    calls = source.list_requests
    refs = list(source)
    assert source.list_requests == calls + 1 and len(refs) == len(objects)
    screened = {r.uri: r.skip for r in source.screen(refs)}
    assert sorted(u for u, skip in screened.items() if skip is None) == sorted(
        object_uri(bucket, k) for k in ("in/good.pdf", "in/no-suffix-scan"))
    assert screened[object_uri(bucket, "in/notes.txt")] == reason["in/notes.txt"][1]
    assert screened[object_uri(bucket, "in/folder/")] == "folder marker"


def test_open_notices_a_replaced_object(s3: Any, bucket: str, s3_options: S3Options) -> None:
    s3.put_object(Bucket=bucket, Key="r.pdf", Body=make_pdf("one"))
    source = S3Source(f"s3://{bucket}/", s3, s3_options)
    (obj,) = list(source.list_objects())
    with source.open(obj.uri, etag=obj.etag) as body:
        assert body.read(5) == b"%PDF-"
    s3.put_object(Bucket=bucket, Key="r.pdf", Body=make_pdf("two"))
    with pytest.raises(ObjectChanged):
        source.open(obj.uri, etag=obj.etag)


def test_s3_artifact_store_and_opener(s3: Any, bucket: str, s3_options: S3Options) -> None:
    from pipelines.artifacts import ArtifactNotFound
    from pipelines.s3 import S3ArtifactStore, register_s3_opener
    from pipelines.sources import open_uri

    store = S3ArtifactStore.from_url(f"s3://{bucket}/artifacts",
                                     endpoint_url=s3_options.endpoint_url)
    assert store.put("documents/1/page-00001.json", b'{"x": 1}') == "documents/1/page-00001.json"
    assert store.get("documents/1/page-00001.json") == b'{"x": 1}'
    assert s3.head_object(Bucket=bucket, Key="artifacts/documents/1/page-00001.json")
    with pytest.raises(ArtifactNotFound):
        store.get("documents/2/page-00001.json")
    with pytest.raises(ValueError):
        store.put("../outside.json", b"{}")

    s3.put_object(Bucket=bucket, Key="in/a b.pdf", Body=make_pdf("a"))
    register_s3_opener(s3_options)
    with open_uri(object_uri(bucket, "in/a b.pdf")) as fh:
        assert fh.seekable() and fh.read(5) == b"%PDF-"
