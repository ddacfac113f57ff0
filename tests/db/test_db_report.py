"""`doctriage audit report`: a self-contained HTML page whose figures render in a real headless
Chromium (Debian packages chromium + chromium-driver)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from browserkit import chromium

from db import repository as repo
from db.session import session_scope
from doctriage.reporting.html_report import FIGURES, build_report

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


def test_report_shows_the_share_of_ocr_avoided_per_class(factory) -> None:
    sources = ["ocr_avoided", "ocr_avoided", "ocr", "ocr", "text_layer"]
    labels = ["letter", XSS, "letter", "letter", "memo"]
    with session_scope(factory) as s:
        doc_id, _ = repo.register_document(s, "file:///scans.pdf")
        ids = repo.upsert_pages(s, doc_id, [repo.PageRecord(n, src, 0, None, 1, 1)
                                            for n, src in enumerate(sources, 1)])
        repo.record_predictions(s, [
            repo.PredictionRecord(pid, "v1", "early", label, 0.9, 0, 0, [0.9], 1.0)
            for pid, label in zip(ids, labels, strict=True)])
        page = build_report(s)
    assert "4 pages needed OCR; the OCR-free exit answered 2 (50.0%) of them" in page
    section = page.split("<h2>OCR avoided</h2>")[1].split("<h2>")[0]
    rows = re.findall(r"<tr><td>v1</td><td>[\d-]+</td><td>(.*?)</td><td>(\d+)</td>"
                      r"<td>(.*?)</td></tr>", section)
    assert sorted(rows) == sorted([("letter", "3", "1 (33.3%)"),
                                   (html.escape(XSS), "1", "1 (100.0%)")])


def test_report_on_an_empty_store(factory) -> None:
    with session_scope(factory) as s:
        page = build_report(s)
    assert page.count("data:image/png;base64,") == len(FIGURES)


def _figure(monkeypatch, draw, *args):
    """The matplotlib Figure a report figure function draws (instead of its PNG)."""
    from doctriage.reporting import html_report as report

    drawn = []
    monkeypatch.setattr(report, "_png", lambda fig: drawn.append(fig) or "")
    draw(*args)
    (fig,) = drawn
    fig.canvas.draw()  # tick positions are decided when drawing
    return fig


def _integer_ticks(ax) -> bool:
    return all(float(t).is_integer() for t in ax.get_yticks())


def test_figures_label_axes_and_count_whole_pages(monkeypatch) -> None:
    from doctriage.reporting import html_report as report

    # a small store: counts of 1 and 2 must not get 0.5-page ticks
    fig = _figure(monkeypatch, report.confidence_figure, {"invoice": [0.4, 0.9], "memo": [0.7]})
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 2
    for ax in panels:
        assert ax.get_xlabel() == "confidence" and ax.get_ylabel() == "pages"
        assert _integer_ticks(ax)
    fig = _figure(monkeypatch, report.exit_depth_figure,
                  [{"exit_stage": 0, "pages": 3, "rerouted": 1},
                   {"exit_stage": 2, "pages": 1, "rerouted": 1}])
    (ax,) = fig.axes
    assert ax.get_xlabel() and ax.get_ylabel() == "pages" and _integer_ticks(ax)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "early answer kept", "re-routed to full depth"]


def test_one_day_of_reroutes_has_a_legend_and_a_slim_bar(monkeypatch) -> None:
    from doctriage.reporting import html_report as report

    fig = _figure(monkeypatch, report.agreement_figure,
                  [{"day": "2026-01-02", "pages": 3, "agree": 2, "agreement": 2 / 3}])
    (ax,) = fig.axes  # one axis: no second scale to guess the meaning of
    assert len(ax.get_legend().get_texts()) == 2
    assert ax.get_xlabel() and ax.get_ylabel() == "re-routed pages" and _integer_ticks(ax)
    bar = ax.patches[0]
    lo, hi = ax.get_xlim()
    assert bar.get_width() < (hi - lo) / 4
    assert any(t.get_text() == "67% agree" for t in ax.texts)


def test_loss_figure_draws_each_days_interval(monkeypatch) -> None:
    from db.audit_loss import LossEstimate
    from doctriage.reporting import html_report as report

    days = [{"day": "2026-03-01", **LossEstimate.of(100, 5).as_dict()},
            {"day": "2026-03-02", **LossEstimate.of(80, 0).as_dict()}]
    fig = _figure(monkeypatch, report.loss_figure, days)
    (ax,) = fig.axes
    assert ax.get_xlabel() and "%" in ax.get_ylabel() and len(ax.get_legend().get_texts()) == 1
    (drawn,) = ax.containers  # the estimates and their intervals as error bars
    points, _caps, (bars,) = drawn.lines
    assert list(points.get_ydata()) == pytest.approx([5.0, 0.0])
    spans = [sorted(seg[:, 1]) for seg in bars.get_segments()]
    assert spans == [pytest.approx([100 * days[0]["lower"], 100 * days[0]["upper"]]),
                     pytest.approx([0.0, 100 * days[1]["upper"]])]
    assert [t.get_text() for t in ax.texts] == ["n=100", "n=80"]
    fig = _figure(monkeypatch, report.loss_figure, [])
    assert "no audit-sampled pages" in fig.axes[0].texts[0].get_text()


def test_reliability_without_labels_is_the_message_alone(monkeypatch) -> None:
    from doctriage.reporting import html_report as report

    fig = _figure(monkeypatch, report.reliability_figure, {})
    (ax,) = fig.axes
    assert ax.get_lines() == []  # no diagonal drawn through the message
    assert "no human-labelled pages" in ax.texts[0].get_text()
    fig = _figure(monkeypatch, report.reliability_figure,
                  {"early": [{"confidence": 0.9, "accuracy": 1.0, "count": 2}]})
    assert len(fig.axes[0].get_lines()) == 2  # the diagonal and the early pass


def test_tables_say_which_pass(factory, report_store) -> None:
    with session_scope(factory) as s:
        page = build_report(s)
    for header in ("early exit stage", "early class", "full-depth class = early class",
                   "mean confidence (early pass)", "pages by final class"):
        assert f"<th>{html.escape(header)}</th>" in page
    assert "<td>full-depth pass</td>" in page  # calibration rows name the pass
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page)
    alts = re.findall(r"<img alt='(.*?)'", page)
    assert len(captions) == len(FIGURES) and not set(captions) & set(alts)


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
    out = tmp_path / "report.html"
    res = CliRunner().invoke(app, ["audit", "report", "--out", str(out)])
    assert res.exit_code == 0, res.output
    browser = chromium()
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
