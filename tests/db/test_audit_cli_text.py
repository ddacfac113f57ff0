"""What a person reads from `doctriage audit`: decoded document paths relative to where the
documents live, 3-decimal confidences, times to the second, wrapped class lists, `exit_stage` as
where the early pass stopped (also for full-depth answers), while JSON keeps the stored values;
`audit report` refusing a folder that does not exist; `audit label` refusing a class the model
does not have unless --force. The real command runs in a subprocess on a seeded SQLite store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from modelkit import LABELS, build_tiny_bundle
from sqlalchemy import select, update

from db import repository as repo
from db.models import HumanLabel, Prediction
from db.session import make_engine, migrate, session_factory, session_scope
from doctriage.commands import _tables

REPO = Path(__file__).resolve().parents[2]
WHEN = datetime(2026, 1, 2, 10, 30, 15, 123456, tzinfo=UTC)
# Sixteen classes with long names: the summary's class list must wrap, not run off the screen.
CLASSES = [f"class_with_a_long_name_{i:02d}" for i in range(16)]


def doctriage(home: Path, url: str, *args: str, env: dict[str, str] | None = None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DOCTRIAGE_")}
    full_env.update(DOCTRIAGE_HOME=str(home), DOCTRIAGE_DATABASE_URL=url, **(env or {}))
    return subprocess.run(
        [str(Path(sys.executable).with_name("doctriage")), *args],
        capture_output=True, text=True, env=full_env, cwd=REPO, timeout=300,
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two documents in a folder whose name needs escaping in a URI; page 1 of the first was
    re-routed (early stage 2, full depth stored at stage 4); the second has 16 pages, one per
    class (the first one unsure)."""
    tmp = tmp_path_factory.mktemp("audit-text")
    root = tmp / "drop zone, 2026"
    first = (root / "batch 1" / "scan one.pdf").as_uri()
    second = (root / "batch 2" / "many.pdf").as_uri()
    url = f"sqlite:///{tmp / 'store.db'}"
    engine = make_engine(url)
    migrate(engine)
    with session_scope(session_factory(engine)) as s:
        doc1, _ = repo.register_document(s, first, sha256="a" * 64)
        doc2, _ = repo.register_document(s, second, sha256="b" * 64)
        (p1,) = repo.upsert_pages(s, doc1, [repo.PageRecord(1, "ocr", 5, None, 10, 10)])
        many = repo.upsert_pages(
            s, doc2, [repo.PageRecord(n, "text_layer", 5, None, 10, 10) for n in range(1, 17)]
        )
        rows = [
            repo.PredictionRecord(p1, "v1", "early", "invoice", 0.41234567, 2, 8, [0.4], 1.0),
            repo.PredictionRecord(p1, "v1", "full", "memo", 0.55555555, 4, 12, [0.5], 2.0),
        ]
        rows += [
            repo.PredictionRecord(pid, "v1", "early", CLASSES[i], 0.3 if i == 0 else 0.95, 0, 1,
                                  [0.95], 1.0)
            for i, pid in enumerate(many)
        ]
        repo.record_predictions(s, rows)
        s.execute(update(Prediction).values(created_at=WHEN))
    engine.dispose()
    return {"home": tmp / "home", "url": url, "root": root, "page": p1, "tmp": tmp}


def test_low_confidence_table_is_readable(store: dict) -> None:
    out = doctriage(store["home"], store["url"], "audit", "low-confidence", "--below", "0.9")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"documents under {store['root']}/"
    header, unsure, row = lines[1], lines[2], lines[3]  # least confident first
    assert "early exit stage" in header and "answer" in header
    # decoded, relative to the documents' folder; no URI escapes, no file://
    assert "batch 2/many.pdf" in unsure and "0.300" in unsure.split()
    assert "batch 1/scan one.pdf" in row
    assert "%2C" not in out.stdout and "%20" not in out.stdout and "file://" not in out.stdout
    cells = row.split()
    assert "0.556" in cells  # 3 decimals
    assert "2026-01-02 10:30:15" in row and "10:30:15.123456" not in row  # to the second
    # the full-depth answer is named as such; its exit stage is where the early pass left (2)
    assert "full depth" in row
    stage_col = header.index("early exit stage") + len("early exit stage") - 1
    assert row[stage_col] == "2"
    assert "doctriage audit label PAGE_ID CLASS" in lines[-1]


