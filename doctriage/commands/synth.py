"""`doctriage synth OUT --per-class N --seed S`: write the synthetic labelled corpus."""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Annotated

import typer

from doctriage.commands._common import fail


def synth(
    out: Annotated[
        Path, typer.Argument(help="Folder to write <label>/<label>-NNNN.pdf and manifest.csv into.")
    ],
    per_class: Annotated[int, typer.Option("--per-class", help="Documents per class.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Corpus seed; same seed, same bytes.")] = 0,
    scanned_fraction: Annotated[
        float,
        typer.Option("--scanned-fraction", help="Share of image-only (scanned-looking) documents."),
    ] = 0.3,
    classes: Annotated[
        str | None, typer.Option("--classes", help="Comma-separated subset of the 16 classes.")
    ] = None,
) -> None:
    """Generate a labelled corpus of the 16 RVL-CDIP classes (born-digital and scanned PDFs)."""
    from pipelines.synth import CLASSES, generate_corpus  # reportlab, PIL: only when it runs

    if per_class < 1:
        raise fail(f"--per-class must be at least 1, got {per_class}")
    if not 0.0 <= scanned_fraction <= 1.0:
        raise fail(f"--scanned-fraction must be within [0, 1], got {scanned_fraction}")
    chosen = CLASSES
    if classes is not None:
        chosen = tuple(c.strip() for c in classes.split(",") if c.strip())
        unknown = [c for c in chosen if c not in CLASSES]
        if unknown or not chosen:
            raise fail(
                f"unknown class(es) {', '.join(unknown) or '(none given)'}; "
                f"choose from {', '.join(CLASSES)}"
            )
    if out.exists() and not out.is_dir():
        raise fail(f"{out} exists and is not a folder")
    started = time.perf_counter()
    try:
        manifest = generate_corpus(
            out, per_class, seed, scanned_fraction=scanned_fraction, classes=chosen, progress=True
        )
    except ValueError as exc:  # argument checks the library makes (e.g. repeated classes)
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(f"cannot write the corpus to {out}: {exc.strerror or exc}") from None
    seconds = time.perf_counter() - started
    with open(manifest, newline="") as fh:
        rows = list(csv.DictReader(fh))
    pages = sum(int(r["pages"]) for r in rows)
    scanned = sum(r["scanned"] == "1" for r in rows)
    typer.echo(
        f"synth: {len(rows)} documents ({scanned} scanned), {pages} pages, "
        f"{seconds:.1f} s -> {manifest}"
    )


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)
