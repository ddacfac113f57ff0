"""Plain options for page ingestion (`doctriage` builds them from its settings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OcrMode = Literal["auto", "ocr", "text"]
OCR_MODES: tuple[str, ...] = ("auto", "ocr", "text")


@dataclass(frozen=True)
class IngestOptions:
    # auto: text layer when it covers the page's content, OCR otherwise; ocr: always; text: never.
    ocr_mode: OcrMode = "auto"
    # Raster handed to the vision input (Page.image).
    dpi: int = 100
    # Raster handed to tesseract. OCR of born-digital pages vs their text layer (word F1, see
    # tests/pipelines/test_crosscheck.py): 150, 200 and 300 dpi within 0.015 of each other;
    # 100 dpi loses 0.02-0.15 (resume 0.83 vs 0.98). 200 keeps margin for small print.
    ocr_dpi: int = 200
    ocr_timeout_s: float = 60.0
    ocr_lang: str = "eng"
    # Words below this tesseract confidence (0-100) are dropped as noise (speckle, rules, logos).
    # On renders of born-digital pages the cross-check F1 is flat (0.955-0.958) from 0 to 70, so
    # this only trims junk on real scans; 30 is a conventional cut, not tuned on labelled scans.
    min_ocr_conf: float = 30.0
    max_pages: int = 2000
    max_page_pixels: int = 60_000_000
    # Text-layer words kept per page, in content-stream order. The model reads a few hundred
    # tokens; the densest of realdocs' 1,259 text-layer pages has 3,806 words. A page over it is
    # kept truncated (its `reason` says so) rather than failed.
    max_page_words: int = 5000
    max_file_bytes: int = 200 * 1024 * 1024
    # Share of the page's ink that text-layer words must cover on a scan-like page (images cover
    # at least `scan_image_area` of it) for the text layer to be trusted. Measured on realdocs:
    # scans whose layer is only a stamp/metadata block cover <= 0.21 of the ink, scans with a
    # usable OCR layer 0.45-0.99; pages in between carried garbled layers (pipelines/coverage.py).
    min_text_coverage: float = 0.4
    scan_image_area: float = 0.5

    def __post_init__(self) -> None:
        if self.ocr_mode not in OCR_MODES:
            raise ValueError(f"ocr_mode must be one of {OCR_MODES}, not {self.ocr_mode!r}")
        positive = ("dpi", "ocr_dpi", "max_pages", "max_page_pixels", "max_page_words")
        for field in (*positive, "max_file_bytes"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive")
        if self.ocr_timeout_s <= 0:
            raise ValueError("ocr_timeout_s must be positive")
