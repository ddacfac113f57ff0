"""`doctriage audit report`: a self-contained HTML page whose figures render in a real headless
Chromium (Debian packages chromium + chromium-driver)."""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path

import pytest

from db import repository as repo
from db.report import FIGURES, build_report
from db.session import session_scope

XSS = "<script>alert(1)</script>"


@pytest.fixture
def report_store(factory):
    with session_scope(factory) as s:
        doc_id, _ = repo.register_document(s, "file:///r.pdf")
        ids = repo.upsert_pages(
            s, doc_id, [repo.PageRecord(n, "ocr", 3, None, 1, 1) for n in range(1, 9)]
        )
        rows = []
        for i, pid in enumerate(ids):
            label = ["invoice", "memo", XSS][i % 3]
            rows.append(
                repo.PredictionRecord(
                    pid, "v1", "early", label, 0.3 + 0.08 * i, i % 3, 4, [0.5], 1.0
                )
            )
            if i % 2 == 0:
                rows.append(
                    repo.PredictionRecord(pid, "v1", "full", "memo", 0.9, 3, 12, [0.9], 2.0)
                )
            repo.add_human_label(s, pid, "memo", "t")
        repo.record_predictions(s, rows)
    return ids


def test_report_is_self_contained_and_escaped(factory, report_store) -> None:
    with session_scope(factory) as s:
        page = build_report(s)
    assert page.count("src='data:image/png;base64,") == len(FIGURES)
    assert not re.search(r"(src|href)=['\"](?!data:)", page)  # nothing fetched from elsewhere
    assert "<script" not in page and html.escape(XSS) in page
    assert "8 pages; re-routed 4 (50.0%)" in page


def test_report_on_an_empty_store(factory) -> None:
    with session_scope(factory) as s:
        page = build_report(s)
    assert page.count("data:image/png;base64,") == len(FIGURES)


def _chromium():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("headless Chromium not installed (Debian packages chromium, chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_report_renders_in_headless_chromium(
    factory, report_store, engine, tmp_path: Path, monkeypatch
) -> None:
    import typer
    from typer.testing import CliRunner

    from doctriage.commands import audit as audit_cmd
    from doctriage.settings import get_settings

    monkeypatch.setenv("DOCTRIAGE_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    get_settings.cache_clear()
    app = typer.Typer()
    audit_cmd.register(app)
    out = tmp_path / "out" / "report.html"
    res = CliRunner().invoke(app, ["audit", "report", "--out", str(out)])
    assert res.exit_code == 0, res.output
    browser = _chromium()
    try:
        browser.get(out.as_uri())
        assert browser.title == "doctriage audit report"
        sizes = browser.execute_script(
            "return Array.from(document.querySelectorAll('figure img')).map("
            "i => [i.closest('figure').id, i.complete, i.naturalWidth, i.naturalHeight])"
        )
        assert [s[0] for s in sizes] == list(FIGURES)
        for fig_id, complete, width, height in sizes:
            assert complete and width > 200 and height > 200, fig_id
        assert "8 pages" in browser.find_element("id", "totals").text
    finally:
        browser.quit()
        get_settings.cache_clear()
