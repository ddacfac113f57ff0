"""The review page's routes (Starlette, Jinja2 with autoescape on for every template).

GET  /                        the next page to review (a redirect), or "nothing left"
GET  /next?after=PAGE_ID      the page after PAGE_ID in review order (skip), wrapping around
GET  /page/PAGE_ID            one page: its raster, early and full answers, document, labels
GET  /page/PAGE_ID/image.png  the raster stored in the page's artifact (PNG as stored)
POST /page/PAGE_ID/label      form `label` + `csrf`: writes a human label, then the next page

Queries are db.review's; a label is db.repository.add_human_label, committed by the request's
session scope. Database work runs in the thread pool (the store's drivers block)."""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from db import repository, review
from db.session import session_scope
from doctriage.review.guard import CSRF_FIELD, Guard, GuardMiddleware, is_loopback
from pipelines.artifacts import ArtifactNotFound, ArtifactStore, raster_png
from pipelines.sources import name_of

HERE = Path(__file__).resolve().parent
# Keys that pick a label, in the order labels are listed: digits first, then letters.
LABEL_KEYS = "1234567890" + string.ascii_lowercase
MAX_LABEL_CHARS = 128  # human_labels.label


@dataclass(frozen=True)
class ReviewConfig:
    """What the app serves: the store, the artifacts, the model's classes (exits.json
    `label_names`, listed first), the reviewer's name written with each label, the confidence
    bar for `low_confidence`, and the token (None: none required on a loopback host)."""

    sessions: sessionmaker[Session]
    artifacts: ArtifactStore
    who: str
    below: float
    bundle_labels: tuple[str, ...] = ()
    token: str | None = None
    host: str = "127.0.0.1"


def label_choices(bundle_labels: tuple[str, ...], seen: list[str]) -> list[tuple[str, str]]:
    """(key, label) for every label a reviewer can pick: the bundle's in its order, then the
    others predictions gave, sorted; labels past the keys get no key (a click still works)."""
    labels = list(dict.fromkeys([*bundle_labels, *sorted(set(seen) - set(bundle_labels))]))
    return [(LABEL_KEYS[i] if i < len(LABEL_KEYS) else "", lab) for i, lab in enumerate(labels)]


def create_app(config: ReviewConfig) -> Starlette:
    guard = Guard(config.token, loopback=is_loopback(config.host))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name: stored values are never markup
        undefined=jinja2.StrictUndefined,
    )
    pages = _ReviewRoutes(config, guard, Jinja2Templates(env=env))
    routes = [
        Route("/", pages.home),
        Route("/next", pages.next_page),
        Route("/page/{page_id:int}", pages.page),
        Route("/page/{page_id:int}/image.png", pages.image),
        Route("/page/{page_id:int}/label", pages.label, methods=["POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(GuardMiddleware, guard=guard)])


class _ReviewRoutes:
    """The route handlers, sharing the config, the guard and the templates."""

    def __init__(self, config: ReviewConfig, guard: Guard, templates: Jinja2Templates) -> None:
        self.config, self.guard, self.templates = config, guard, templates

    def _read(self, work: Any) -> Any:
        with session_scope(self.config.sessions) as s:
            return work(s)

    async def home(self, request: Request) -> Response:
        return await self._go_next(request, None)

    async def next_page(self, request: Request) -> Response:
        after = request.query_params.get("after")
        return await self._go_next(request, int(after) if after and after.isdigit() else None)

    async def _go_next(self, request: Request, after: int | None) -> Response:
        below = self.config.below

        def work(s: Session) -> tuple[review.ReviewItem | None, dict[str, int]]:
            return review.next_item(s, below, after), review.queue_counts(s, below)

        found, counts = await run_in_threadpool(self._read, work)
        if found is not None:
            return RedirectResponse(f"/page/{found.page_id}", status_code=303)
        return self.templates.TemplateResponse(
            request, "done.html", {"counts": counts, "below": below, "who": self.config.who},
            headers={"Cache-Control": "no-store"},
        )

    async def page(self, request: Request) -> Response:
        page_id = request.path_params["page_id"]
        config = self.config

        def work(s: Session) -> dict[str, Any] | None:
            found = review.item(s, page_id, config.below)
            if found is None:
                return None
            return {
                "item": found,
                "counts": review.queue_counts(s, config.below),
                "labelled": review.latest_human_label(s, page_id),
                "choices": label_choices(config.bundle_labels, review.labels_seen(s)),
            }

        context = await run_in_threadpool(self._read, work)
        if context is None:
            return PlainTextResponse(f"no predicted page with id {page_id}", status_code=404)
        session, new = self.guard.session(request)
        context.update(
            name=name_of(context["item"].source_uri), csrf=self.guard.csrf_token(session),
            csrf_field=CSRF_FIELD, below=config.below, who=config.who,
        )
        response = self.templates.TemplateResponse(request, "page.html", context,
                                                   headers={"Cache-Control": "no-store"})
        if new:
            self.guard.set_session(response, session)
        return response

    async def image(self, request: Request) -> Response:
        page_id = request.path_params["page_id"]

        def ref(s: Session) -> str | None:
            found = repository.get_page(s, page_id)
            return found.artifact_ref if found is not None else None

        key = await run_in_threadpool(self._read, ref)
        if key is None:
            return PlainTextResponse("no stored raster for this page", status_code=404)
        try:
            png = raster_png(await run_in_threadpool(self.config.artifacts.get, key))
        except ArtifactNotFound:
            return PlainTextResponse("the page's artifact is missing", status_code=404)
        except (ValueError, KeyError, TypeError):
            return PlainTextResponse("the page's artifact holds no readable raster",
                                     status_code=500)
        return Response(png, media_type="image/png",
                        headers={"Cache-Control": "private, max-age=3600"})

    async def label(self, request: Request) -> Response:
        page_id = request.path_params["page_id"]
        form = await request.form()
        if not self.guard.csrf_ok(request, form.get(CSRF_FIELD)):
            return PlainTextResponse("forbidden: missing or wrong CSRF token", status_code=403)
        chosen = form.get("label")
        if not isinstance(chosen, str) or not chosen.strip() or len(chosen) > MAX_LABEL_CHARS:
            return PlainTextResponse("bad request: no label", status_code=400)
        problem = await run_in_threadpool(self._read,
                                          lambda s: self._write_label(s, page_id, chosen))
        if problem is not None:
            return PlainTextResponse(f"bad request: {problem}", status_code=400)
        return RedirectResponse(f"/next?after={page_id}", status_code=303)

    def _write_label(self, s: Session, page_id: int, chosen: str) -> str | None:
        """Writes the label; returns what is wrong with the request instead, if anything."""
        if repository.get_page(s, page_id) is None:
            return f"no page with id {page_id}"
        allowed = {lab for _, lab in label_choices(self.config.bundle_labels,
                                                    review.labels_seen(s))}
        if chosen not in allowed:
            return "not a label of the model or its predictions"
        repository.add_human_label(s, page_id, chosen, self.config.who)
        return None
