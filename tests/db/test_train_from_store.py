"""`doctriage train --from-store` on a SQLite store filled by the real ingest and classify steps
(generated born-digital documents, the shipped default bundle): reviewers file memos as letters,
so the bundle answers every memo page wrong by their labels. The fine-tune from the store's
labels answers the held-out memo pages as letters and is written; one that makes the bundle
worse (a learning rate that wrecks it) is refused, exit 1, nothing written. Also the one-line
refusals: too few labelled pages, labels the bundle does not know, a DATA folder beside them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from db import repository as repo
from db.labelled_pages import labelled_pages
from db.session import session_scope
from doctriage import wiring
from doctriage.default_model import SHIPPED_BUNDLE
from doctriage.settings import get_settings
from pipelines.sources import LocalSource
from workers import steps

# Pages of each generated class that reviewers label; memos are labelled "letter".
PAGES_WANTED = {"memo": 8, "letter": 4, "invoice": 3, "resume": 3, "email": 2}
RELABEL = {"memo": "letter"}
SEED_TAG = "train-from-store"


def write_documents(folder: Path, wanted: dict[str, int]) -> dict[str, str]:
    """Seeded born-digital documents, per class until its pages reach the wanted count;
    {file name: class}."""
    from pipelines.synth import make_document
    from pipelines.synth.corpus import derive_seed

    folder.mkdir(parents=True, exist_ok=True)
    classes = {}
    for label, pages in wanted.items():
        got, i = 0, 0
        while got < pages:
            pdf, n = make_document(label, derive_seed(SEED_TAG, label, i), scanned=False)
            if got + n <= pages:  # exactly the wanted count
                name = f"{label}-{i:02d}.pdf"
                (folder / name).write_bytes(pdf)
                classes[name] = label
                got += n
            i += 1
    return classes


def fill_store(docs: Path, classes: dict[str, str], relabel: dict[str, str]) -> dict[int, str]:
    """Each document through the real ingest and classify steps (shipped bundle), then every
    page labelled by a reviewer; {page id: generated class}."""
    settings = get_settings()
    ctx = wiring.step_context(settings)
    runtime = wiring.classify_runtime(settings, SHIPPED_BUNDLE)
    page_class: dict[int, str] = {}
    for ref in LocalSource([docs]):
        with session_scope(ctx.sessions) as s:
            doc_id, _ = repo.register_document(s, ref.uri, sha256=ref.sha256)
        ids = steps.ingest_document(ctx, doc_id).page_ids
        result = steps.classify_pages(ctx, runtime, ids)
        steps.full_depth_pages(ctx, runtime, result.rerouted)
        label = classes[Path(ref.uri).name]
        with session_scope(ctx.sessions) as s:
            for page_id in ids:
                repo.add_human_label(s, page_id, relabel.get(label, label), "reviewer")
                page_class[page_id] = label
    return page_class


def train_cli(*args: str) -> Any:
    import typer

    from doctriage.commands import train as train_cmd

    app = typer.Typer()
    train_cmd.register(app)
    return CliRunner().invoke(app, list(args))  # one command: typer runs it without its name


@pytest.fixture
def labelled_store(tmp_path: Path) -> dict[int, str]:
    classes = write_documents(tmp_path / "docs", PAGES_WANTED)
    return fill_store(tmp_path / "docs", classes, RELABEL)


def test_only_a_fine_tune_that_wins_replaces_the_served_bundle(labelled_store, tmp_path) -> None:
    with session_scope(wiring.store(get_settings())) as s:
        assert len(labelled_pages(s)) == sum(PAGES_WANTED.values()) == 20
    served = tmp_path / "served"
    shutil.copytree(SHIPPED_BUNDLE, served)
    before = {p.name: p.read_bytes() for p in served.iterdir()}
    # A learning rate that wrecks the bundle: refused, exit 1, the served bundle untouched.
    res = train_cli("--from-store", "--model", str(served), "--out", str(served),
                    "--epochs", "1", "--lr", "0.5", "--threads", "1")
    assert res.exit_code == 1, res.output
    report = json.loads(res.stdout)
    assert not report["promoted"] and report["out"] is None
    assert report["new"]["full_depth_accuracy"] < report["old"]["full_depth_accuracy"]
    assert res.stderr.strip().splitlines()[-1].startswith("not written: ")
    assert {p.name: p.read_bytes() for p in served.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "served"]

    # The fine-tune's defaults, a DATA folder beside the labels: the held-out memos (labelled
    # letters) are now letters.
    data = tmp_path / "data"
    for label in ("invoice", "email"):
        write_documents(data / label, {label: 2})
    res = train_cli(str(data), "--from-store", "--model", str(served), "--out", str(served),
                    "--threads", "1", "--cache-dir", str(tmp_path / "cache"))
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    old, new = report["old"], report["new"]
    print(json.dumps({k: report[k] for k in ("pages", "old", "new", "reason")}, indent=1))
    wrong_before = old["by_class"]["letter"]
    assert wrong_before["full_depth_accuracy"] < 0.5  # the memos among them: answered "memo"
    for key in ("full_depth_accuracy", "early_exit_accuracy"):
        assert new["by_class"]["letter"][key] > wrong_before[key]
        assert new[key] >= old[key]
    assert res.stderr.strip().splitlines()[-1].startswith("written: ")
    exits = json.loads((served / "exits.json").read_text())
    assert report["promoted"] and exits["version"] == new["version"] != old["version"]
    assert exits["metadata"]["fine_tune"]["from_version"] == old["version"]
    assert exits["label_names"] == json.loads(
        (SHIPPED_BUNDLE / "exits.json").read_text())["label_names"]
    assert report["pages"]["folder_documents"] == len(list(data.rglob("*.pdf")))
    assert report["pages"]["fine_tune"] + report["pages"]["calibration"] > 20 - 6
    # no staging folder left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data", "docs", "served"]


def store_scribbled_pages(labels: list[str]) -> None:
    """One page per label, each its own document, written as ingest writes them (artifact and
    page row), then labelled; no model runs."""
    from modelkit import scribbled_contents

    from pipelines.artifacts import encode_page, page_key

    ctx = wiring.step_context(get_settings())
    for i, (page, label) in enumerate(zip(scribbled_contents(len(labels)), labels, strict=True)):
        with session_scope(ctx.sessions) as s:
            doc_id, _ = repo.register_document(s, f"s3://bucket/labelled/{i}.pdf", etag=str(i))
            key = ctx.artifacts.put(page_key(doc_id, 1), encode_page(page))
            (page_id,) = repo.upsert_pages(
                s, doc_id, [repo.PageRecord(1, "text_layer", len(page.words), key, 170, 220)])
            repo.add_human_label(s, page_id, label, "reviewer")


def test_too_few_labelled_pages_is_one_line_naming_the_number_needed(tmp_path) -> None:
    store_scribbled_pages(["letter", "memo", "invoice", "letter"])
    res = train_cli("--from-store", "--model", str(SHIPPED_BUNDLE), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and not (tmp_path / "o").exists()
    assert res.stderr.strip().splitlines()[-1] == (
        "error: too few human-labelled pages: 4 in 4 documents; at least 10 pages in 3 "
        "documents are needed")


def test_labels_the_bundle_does_not_know_are_refused_in_one_line(tmp_path) -> None:
    hostile = "<script>alert(1)</script>'; DROP TABLE pages;--"
    store_scribbled_pages(["letter"] * 11 + [hostile])
    res = train_cli("--from-store", "--model", str(SHIPPED_BUNDLE), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and not (tmp_path / "o").exists()
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: human labels unknown to the bundle: ") and repr(hostile) in line


def test_labelled_pages_reads_each_pages_newest_label(factory) -> None:
    with session_scope(factory) as s:
        doc_id, _ = repo.register_document(s, "s3://bucket/it's \"odd\".pdf", etag="e")
        first, second, unlabelled = repo.upsert_pages(
            s, doc_id, [repo.PageRecord(n, "text_layer", 1, f"k{n}", 10, 10) for n in (1, 2, 3)])
        repo.add_human_label(s, second, "memo", "a")
        repo.add_human_label(s, first, "memo", "a")
        repo.add_human_label(s, first, "letter'; --", "b")  # the newer one counts
    with session_scope(factory) as s:
        rows = labelled_pages(s)
    assert [(r.page_id, r.number, r.label, r.artifact_ref) for r in rows] == [
        (first, 1, "letter'; --", "k1"), (second, 2, "memo", "k2")]
    assert {r.document_id for r in rows} == {doc_id} and unlabelled not in {r.page_id for r in rows}
    assert rows[0].source_uri == "s3://bucket/it's \"odd\".pdf"
