"""`doctriage pages PATH [--json] [--ocr auto|ocr|text] [--dpi N]`: read a document page by page."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, BinaryIO, TextIO

import typer

if TYPE_CHECKING:  # the reading stack (PIL, pdfium) loads when a document is read
    from pipelines.options import IngestOptions


class OcrChoice(StrEnum):
    auto = "auto"
    ocr = "ocr"
    text = "text"




def _fail(message: str, err: TextIO | None = None) -> typer.Exit:
    """`error: message` as _common.fail words it, written to `err`: while pages are read, fd 2
    goes to /dev/null (see _quiet_c_libraries)."""
    print(f"error: {message}", file=err or sys.stderr, flush=True)
    return typer.Exit(2)


@contextlib.contextmanager
def _quiet_c_libraries() -> Iterator[TextIO]:
    """libtiff (inside Pillow) prints its own complaints about damaged files straight to file
    descriptor 2, which would break the one-line error promise. While pages are read, fd 2 goes to
    /dev/null; the progress bar and our error line use a stream on the real stderr."""
    try:
        sys.stderr.flush()
        if sys.stderr.fileno() != 2:
            raise ValueError("stderr is not fd 2")
        saved = os.dup(2)
    except (OSError, ValueError):  # stderr captured in-process (test runners): leave it alone
        yield sys.stderr
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    real = os.fdopen(os.dup(saved), "w")
    try:
        os.dup2(devnull, 2)
        yield real
    finally:
        real.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        real.close()


def pages(
    path: Annotated[str, typer.Argument(help="A PDF, TIFF, PNG or JPEG file; '-' reads stdin.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per page.")] = False,
    ocr: Annotated[
        OcrChoice | None, typer.Option("--ocr", help="auto: per page; ocr: always; text: never.")
    ] = None,
    dpi: Annotated[int | None, typer.Option("--dpi", help="Raster resolution (dpi).")] = None,
) -> None:
    """Print one line per page: size, where its words came from, word count, time."""
    from doctriage.settings import get_settings
    from doctriage.wiring import ingest_options

    try:
        options = ingest_options(get_settings(), ocr_mode=ocr.value if ocr else None, dpi=dpi)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    source: str | BinaryIO = path
    name = path
    if path == "-":
        source, name = sys.stdin.buffer, "<stdin>"
    with _quiet_c_libraries() as err:
        _print_pages(source, name, options, as_json, err)


def _print_pages(
    source: str | BinaryIO, name: str, options: IngestOptions, as_json: bool, err: TextIO
) -> None:
    from tqdm import tqdm

    from pipelines.pages import DocumentError, count_pages, iter_pages

    total = None  # only for the progress bar; a document that cannot be counted fails below
    if isinstance(source, str):
        with contextlib.suppress(DocumentError):
            total = count_pages(source, name, options)
    bar = tqdm(total=total, unit="page", file=err, disable=not err.isatty())
    try:
        for page in iter_pages(source, name=name, options=options):
            bar.update(1)
            # The size is the raster's, at --dpi; an image that does not record its resolution
            # is kept as stored (or scaled to a page's length), so its dpi is unknown.
            dpi = options.dpi if page.size_pt is not None else None
            if as_json:
                line = json.dumps(
                    {
                        "page": page.number,
                        "width": page.width,
                        "height": page.height,
                        "dpi": dpi,
                        "text_source": page.text_source,
                        "words": len(page.words),
                        "ms": round(page.ms, 1),
                        "coverage": None if page.coverage is None else round(page.coverage, 3),
                        "reason": page.reason,
                    }
                )
            else:
                size = f"{page.width}x{page.height} px " + (
                    f"@{dpi}dpi" if dpi is not None else "(dpi unknown)"
                )
                # "none": an image read without OCR; the reason says why, in one line
                text = page.text_source
                if text == "none":
                    text += f" ({page.reason})"
                words = f"{len(page.words)} words"
                line = f"page {page.number}\t{size}\t{text}\t{words}\t{page.ms:.0f} ms"
            bar.clear()
            typer.echo(line)
            sys.stdout.flush()
    except DocumentError as exc:
        bar.close()
        raise _fail(str(exc), err) from None
    bar.close()


def register(app: typer.Typer) -> None:
    app.command("pages")(pages)
