"""Local folder sources under a changing or hostile file system: a file deleted between listing
and hashing is left out (the run goes on), a symlink leading out of the input folder is recorded
SKIPPED and never opened (unless DOCTRIAGE_FOLLOW_SYMLINKS), and a file name with a newline or
other control character never splits a stored error or a summary line."""

from __future__ import annotations

from pathlib import Path

import pytest
from relkit import submit_in_process, write_corpus
from sqlalchemy import select

from db.models import Document
from db.session import session_scope
from doctriage.commands.run import render
from doctriage.settings import Settings
from pipelines import sources
from pipelines.errors import DocumentError, one_line
from pipelines.sources import SYMLINK_OUTSIDE, LocalSource, path_to_uri
from pipelines.sources_factory import source_for
from workers.embedded import RunSummary, run_embedded


def _docs(emb) -> dict[str, tuple[str, str | None]]:
    with session_scope(emb.ctx.sessions) as s:
        return {d.source_uri: (d.state, d.error) for d in s.execute(select(Document)).scalars()}


def _delete_before_hashing(monkeypatch: pytest.MonkeyPatch, victim: Path) -> None:
    """The file is removed after it was listed, just before it is hashed."""
    real = sources.sha256_file

    def hashing(path: Path, chunk: int = 1 << 20) -> str:
        if Path(path) == victim:
            victim.unlink()
        return real(path, chunk)

    monkeypatch.setattr(sources, "sha256_file", hashing)


# -- a file deleted between listing and hashing -------------------------------------------------


def test_file_deleted_after_listing_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    a, b, c = write_corpus(tmp_path / "in", [1, 1, 1])
    source = LocalSource([tmp_path / "in"])
    assert source.files() == [a, b, c]
    _delete_before_hashing(monkeypatch, b)
    with caplog.at_level("WARNING", logger="pipelines.sources"):
        yielded = [ref.uri for ref in source]
    assert yielded == [path_to_uri(a), path_to_uri(c)]
    assert any(b.name in r.getMessage() and "gone" in r.getMessage() for r in caplog.records)


def test_run_goes_on_when_a_file_is_deleted_after_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_embedded
) -> None:
    a, b, c = write_corpus(tmp_path / "in", [2, 1, 3])
    source = source_for([str(tmp_path / "in")])
    assert len(source.files()) == 3  # what `doctriage run` counts before it starts
    _delete_before_hashing(monkeypatch, b)
    emb = make_embedded()
    summary = run_embedded(emb.ctx, emb.runtime, source)
    docs = _docs(emb)
    assert set(docs) == {path_to_uri(a), path_to_uri(c)}
    assert {st for st, _ in docs.values()} == {"DONE"}
    assert summary.documents == 2 and summary.pages == 5 and summary.completed


def test_submit_goes_on_when_a_file_is_deleted_after_listing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _a, b, _c = write_corpus(tmp_path / "in", [1, 1, 1])
    _delete_before_hashing(monkeypatch, b)
    result, queued = submit_in_process(monkeypatch, tmp_path / "in", tmp_path / "home",
                                       f"sqlite:///{tmp_path / 'store.db'}")
    assert result.exit_code == 0, result.output
    assert "submit: 2 documents, 2 new, 2 queued for ingest" in result.output
    assert len(queued) == 2


# -- symlinks leaving the input folder ---------------------------------------------------------


def _folder_with_links(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    (inside,) = write_corpus(tmp_path / "in", [1], prefix="inside")
    (secret,) = write_corpus(tmp_path / "elsewhere", [2], prefix="secret")
    out_link = tmp_path / "in" / "out-link.pdf"
    out_link.symlink_to(secret)
    in_link = tmp_path / "in" / "sub" / "in-link.pdf"
    in_link.parent.mkdir()
    in_link.symlink_to(inside)  # stays inside: the same document, listed once
    return inside, secret, out_link, in_link


def test_symlink_leaving_the_folder_is_skipped_and_never_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_embedded
) -> None:
    inside, secret, out_link, _ = _folder_with_links(tmp_path)
    source = source_for([str(tmp_path / "in")])
    assert source.files() == [inside]

    opened: list[Path] = []
    real = sources.sha256_file
    monkeypatch.setattr(sources, "sha256_file", lambda p, *a: opened.append(Path(p)) or real(p))
    emb = make_embedded()
    summary = run_embedded(emb.ctx, emb.runtime, source)
    docs = _docs(emb)
    assert secret.resolve() not in {p.resolve() for p in opened}
    assert path_to_uri(secret) not in docs
    assert docs[path_to_uri(inside)] == ("DONE", None)
    assert docs[out_link.absolute().as_uri()] == ("SKIPPED", SYMLINK_OUTSIDE)
    assert summary.documents_by_state == {"DONE": 1, "SKIPPED": 1}
    assert summary.pages == 1 and summary.completed
    # Again: nothing new, the SKIPPED row is not duplicated.
    run_embedded(emb.ctx, emb.runtime, source)
    assert _docs(emb) == docs


def test_follow_symlinks_setting_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, secret, _, _ = _folder_with_links(tmp_path)
    assert Settings().follow_symlinks is False
    monkeypatch.setenv("DOCTRIAGE_FOLLOW_SYMLINKS", "true")
    settings = Settings()
    assert settings.follow_symlinks is True
    source = source_for([str(tmp_path / "in")], follow_symlinks=settings.follow_symlinks)
    assert sorted(p.resolve() for p in source.files()) == sorted([inside, secret])
    assert sorted(ref.uri for ref in source) == sorted([path_to_uri(inside), path_to_uri(secret)])
    assert source.skipped == []  # type: ignore[attr-defined]


# -- control characters in file names ----------------------------------------------------------


def test_one_line_escapes_control_characters() -> None:
    assert one_line("a\nb\r\tc\x1b[31m\u2028d") == "a\\nb\\r\\tc\\x1b[31m\\u2028d"
    assert one_line("plain: naïve €") == "plain: naïve €"
    err = DocumentError("bad\nname.pdf", "not a PDF\x1b")
    assert str(err) == "bad\\nname.pdf: not a PDF\\x1b"


def test_newline_in_a_file_name_keeps_the_stored_error_one_line(
    tmp_path: Path, make_embedded
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    bad = folder / "evil\nFAILED: forged.pdf"
    bad.write_bytes(b"this is not a document at all")
    emb = make_embedded()
    summary = run_embedded(emb.ctx, emb.runtime, LocalSource([folder]))
    (state, error), = _docs(emb).values()
    assert state == "FAILED"
    assert error is not None and "\n" not in error
    assert error.startswith("evil\\nFAILED: forged.pdf: not a PDF"), error
    out = render(summary).splitlines()
    failed = [line for line in out if line.startswith("failed: ")]
    assert failed == [f"failed: {error}"]
    assert not any(line.startswith("FAILED") for line in out)


def test_summary_prints_each_failure_on_one_line() -> None:
    summary = RunSummary(failed_documents=[
        {"uri": "file:///in/a.pdf", "error": "RuntimeError: first\nsecond\x1b[2J"},
        {"uri": "file:///in/x\ny.pdf", "error": ""},
    ])
    out = render(summary).splitlines()
    assert out[-2:] == [
        "failed: RuntimeError: first\\nsecond\\x1b[2J",
        "failed: file:///in/x\\ny.pdf",
    ]
