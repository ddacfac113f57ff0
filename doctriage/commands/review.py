"""`doctriage review [--host H] [--port P] [--below C] [--model DIR] [--who NAME]`: serve the
review page (doctriage/review/), where a person confirms or corrects the labels of
low-confidence pages and early/full-depth disagreements."""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from doctriage.commands._common import fail, takes_arguments


@dataclass(frozen=True)
class ReviewArguments:
    host: Annotated[str, typer.Option(
        "--host", help="Address to bind. Anything but loopback needs DOCTRIAGE_REVIEW_TOKEN.")
    ] = "127.0.0.1"
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free one).")] = 8765
    below: Annotated[float | None, typer.Option(
        "--below", help="Pages whose answer is below this confidence are listed "
        "(default: DOCTRIAGE_REROUTE_BELOW).")] = None
    model: Annotated[Path | None, typer.Option(
        "--model", help="Bundle whose classes are offered first (default: DOCTRIAGE_MODEL_DIR, "
        "else the default bundle).")] = None
    who: Annotated[str | None, typer.Option(
        "--who", help="Reviewer name stored with each label (default: current user).")] = None


@takes_arguments(ReviewArguments)
def review(args: ReviewArguments) -> None:
    """Serve the review page: label low-confidence pages and early/full disagreements."""
    from doctriage.settings import get_settings

    settings = get_settings()
    below = settings.reroute_below if args.below is None else args.below
    if not 0.0 < below <= 1.0:
        raise fail(f"--below must be in (0, 1], got {below}")
    if not 0 <= args.port <= 65535:
        raise fail(f"--port must be in 0..65535, got {args.port}")
    who = args.who or getpass.getuser()
    if not who.strip() or len(who) > 128:
        raise fail("--who must be 1 to 128 characters")
    token = settings.review_token.get_secret_value() if settings.review_token else None
    from doctriage.review.guard import is_loopback

    if not is_loopback(args.host) and not token:
        raise fail(f"--host {args.host} is not a loopback address: set DOCTRIAGE_REVIEW_TOKEN "
                   "to serve the review page there (every request must then carry it)")
    from doctriage import wiring
    from doctriage.review.app import ReviewConfig, create_app
    from doctriage.review.serving import listen, make_server

    config = ReviewConfig(
        sessions=wiring.store(settings), artifacts=wiring.artifact_store(settings),
        who=who, below=below,
        bundle_labels=_bundle_labels(args.model), token=token, host=args.host,
    )
    try:
        sock = listen(args.host, args.port)
    except OSError as exc:
        raise fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"review page at http://{shown}:{port}/ (labels by {config.who}; "
               f"{'token required' if token else 'no token'}; Ctrl-C stops)")
    make_server(create_app(config)).run(sockets=[sock])


def _bundle_labels(model: Path | None) -> tuple[str, ...]:
    """The classes of --model, DOCTRIAGE_MODEL_DIR or the installed default bundle (its
    exits.json; no torch); none when there is no bundle (the labels predictions gave remain)."""
    from doctriage import default_model, wiring
    from doctriage.settings import get_settings

    settings = get_settings()
    chosen = model or settings.model_dir
    folder = (wiring.bundle_folder(chosen) if chosen is not None
              else default_model.existing_default_bundle(settings))
    if folder is None:
        return ()
    try:
        names = json.loads((folder / "exits.json").read_text(encoding="utf-8"))["label_names"]
        return tuple(str(n) for n in names)
    except (OSError, ValueError, KeyError, TypeError):
        raise fail(f"{folder}: not a model bundle (unreadable exits.json)") from None


def register(app: typer.Typer) -> None:
    app.command("review")(review)
