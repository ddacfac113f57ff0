"""`doctriage status [--json]`: documents and pages by state, from the store."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Show how many documents and pages are in each state."""
    from sqlalchemy.exc import SQLAlchemyError

    from db.repository import counts_by_state
    from db.retries import failure_counts
    from db.session import session_scope
    from doctriage import wiring
    from doctriage.settings import get_settings

    try:
        with session_scope(wiring.store(get_settings())) as s:
            counts = counts_by_state(s)
            # transient ones are retried by the reconciler; `doctriage retry` takes any
            counts["failed_documents"] = failure_counts(s)
    except SQLAlchemyError as exc:
        typer.echo(f"error: cannot read the store: {' '.join(str(exc.orig or exc).split())}",
                   err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(counts, indent=2))
        return
    for group, by_state in counts.items():
        if group == "failed_documents" and not any(by_state.values()):
            continue
        total = sum(by_state.values())
        parts = ", ".join(f"{k} {v}" for k, v in by_state.items() if v) or "none"
        typer.echo(f"{group}: {total} ({parts})")


def register(app: typer.Typer) -> None:
    app.command("status")(status)
