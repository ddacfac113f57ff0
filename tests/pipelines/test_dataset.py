"""DATA folders: manifest or class sub-folders, document-level seeded stratified split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from pipelines.dataset import DatasetError, read_documents, split_documents


def make_folder(root: Path, per_class: dict[str, int]) -> Path:
    for label, n in per_class.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / label / f"{label}, doc {i}.pdf").write_bytes(b"%PDF-1.4 stub")
    return root


def write_pdf_classes(root: Path, *page_lines: str) -> Path:
    """Classes a and b, one PDF each, one page per line (`{label}` filled in)."""
    from reportlab.pdfgen import canvas

    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        c = canvas.Canvas(str(root / label / "x.pdf"))
        for line in page_lines:
            c.drawString(72, 720, line.format(label=label))
            c.showPage()
        c.save()
    return root


def test_subfolders_and_manifest_agree(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 3, "b": 4})
    docs = read_documents(root)
    assert len(docs) == 7 and {d.label for d in docs} == {"a", "b"}
    with open(root / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "extra"])
        for d in docs:
            w.writerow([d.key, d.label, "ignored"])
    assert read_documents(root) == docs


def test_split_is_by_document_seeded_and_stratified(tmp_path):
    root = make_folder(tmp_path / "d", {"a": 10, "b": 10, "c": 2})
    docs = read_documents(root)
    train, val = split_documents(docs, 0.2, seed=7)
    assert not {d.key for d in train} & {d.key for d in val}
    assert len(train) + len(val) == len(docs)
    assert sorted(d.label for d in val) == ["a", "a", "b", "b", "c"]
    assert split_documents(docs, 0.2, seed=7) == (train, val)
    assert split_documents(docs, 0.2, seed=8)[1] != val


def test_bad_data_folders(tmp_path):
    with pytest.raises(DatasetError, match="no such folder"):
        read_documents(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no documents"):
        read_documents(tmp_path / "empty")
    root = make_folder(tmp_path / "m", {"a": 1, "b": 1})
    (root / "manifest.csv").write_text("path,label\nmissing.pdf,a\n")
    with pytest.raises(DatasetError, match="missing"):
        read_documents(root)


def test_page_cache_is_written_once_and_reused(tmp_path, monkeypatch):
    from pipelines.dataset import PageCache

    docs = read_documents(write_pdf_classes(tmp_path / "d", "hello {label} world", "second page"))
    pages, errors = PageCache(tmp_path / "cache", 64).load(docs)
    assert not errors and len(pages) == 4
    assert pages[0].words[:2] == ["hello", "a"] and pages[0].image.size == (64, 64)
    assert all(0 <= v <= 1000 for p in pages for b in p.boxes for v in b)

    import pipelines.pages

    def boom(*_a, **_k):
        raise AssertionError("re-ingested a cached document")

    monkeypatch.setattr(pipelines.pages, "iter_pages", boom)
    again, _ = PageCache(tmp_path / "cache", 64).load(docs)
    assert [(p.doc_key, p.number, p.words) for p in again] == [
        (p.doc_key, p.number, p.words) for p in pages
    ]
    assert again[1].image.tobytes() == pages[1].image.tobytes()


def test_unreadable_document_is_skipped_with_its_error(tmp_path):
    from pipelines.dataset import PageCache

    root = make_folder(tmp_path / "d", {"a": 1, "b": 1})
    pages, errors = PageCache(tmp_path / "cache", 64).load(read_documents(root))
    assert pages == [] and len(errors) == 2 and all(":" in e for e in errors)


def test_page_cache_ingests_in_worker_processes_as_it_does_in_one(tmp_path):
    from pipelines.dataset import PageCache

    docs = read_documents(write_pdf_classes(tmp_path / "d", "page of {label}"))
    ticks: list[tuple[int, int]] = []
    pool = PageCache(tmp_path / "pool", 32)
    pooled, errors = pool.load(docs, workers=2, progress=lambda d, t: ticks.append((d, t)))
    alone, _ = PageCache(tmp_path / "one", 32).load(docs)
    assert not errors and ticks == [(0, 2), (1, 2), (2, 2)]
    assert [(p.doc_key, p.number, p.words, p.width) for p in pooled] == [
        (p.doc_key, p.number, p.words, p.width) for p in alone
    ]
    assert [p.doc_key for p in pooled] == ["a/x.pdf", "b/x.pdf"]

    assert pooled[0].width > 32  # the ingest raster's size, not the cached raster's


def test_a_cache_entry_written_without_the_raster_size_still_reads(tmp_path):
    """Entries from before pages.json kept width/height read the cached raster's size."""

    from pipelines.dataset import PageCache

    docs = read_documents(write_pdf_classes(tmp_path / "d", "page of {label}"))
    cache = PageCache(tmp_path / "cache", 32)
    fresh, _ = cache.load(docs)
    meta_file = cache.entry(docs[0]) / "pages.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps([
        {k: v for k, v in p.items() if k not in ("width", "height")} for p in meta
    ]))
    old, _ = cache.load(docs)
    assert (old[0].width, old[0].height) == (32, 32) and old[0].words == fresh[0].words
    assert old[1].width == fresh[1].width > 32