def test_json_keeps_stored_values_with_the_early_exit_stage(store: dict) -> None:
    out = doctriage(store["home"], store["url"], "audit", "low-confidence", "--below", "0.9",
                    "--json")
    assert out.returncode == 0, out.stderr
    _, page = json.loads(out.stdout)["pages"]
    assert page["confidence"] == pytest.approx(0.55555555, abs=1e-12)  # not rounded
    assert page["document_uri"].startswith("file://") and "%2C" in page["document_uri"]
    assert (page["pass_name"], page["exit_stage"]) == ("full", 2)
    assert page["created_at"] == WHEN.isoformat()
    csv_out = doctriage(store["home"], store["url"], "audit", "low-confidence", "--below", "0.9",
                        "--csv")
    assert ",0.55555555," in csv_out.stdout  # CSV keeps full precision too


def test_summary_wraps_the_class_list(store: dict) -> None:
    out = doctriage(store["home"], store["url"], "audit", "summary")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for name in CLASSES:
        assert f"{name} 1" in text  # every class with its count, never split
    # 16 long names in one cell were ~500 characters wide; wrapped they stay readable
    table_lines = text.splitlines()[:-1]
    assert max(len(line) for line in table_lines) <= 150, text
    assert len(table_lines) >= 6  # the one row spans several lines
    assert "0.880" in text.splitlines()[1].split()  # mean confidence, 3 decimals
    assert "early exit stage" in text and "2: 1" in text  # the early stage, not 4


def test_report_refuses_a_folder_that_does_not_exist(store: dict) -> None:
    target = store["tmp"] / "no such folder" / "r.html"
    out = doctriage(store["home"], store["url"], "audit", "report", "--out", str(target))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ")
    assert "does not exist" in out.stderr
    assert not target.parent.exists()
    ok = doctriage(store["home"], store["url"], "audit", "report", "--out",
                   str(store["tmp"] / "r.html"))
    assert ok.returncode == 0, ok.stderr
    assert (store["tmp"] / "r.html").stat().st_size > 10_000


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


def _labels(url: str, page_id: int) -> list[str]:
    engine = make_engine(url)
    with session_scope(session_factory(engine)) as s:
        labels = list(s.execute(select(HumanLabel.label).where(HumanLabel.page_id == page_id)
                                .order_by(HumanLabel.id)).scalars())
    engine.dispose()
    return labels


def test_label_outside_the_models_classes_needs_force(store: dict, bundle: Path) -> None:
    page = str(store["page"])
    assert "memo" not in LABELS
    refused = doctriage(store["home"], store["url"], "audit", "label", page, "memo",
                        "--model", str(bundle))
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and refused.stderr.startswith("error: ")
    assert "'memo' is not a class of the model" in refused.stderr and "--force" in refused.stderr
    typo = doctriage(store["home"], store["url"], "audit", "label", page, "invoce",
                     env={"DOCTRIAGE_MODEL_DIR": str(bundle)})  # the bundle from the settings
    assert typo.returncode == 2 and "did you mean 'invoice'?" in typo.stderr
    assert _labels(store["url"], store["page"]) == []

    forced = doctriage(store["home"], store["url"], "audit", "label", page, "memo", "--force",
                       "--model", str(bundle))
    assert forced.returncode == 0, forced.stderr
    assert forced.stderr.startswith("warning: 'memo' is not a class of the model")
    known = doctriage(store["home"], store["url"], "audit", "label", page, "invoice",
                      "--model", str(bundle))
    assert known.returncode == 0 and known.stderr == ""
    assert _labels(store["url"], store["page"]) == ["memo", "invoice"]


def test_paths_shown_decoded() -> None:
    s3 = "s3://bucket/in%25box/résumé 1.pdf"  # as pipelines.s3.object_uri stores the key
    assert _tables.decoded(s3) == "s3://bucket/in%box/résumé 1.pdf"
    assert _tables.source_root([s3, "s3://bucket/in%25box/b.pdf"]) == "s3://bucket/in%box/"
    assert _tables.source_root([s3, "file:///data/a.pdf"]) is None  # mixed: full paths
    assert _tables.source_root(["file:///a.pdf", "file:///b.pdf"]) is None  # only "/" shared
    bell = "file:///data/x%07y.pdf"  # a control character never reaches the terminal raw
    assert _tables.document(bell, None) == "/data/x\\x07y.pdf"


def test_counts_wrap_between_items() -> None:
    text = _tables.counts({name: 3 for name in CLASSES})
    lines = text.split("\n")
    assert len(lines) > 1 and all(len(line) <= _tables.WRAP for line in lines)
    assert all(f"{name} 3" in text for name in CLASSES)
