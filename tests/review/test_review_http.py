"""The review page over real HTTP (uvicorn on a loopback port): the token on every request, CSRF
on every label write, stored strings escaped, the raster served as stored, and the command's
refusal to serve beyond loopback without a token."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from reviewkit import LABELS, Stored, add_page, request, serving
from sqlalchemy import select

from db.models import HumanLabel
from db.session import session_scope
from doctriage.review.app import ReviewConfig
from doctriage.review.guard import AUTH_COOKIE, SESSION_COOKIE

TOKEN = "t0ken-for-the-review-test"
HOSTILE_LABEL = '<script>alert("label")</script>'
HOSTILE_FULL = '"><img src=x onerror=alert(1)>'
HOSTILE_URI = "s3://drops/<script>alert('uri')</script>/a&b.pdf"


def _config(review_store, **extra) -> ReviewConfig:
    sessions, artifacts, _ = review_store
    return ReviewConfig(sessions=sessions, artifacts=artifacts, who="tester", below=0.6,
                        bundle_labels=LABELS, **extra)


def _labels(sessions) -> list[tuple[int, str, str]]:
    with session_scope(sessions) as s:
        rows = s.execute(select(HumanLabel.page_id, HumanLabel.label, HumanLabel.who)
                         .order_by(HumanLabel.id))
        return [tuple(r) for r in rows]


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, html
    return found.group(1)


def test_a_token_is_asked_of_every_request_and_csrf_of_every_label(review_store) -> None:
    sessions, _, stored = review_store
    before = _labels(sessions)
    with serving(_config(review_store, token=TOKEN)) as base:
        first = min(stored)
        for path in ("/", f"/page/{first}", f"/page/{first}/image.png", "/static/review.js"):
            assert request(base + path).status == 403, path
        assert request(f"{base}/?token=wrong").status == 403
        assert request(f"{base}/?token={TOKEN}x").status == 403
        assert request(base + "/", headers={"X-Review-Token": "wrong"}).status == 403
        assert request(base + "/", headers={"Authorization": "Bearer wrong"}).status == 403
        assert request(base + "/", cookies={AUTH_COOKIE: TOKEN}).status == 403  # not the digest
        # The right token once: a redirect to the same address without it, and a cookie.
        ok = request(f"{base}/next?after={first}&token={TOKEN}")
        assert ok.status == 303 and ok.headers["location"] == f"/next?after={first}"
        auth = {AUTH_COOKIE: ok.cookies()[AUTH_COOKIE]}
        assert TOKEN not in auth[AUTH_COOKIE]
        assert request(base + "/", headers={"X-Review-Token": TOKEN}).status == 303
        assert request(base + "/", headers={"Authorization": f"Bearer {TOKEN}"}).status == 303
        home = request(base + "/", cookies=auth)
        assert home.status == 303 and home.headers["location"].startswith("/page/")
        page_url = base + home.headers["location"]
        page_id = int(page_url.rsplit("/", 1)[1])
        shown = request(page_url, cookies=auth)
        assert shown.status == 200
        assert "script-src 'self'" in shown.headers["content-security-policy"]
        assert shown.headers["x-content-type-options"] == "nosniff"
        session = shown.cookies()[SESSION_COOKIE]
        csrf = _csrf(shown.text)
        cookies = {**auth, SESSION_COOKIE: session}
        post = f"{page_url}/label"
        # No CSRF token, a wrong one, one from another session, no session: all refused.
        assert request(post, method="POST", body={"label": "memo"}, cookies=cookies).status == 403
        assert request(post, method="POST", body={"label": "memo", "csrf": "0" * 64},
                       cookies=cookies).status == 403
        other = request(page_url, cookies=auth)
        assert other.cookies()[SESSION_COOKIE] != session
        assert request(post, method="POST", body={"label": "memo", "csrf": _csrf(other.text)},
                       cookies=cookies).status == 403
        assert request(post, method="POST", body={"label": "memo", "csrf": csrf},
                       cookies=auth).status == 403
        # Right token and CSRF, but no token: refused before the form is read.
        assert request(post, method="POST", body={"label": "memo", "csrf": csrf},
                       cookies={SESSION_COOKIE: session}).status == 403
        assert _labels(sessions) == before
        # A label nobody knows is a bad request; a known one is written, then the next page.
        assert request(post, method="POST", body={"label": "no-such-class", "csrf": csrf},
                       cookies=cookies).status == 400
        done = request(post, method="POST", body={"label": "memo", "csrf": csrf},
                       cookies=cookies)
        assert done.status == 303 and done.headers["location"] == f"/next?after={page_id}"
    assert _labels(sessions) == [*before, (page_id, "memo", "tester")]


def test_without_a_token_only_a_loopback_host_header_is_served(review_store) -> None:
    with serving(_config(review_store)) as base:
        assert request(base + "/").status == 303
        port = base.rsplit(":", 1)[1]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            assert request(base + "/", headers={"Host": host}).status == 303, host
        # A page whose DNS name was rebound to 127.0.0.1 arrives with its own name.
        for host in (f"evil.example:{port}", "evil.example", "127.0.0.1.evil.example"):
            assert request(base + "/", headers={"Host": host}).status == 403, host


def test_stored_strings_are_escaped(review_store) -> None:
    sessions, artifacts, _ = review_store
    with session_scope(sessions) as s:
        pid = add_page(s, artifacts, HOSTILE_URI, 1,
                       Stored(HOSTILE_LABEL, 0.9, HOSTILE_FULL, 0.8, True, "audit_sample",
                              True))
    with serving(_config(review_store, token=TOKEN)) as base:
        auth = {AUTH_COOKIE: request(f"{base}/?token={TOKEN}").cookies()[AUTH_COOKIE]}
        page = request(f"{base}/page/{pid}", cookies=auth)
        assert page.status == 200
        html = page.text
        for raw in (HOSTILE_LABEL, HOSTILE_FULL, HOSTILE_URI, "<script>alert", "<img src=x"):
            assert raw not in html, raw
        assert "&lt;script&gt;alert(&#34;label&#34;)&lt;/script&gt;" in html
        assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
        assert "s3://drops/&lt;script&gt;alert(&#39;uri&#39;)&lt;/script&gt;/a&amp;b.pdf" in html
        assert html.count("<script") == 1  # ours: <script src="/static/review.js">
        # The hostile label is one the predictions gave: it can be chosen, is stored as it
        # is (bound parameters), and is shown escaped once stored.
        cookies = {**auth, SESSION_COOKIE: page.cookies()[SESSION_COOKIE]}
        wrote = request(f"{base}/page/{pid}/label", method="POST", cookies=cookies,
                        body={"label": HOSTILE_LABEL, "csrf": _csrf(html)})
        assert wrote.status == 303
        again = request(f"{base}/page/{pid}", cookies=cookies).text
        assert HOSTILE_LABEL not in again
        assert re.search(r'id="labelled">Labelled &lt;script&gt;alert\(&#34;label&#34;\)'
                         r"&lt;/script&gt; by tester", again)
    assert (pid, HOSTILE_LABEL, "tester") in _labels(sessions)


def test_the_raster_is_served_as_stored(review_store) -> None:
    sessions, artifacts, stored = review_store
    pid = min(stored)
    with session_scope(sessions) as s:
        from db.repository import get_page

        key = get_page(s, pid).artifact_ref
    expected = base64.b64decode(json.loads(artifacts.get(key))["raster_png"])
    with serving(_config(review_store)) as base:
        image = request(f"{base}/page/{pid}/image.png")
        assert image.status == 200 and image.headers["content-type"] == "image/png"
        assert image.body == expected
        assert request(f"{base}/page/999999/image.png").status == 404
        assert request(f"{base}/page/999999").status == 404
        (artifacts.root / key).unlink()
        assert request(f"{base}/page/{pid}/image.png").status == 404


def _doctriage(tmp_path: Path, *args: str, token: str | None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCTRIAGE_")}
    env.update(DOCTRIAGE_HOME=str(tmp_path / "home"),
               DOCTRIAGE_DATABASE_URL=f"sqlite:///{tmp_path / 'store.db'}",
               DOCTRIAGE_ARTIFACT_URL=str(tmp_path / "artifacts"))
    if token is not None:
        env["DOCTRIAGE_REVIEW_TOKEN"] = token
    code = "from doctriage.cli import main; main()"
    return subprocess.Popen([sys.executable, "-c", code, "review", *args], env=env,
                            cwd=Path(__file__).resolve().parents[2], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_the_command_refuses_a_public_host_without_a_token(tmp_path) -> None:
    proc = _doctriage(tmp_path, "--host", "0.0.0.0", "--port", "0", token=None)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, (out, err)
    assert err == ("error: --host 0.0.0.0 is not a loopback address: set DOCTRIAGE_REVIEW_TOKEN"
                   " to serve the review page there (every request must then carry it)\n")


def test_the_command_serves_its_store_and_asks_for_its_token(review_store, tmp_path) -> None:
    proc = _doctriage(tmp_path, "--port", "0", "--who", "cli-reviewer", token=TOKEN)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.match(r"review page at (http://127\.0\.0\.1:\d+)/ \(labels by cli-reviewer; "
                         r"token required; Ctrl-C stops\)$", line)
        assert found, (line, proc.stderr.read() if proc.poll() is not None else "")
        base = found.group(1)
        assert TOKEN not in line
        assert request(base + "/").status == 403
        assert request(f"{base}/?token=nope").status == 403
        cookie = request(f"{base}/?token={TOKEN}").cookies()
        first = request(base + "/", cookies=cookie)
        assert first.status == 303
        page = request(base + first.headers["location"], cookies=cookie)
        assert page.status == 200 and "labelling as cli-reviewer" in page.text
    finally:
        proc.terminate()
        proc.wait(20)
