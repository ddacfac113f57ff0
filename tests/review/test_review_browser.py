"""Labelling 20 pages in headless Chromium with real key presses and clicks (selenium +
Debian's chromium-driver): a wrong token refused, the right one taken once, each page shown
with its raster and answers, every label written to human_labels, then nothing left."""

from __future__ import annotations

from typing import Any

from browserkit import chromium
from reviewkit import LABELS, RASTER, Stored, serving
from sqlalchemy import select

from db import review
from db.models import HumanLabel
from db.session import session_scope
from doctriage.review.app import LABEL_KEYS, ReviewConfig

TOKEN = "browser-test-token"


def _shows_the_store(browser: Any, spec: Stored) -> None:
    """What the page shows is what the store holds, its raster loaded."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    body = browser.find_element(By.TAG_NAME, "body")
    assert body.get_attribute("data-suggested") == spec.suggested
    early = browser.find_element(By.CSS_SELECTOR, "#early-answer .label").text
    full = browser.find_element(By.CSS_SELECTOR, "#full-answer .label").text
    assert early == spec.early
    assert full == (spec.full if spec.full is not None else "not run")
    assert f"{spec.early_conf:.3f}" in browser.find_element(By.ID, "answers").text
    assert "batch-" in browser.find_element(By.ID, "document").text
    loaded = "return document.getElementById('page-image').complete"
    WebDriverWait(browser, 10).until(lambda b: b.execute_script(loaded))
    size = browser.execute_script("const i = document.getElementById('page-image');"
                                  "return [i.naturalWidth, i.naturalHeight];")
    assert tuple(size) == RASTER


def _answer(browser: Any, i: int, spec: Stored) -> str:
    """Four ways to answer, in turn: Enter, a label's key, a click on a label, a click on
    "confirm early" (or on the suggestion when early is the same). Returns the label chosen."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    way = i % 4
    if way == 0:
        ActionChains(browser).send_keys(Keys.ENTER).perform()
        return spec.suggested
    if way == 1:
        k = (5, 9, 10, 11, 0)[i // 4]  # keys 6, 0, a, b, 1
        ActionChains(browser).send_keys(LABEL_KEYS[k]).perform()
        return LABELS[k]
    if way == 2:
        choice = LABELS[(i + 7) % len(LABELS)]
        browser.find_element(By.CSS_SELECTOR, f'#labels button[value="{choice}"]').click()
        return choice
    early_button = browser.find_elements(By.ID, "confirm-early")
    if spec.full is not None and spec.full != spec.early:
        assert early_button
        early_button[0].click()
        return str(spec.early)
    assert not early_button
    browser.find_element(By.ID, "confirm").click()
    return spec.suggested


def test_label_twenty_pages_with_keys_and_clicks(review_store) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    sessions, artifacts, stored = review_store
    with session_scope(sessions) as s:
        order = [item.page_id for item in review.queue(s, 0.6, limit=None)]
    assert sorted(order) == sorted(pid for pid, spec in stored.items() if spec.listed)
    assert len(order) == 20
    config = ReviewConfig(sessions=sessions, artifacts=artifacts, who="browser-tester",
                          below=0.6, bundle_labels=LABELS, token=TOKEN)
    browser = chromium()
    try:
        with serving(config) as base:
            browser.get(f"{base}/?token=wrong")
            assert "forbidden" in browser.find_element(By.TAG_NAME, "body").text
            assert not browser.find_elements(By.ID, "label-form")
            browser.get(f"{base}/?token={TOKEN}")
            expected: dict[int, str] = {}
            seen: list[int] = []
            for i in range(20):
                body = browser.find_element(By.TAG_NAME, "body")
                page_id = int(body.get_attribute("data-page-id"))
                assert "token" not in browser.current_url
                spec = stored[page_id]
                seen.append(page_id)
                _shows_the_store(browser, spec)
                expected[page_id] = _answer(browser, i, spec)
                WebDriverWait(browser, 10).until(
                    lambda b, old=str(page_id): b.execute_script(
                        "return document.body && document.body.dataset.pageId") != old)
            assert browser.find_element(By.ID, "done").text.startswith("Nothing left to review")
            assert "0 to review" in browser.find_element(By.ID, "queue").text
    finally:
        browser.quit()
    assert seen == order  # one page after the other, in review order
    with session_scope(sessions) as s:
        rows = s.execute(select(HumanLabel.page_id, HumanLabel.label, HumanLabel.who)
                         .where(HumanLabel.who == "browser-tester")
                         .order_by(HumanLabel.id)).all()
        assert [(pid, label) for pid, label, _ in rows] == [(p, expected[p]) for p in order]
        assert review.queue(s, 0.6) == []
        assert len(set(expected.values())) > 5  # the keys and clicks chose different labels