def test_scan_copies_of_born_digital_pdfs_are_ocrd_scans_under_their_own_key(tmp_path):
    """A born-digital training PDF also trains as a simulated scan: same label, its own key
    and cache entry, text from OCR (not the text layer), damage fixed by the seed."""
    from pipelines.dataset import PageCache, born_digital, scan_copies

    line = "INVOICE number {label} total amount due payment terms"
    docs = read_documents(write_pdf_classes(tmp_path / "d", line))
    cache = PageCache(tmp_path / "cache", 64)
    pages, _ = cache.load(docs)
    assert all(born_digital(d, pages) for d in docs)

    assert scan_copies(docs, pages, 0.0, seed=0) == []
    half = scan_copies(docs, pages, 0.5, seed=0)
    assert len(half) == 1 and half == scan_copies(docs, pages, 0.5, seed=0)  # seeded
    copies = scan_copies(docs, pages, 1.0, seed=0)
    assert [(c.key, c.label) for c in copies] == [("a/x.pdf#scan", "a"), ("b/x.pdf#scan", "b")]
    assert len({cache.entry(d) for d in [*docs, *copies]}) == 4  # originals' keys unchanged

    scanned, errors = cache.load(copies)
    assert not errors and [p.doc_key for p in scanned] == ["a/x.pdf#scan", "b/x.pdf#scan"]
    assert all(p.text_source == "ocr" for p in scanned)
    assert {"INVOICE", "payment"} & set(scanned[0].words)
    assert scanned[0].image.tobytes() != pages[0].image.tobytes()
    assert not any(born_digital(c, scanned) for c in copies)  # a scan is not born digital
    # The same seed gives the same damage: a second cache reads the same words.
    again, _ = PageCache(tmp_path / "again", 64).load(copies)
    assert [p.words for p in again] == [p.words for p in scanned]


def test_options_added_later_keep_existing_cache_keys(tmp_path):
    """A cache filled before ocr_psm and defer_ocr existed is still read with the default mode;
    another mode is another entry; deferring OCR in the service never changes an entry (the
    cache reads every page's words)."""
    from dataclasses import asdict

    from pipelines.dataset import CACHE_VERSION, _cache_key
    from pipelines.options import IngestOptions

    doc = tmp_path / "a.pdf"
    doc.write_bytes(b"%PDF-1.4 stub")
    old = {k: v for k, v in asdict(IngestOptions()).items() if k not in ("ocr_psm", "defer_ocr")}
    made = json.dumps({"v": CACHE_VERSION, "size": 64, **old}, sort_keys=True)
    import hashlib

    digest = hashlib.sha256(doc.read_bytes()).hexdigest()[:32]
    before = f"{digest}-{hashlib.sha256(made.encode()).hexdigest()[:12]}"
    assert _cache_key(doc, IngestOptions(), 64) == before
    assert _cache_key(doc, IngestOptions(ocr_psm=6), 64) != before
    assert _cache_key(doc, IngestOptions(defer_ocr=False), 64) == before
