"""Who may use the review page, and which label-writing requests are genuine.

- Token (`DOCTRIAGE_REVIEW_TOKEN`): required to start on any host that is not a loopback
  address, and, whenever one is set, on every request: as `?token=` once (answered with a
  redirect to the same URL without it and a cookie), as the cookie, or as an
  `Authorization: Bearer` / `X-Review-Token` header. Compared in constant time.
- Loopback without a token: the Host header must name a loopback host, so a web page that
  rebinds its own DNS name to 127.0.0.1 cannot read the page (and with it the CSRF token).
- CSRF: a random session cookie (HttpOnly, SameSite=Strict) and, in every label form, an HMAC
  of it under a secret drawn when the app starts; a POST whose form token is missing or does
  not match its cookie is refused (403).
- Every answer carries a strict Content-Security-Policy (scripts and styles from our own
  static files only) and no-sniff / no-referrer headers.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode, urlsplit

from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

AUTH_COOKIE = "doctriage_review_auth"
SESSION_COOKIE = "doctriage_review_session"
CSRF_FIELD = "csrf"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the server on this machine (localhost, 127.0.0.0/8, ::1)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Guard:
    """The checks above for one running app: its token (None: none required) and the secret
    its CSRF tokens are made with."""

    def __init__(self, token: str | None, *, loopback: bool) -> None:
        self.token = token or None
        self.loopback = loopback
        self._secret = secrets.token_bytes(32)

    # --- token ---------------------------------------------------------------------------------

    def _cookie_value(self) -> str:
        # The cookie holds a digest of the token, not the token itself.
        assert self.token is not None
        return hmac.new(self.token.encode(), b"doctriage-review-cookie", hashlib.sha256).hexdigest()

    def _matches(self, given: str | None, expected: str) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), expected.encode())

    def _presented_token(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.headers.get("x-review-token")

    def authorise(self, request: Request) -> Response | None:
        """None when the request may go on; else the answer to send instead."""
        if self.token is None:
            if self.loopback and not _loopback_host(request.headers.get("host", "")):
                return PlainTextResponse("forbidden: unexpected Host header", status_code=403)
            return None
        if self._matches(request.cookies.get(AUTH_COOKIE), self._cookie_value()):
            return None
        if self._matches(self._presented_token(request), self.token):
            return None
        if "token" in request.query_params:
            if not self._matches(request.query_params.get("token"), self.token):
                return _refused()
            # Take the token out of the address bar (and history) at once; the cookie stands in.
            rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
            answer = RedirectResponse(target, status_code=303)
            answer.set_cookie(AUTH_COOKIE, self._cookie_value(), httponly=True,
                              samesite="strict", path="/")
            return answer
        return _refused()

    # --- CSRF ----------------------------------------------------------------------------------

    def session(self, request: Request) -> tuple[str, bool]:
        """(session id, whether it is new and must be set as a cookie on the answer)."""
        current = request.cookies.get(SESSION_COOKIE)
        if current and 16 <= len(current) <= 128:
            return current, False
        return secrets.token_urlsafe(32), True

    def csrf_token(self, session: str) -> str:
        return hmac.new(self._secret, session.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, request: Request, submitted: object) -> bool:
        session = request.cookies.get(SESSION_COOKIE)
        if not session or not isinstance(submitted, str):
            return False
        return hmac.compare_digest(submitted.encode(), self.csrf_token(session).encode())

    @staticmethod
    def set_session(response: Response, session: str) -> None:
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict", path="/")


def _refused() -> Response:
    return PlainTextResponse("forbidden: review token missing or wrong", status_code=403)


def _loopback_host(header: str) -> bool:
    try:
        name = urlsplit(f"//{header}").hostname
    except ValueError:
        return False
    return name is not None and is_loopback(name)


class GuardMiddleware(BaseHTTPMiddleware):
    """Runs `Guard.authorise` before every route and adds the security headers to every answer."""

    def __init__(self, app: Callable[..., Awaitable[None]], guard: Guard) -> None:
        super().__init__(app)
        self.guard = guard

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = self.guard.authorise(request) or await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response
