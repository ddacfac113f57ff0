"""Life-cycle states of documents and pages, and the two prediction passes.

Stored as plain strings (with CHECK constraints) rather than native enums, so SQLite and
PostgreSQL share one schema and adding a state is a one-line migration.
"""

from __future__ import annotations

from enum import StrEnum


class DocumentState(StrEnum):
    RECEIVED = "RECEIVED"  # row exists, ingest not started (or waiting to be re-enqueued)
    INGESTING = "INGESTING"  # an ingest worker has it
    INGESTED = "INGESTED"  # pages written and enqueued for classification
    DONE = "DONE"  # every page reached a final state
    FAILED = "FAILED"  # `error` says why; `failure_kind` whether it is retried
    SKIPPED = "SKIPPED"  # not a document (folder, unknown type, zero bytes); `error` says why


class PageState(StrEnum):
    PENDING = "PENDING"  # ingested (or OCRed), awaiting classification
    CLASSIFYING = "CLASSIFYING"  # a classify worker has it
    OCR_QUEUED = "OCR_QUEUED"  # the OCR-free pass did not settle it: awaiting the ocr step
    OCRING = "OCRING"  # an ocr worker has it
    REROUTED = "REROUTED"  # early pass stored, awaiting the full-depth pass
    DONE = "DONE"
    FAILED = "FAILED"


class TextSource(StrEnum):
    """Where a page's words come from (pages.text_source)."""

    TEXT_LAYER = "text_layer"  # the PDF's own text layer
    OCR = "ocr"  # tesseract (at ingest, or in the ocr step)
    NONE = "none"  # an image page not OCRed (ocr_mode "text")
    # OCR deferred (DOCTRIAGE_DEFER_OCR): the page needs OCR and has not had it yet; the classify
    # step first tries the OCR-free exit on its raster.
    AWAITING_OCR = "awaiting_ocr"
    OCR_AVOIDED = "ocr_avoided"  # answered by the OCR-free exit: tesseract never ran for it


class FailureKind(StrEnum):
    """Why a document is FAILED: worth another try later, or not."""

    TRANSIENT = "transient"  # an outside service was down or slow: the reconciler retries it
    PERMANENT = "permanent"  # the input itself (or a bug): retried only by an operator


class Pass(StrEnum):
    EARLY = "early"  # anytime early-exit pass
    FULL = "full"  # all layers, no early exit (re-route / audit sample)


class FullDepthReason(StrEnum):
    """Why a page was (or is to be) answered again at full depth."""

    LOW_CONFIDENCE = "low_confidence"  # the early answer was below the re-route bar
    AUDIT_SAMPLE = "audit_sample"  # the seeded audit coin picked the page (whatever its confidence)
    MANUAL = "manual"  # an operator's re-run (backlog --reclassify-below), not the classify step


DOCUMENT_FINAL = frozenset({DocumentState.DONE, DocumentState.FAILED, DocumentState.SKIPPED})
PAGE_FINAL = frozenset({PageState.DONE, PageState.FAILED})
