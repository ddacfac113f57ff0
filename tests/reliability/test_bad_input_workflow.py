"""Bad input at the workflow level: bad and good documents interleaved in one embedded run (real
SQLite store, real steps, real stage batcher and tiny model). Each bad document ends FAILED with
one clear line naming it and the reason, pages read before the damage are kept and classified,
the run goes on, and every good document is classified exactly once. Per-file decoding details
are tests/pipelines/test_bad_inputs.py; this is about rows and states."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from badinputs import MAX_PAGES, OCR_TIMEOUT_S, SLOW_OCR, write_bad
from relkit import record_result, write_corpus
from sqlalchemy import func, select

from db.models import Document, Page, Prediction
from db.session import session_scope
from pipelines.options import IngestOptions
from pipelines.sources import DocumentRef, path_to_uri, sha256_file
from workers.embedded import run_embedded

OPTIONS = IngestOptions(max_pages=MAX_PAGES)


def _rows(emb):
    with session_scope(emb.ctx.sessions) as s:
        docs = {d.source_uri: (d.state, d.error, d.page_count, d.id)
                for d in s.execute(select(Document)).scalars()}
        pages = [(p.document_id, p.number, p.state, p.error)
                 for p in s.execute(select(Page)).scalars()]
        preds = s.execute(select(Prediction.page_id, Prediction.pass_name)).all()
    return docs, pages, preds


def test_bad_documents_fail_alone_and_good_ones_are_classified_once(
    tmp_path: Path, make_embedded
) -> None:
    bad = write_bad(tmp_path / "bad")
    good = write_corpus(tmp_path / "good", [3, 2, 4, 1])
    twin = tmp_path / "good" / "same-bytes-other-name.pdf"
    twin.write_bytes(good[0].read_bytes())
    # Bad and good interleaved; the first good document is submitted twice (a duplicate upload).
    order: list[Path] = []
    bad_paths = list(bad)
    for i, g in enumerate([*good, twin]):
        order += [g, *bad_paths[i * 2 : i * 2 + 2]]
    order += [*bad_paths[len(order) - len(good) - 1:], good[0]]
    assert set(order) == set(bad_paths) | set(good) | {twin}
    documents = [DocumentRef(path_to_uri(p), sha256=sha256_file(p)) for p in order]

    emb = make_embedded(OPTIONS)
    t0 = time.perf_counter()
    summary = run_embedded(emb.ctx, emb.runtime, documents)
    seconds = time.perf_counter() - t0
    docs, pages, preds = _rows(emb)

    assert summary.completed is True
    assert len(docs) == len(bad) + len(good) + 1  # the duplicate registered once
    for path, (reason, kept) in bad.items():
        state, error, count, doc_id = docs[path_to_uri(path)]
        assert state == "FAILED", (path.name, state, error)
        assert error is not None and "\n" not in error
        assert error.startswith(f"{path.name}: ") and reason in error, error
        assert count == kept
        mine = [p for p in pages if p[0] == doc_id]
        assert len(mine) == kept and all(p[2] == "DONE" for p in mine)
    good_pages = 0
    for path in [*good, twin]:
        state, error, count, doc_id = docs[path_to_uri(path)]
        assert (state, error) == ("DONE", None)
        assert count == len([p for p in pages if p[0] == doc_id])
        good_pages += count
    assert good_pages == 3 + 2 + 4 + 1 + 3
    # Every page: DONE, exactly one early prediction, at most one full-depth one.
    assert {p[2] for p in pages} == {"DONE"}
    early = [pid for pid, pn in preds if pn == "early"]
    full = [pid for pid, pn in preds if pn == "full"]
    assert len(early) == len(set(early)) == len(pages)
    assert len(full) == len(set(full))

    # The same submission again changes nothing: no new rows, bad documents not retried.
    again = run_embedded(emb.ctx, emb.runtime, documents)
    assert again.pages_classified_this_run == 0
    assert _rows(emb) == (docs, pages, preds)

    for path, (_reason, kept) in bad.items():
        record_result({"fault": f"bad input: {path.name}", "kind": "bad_input",
                       "pages_in": kept, "pages_out": kept, "duplicates": 0,
                       "recover_s": None, "outcome": docs[path_to_uri(path)][1]})
    record_result({"fault": "bad input: duplicate upload (same uri+sha twice, and a twin)",
                   "kind": "bad_input",
                   "pages_in": good_pages + sum(kept for _, kept in bad.values()),
                   "pages_out": len(early),
                   "duplicates": len(early) - len(set(early)), "recover_s": None,
                   "outcome": f"{len(docs)} documents for {len(documents)} submissions; "
                              f"run took {seconds:.1f} s"})


@pytest.mark.parametrize("defer_ocr", [True, False], ids=["deferred-ocr", "ocr-at-ingest"])
def test_a_page_that_makes_tesseract_time_out(tmp_path: Path, make_embedded,
                                              defer_ocr: bool) -> None:
    """Deferred (the default), the ocr step fails that page with the reason and its document
    finishes; OCR at ingest, the document fails. Either way the other documents are
    classified once."""
    good = write_corpus(tmp_path / "good", [2, 3])
    name, build, reason = SLOW_OCR
    slow = tmp_path / name
    slow.write_bytes(build())
    documents = [DocumentRef(path_to_uri(p), sha256=sha256_file(p))
                 for p in (good[0], slow, good[1])]
    emb = make_embedded(IngestOptions(ocr_timeout_s=OCR_TIMEOUT_S, defer_ocr=defer_ocr))
    if defer_ocr:  # an OCR-free exit that settles nothing: `run` defers only with an exit
        emb.runtime.model.ocr_free = {"temperature": 1.0, "threshold": 2.0}
    t0 = time.perf_counter()
    summary = run_embedded(emb.ctx, emb.runtime, documents)
    docs, pages, preds = _rows(emb)
    slow_id = docs[path_to_uri(slow)][3]
    if defer_ocr:
        assert docs[path_to_uri(slow)][0] == "DONE"
        assert summary.documents_by_state == {"DONE": 3}
        [(_, _, state, error)] = [p for p in pages if p[0] == slow_id]
        assert state == "FAILED" and reason.removeprefix("page 1: ") in error
        outcome = error
    else:
        assert docs[path_to_uri(slow)][:2] == ("FAILED", f"{name}: {reason}")
        assert summary.documents_by_state == {"DONE": 2, "FAILED": 1}
        outcome = docs[path_to_uri(slow)][1]
    good_pages = [p for p in pages if p[0] != slow_id]
    assert len(good_pages) == 5 and all(p[2] == "DONE" for p in good_pages)
    assert len([p for p, n in preds if n == "early"]) == 5  # the good pages, once each
    record_result({"fault": f"bad input: {name} (tesseract timeout, "
                            f"{'deferred OCR' if defer_ocr else 'OCR at ingest'})",
                   "kind": "bad_input", "pages_in": 6 if defer_ocr else 5,
                   "pages_out": len(pages), "duplicates": 0, "recover_s": None,
                   "outcome": outcome, "run_s": round(time.perf_counter() - t0, 2)})


def test_a_crashing_document_does_not_stop_the_run(tmp_path: Path, make_embedded) -> None:
    """A document whose source vanishes between registration and ingestion (an unexpected
    error, not a DocumentError) is FAILED with its reason; the others are classified."""
    good = write_corpus(tmp_path / "good", [2, 2])
    gone = tmp_path / "good" / "gone.pdf"
    gone.write_bytes(good[0].read_bytes() + b"\n")
    documents = [DocumentRef(path_to_uri(p), sha256=sha256_file(p))
                 for p in (good[0], gone, good[1])]
    gone.unlink()
    emb = make_embedded()
    summary = run_embedded(emb.ctx, emb.runtime, documents)
    docs, pages, preds = _rows(emb)
    state, error, _, _ = docs[path_to_uri(gone)]
    assert state == "FAILED" and "gone.pdf" in error and "\n" not in error
    assert summary.documents_by_state == {"DONE": 2, "FAILED": 1}
    assert len(pages) == 4 and len({p for p, n in preds if n == "early"}) == 4
    with session_scope(emb.ctx.sessions) as s:
        assert s.execute(select(func.count()).select_from(Page)).scalar() == 4
