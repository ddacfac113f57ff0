"""The CPU part of the ocr step: read one page's words with tesseract. No store, no model.

Light on purpose (pipelines only): the in-process orchestrator runs `read_words` in a process
pool (spawn/forkserver children import this module, not torch), and the Celery ocr task calls
it directly. The step around it (workers.steps: claim, then store) stays in the caller.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import Image

from pipelines.errors import DocumentError, one_line
from pipelines.options import IngestOptions

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class OcrJob:
    """One page to OCR: its ids, and where its raster comes from. `source` is the document's
    bytes (the source is read once per document by the caller: an S3 opener registered in the
    parent does not exist in a spawned child), `raster_png` the stored raster when it is large
    enough for OCR (then the document is not read at all)."""

    page_id: int
    number: int
    name: str
    source: bytes | None = None
    raster_png: bytes | None = None
    raster_dpi: int | None = None


@dataclass(frozen=True)
class OcrOutcome:
    page_id: int
    words: list[str] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    error: str | None = None  # OCR failed or timed out, or the page cannot be rendered again
    seconds: float = 0.0


def read_words(job: OcrJob, options: IngestOptions) -> OcrOutcome:
    """The page's OCR words (tesseract with OMP_THREAD_LIMIT=1, `options`' dpi, psm, language,
    time-out); a failure of this page is its outcome's `error`, never an exception."""
    import time

    from pipelines.ocr import OcrFailed, OcrSettings, OcrTimeout, ocr_image
    from pipelines.pages import ocr_page

    t0 = time.perf_counter()
    try:
        if job.raster_png is not None:
            image = Image.open(io.BytesIO(job.raster_png)).convert("L")
            settings = OcrSettings(options.ocr_lang, options.ocr_timeout_s, options.min_ocr_conf,
                                   options.ocr_psm)
            result = ocr_image(image, settings, dpi=job.raster_dpi)
        elif job.source is not None:
            result = ocr_page(io.BytesIO(job.source), job.number, name=job.name, options=options)
        else:
            raise DocumentError(job.name, f"page {job.number}: no source to OCR", job.number)
    except (DocumentError, OcrFailed, OcrTimeout) as exc:
        return OcrOutcome(job.page_id, error=one_line(exc),
                          seconds=time.perf_counter() - t0)
    words, boxes = result.words[: options.max_page_words], result.boxes[: options.max_page_words]
    return OcrOutcome(job.page_id, list(words), [tuple(b) for b in boxes],  # type: ignore[misc]
                      seconds=time.perf_counter() - t0)
