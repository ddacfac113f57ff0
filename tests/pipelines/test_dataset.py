"""DATA folders: manifest or class sub-folders, document-level seeded stratified split."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from pipelines.dataset import DatasetError, read_documents, split_documents


def make_folder(root: Path, per_class: dict[str, int]) -> Path:
    for label, n in per_class.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / label / f"{label}, doc {i}.pdf").write_bytes(b"%PDF-1.4 stub")
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
    from reportlab.pdfgen import canvas

    from pipelines.dataset import load_pages

    root = tmp_path / "d"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        c = canvas.Canvas(str(root / label / "x.pdf"))
        c.drawString(72, 720, f"hello {label} world")
        c.showPage()
        c.drawString(72, 720, "second page")
        c.save()
    docs = read_documents(root)
    pages, errors = load_pages(docs, tmp_path / "cache", 64)
    assert not errors and len(pages) == 4
    assert pages[0].words[:2] == ["hello", "a"] and pages[0].image.size == (64, 64)
    assert all(0 <= v <= 1000 for p in pages for b in p.boxes for v in b)

    import pipelines.pages

    def boom(*_a, **_k):
        raise AssertionError("re-ingested a cached document")

    monkeypatch.setattr(pipelines.pages, "iter_pages", boom)
    again, _ = load_pages(docs, tmp_path / "cache", 64)
    assert [(p.doc_key, p.number, p.words) for p in again] == [
        (p.doc_key, p.number, p.words) for p in pages
    ]
    assert again[1].image.tobytes() == pages[1].image.tobytes()


def test_unreadable_document_is_skipped_with_its_error(tmp_path):
    from pipelines.dataset import load_pages

    root = make_folder(tmp_path / "d", {"a": 1, "b": 1})
    pages, errors = load_pages(read_documents(root), tmp_path / "cache", 64)
    assert pages == [] and len(errors) == 2 and all(":" in e for e in errors)
