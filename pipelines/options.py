"""Plain options for page ingestion (`doctriage` builds them from its settings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

OcrMode = Literal["auto", "ocr", "text"]
OCR_MODES: tuple[str, ...] = ("auto", "ocr", "text")
MIN_ARTIFACT_BYTES = 16 * 1024
# tesseract page segmentation modes that read a whole page (0-2 do no OCR, 7-10 one line/word).
OCR_PSMS: tuple[int, ...] = (3, 4, 6, 11, 12)


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
    # tesseract's page segmentation mode: 3 = automatic layout analysis, 6 = one uniform block,
    # 11 = sparse text in no particular order (bench/ocr_settings.py compares them).
    ocr_psm: int = 3
    # Words below this tesseract confidence (0-100) are dropped as noise (speckle, rules, logos).
    # On renders of born-digital pages the cross-check F1 is flat (0.955-0.958) from 0 to 70, so
    # this only trims junk on real scans; 30 is a conventional cut, not tuned on labelled scans.
    min_ocr_conf: float = 30.0
    # Defer OCR (ARCHITECTURE.md, "Deferred OCR"): ingest renders pages and reads text layers but
    # does not run tesseract; a page that needs OCR is stored awaiting it and first meets the
    # OCR-free exit, and only the pages it does not settle are OCRed (the ocr step). False:
    # tesseract runs during ingest for every page that needs it (the behaviour before).
    defer_ocr: bool = True
    max_pages: int = 2000
    max_page_pixels: int = 60_000_000
    # Text-layer words kept per page, in content-stream order. The model reads a few hundred
    # tokens; the densest of realdocs' 1,259 text-layer pages has 3,806 words. A page over it is
    # kept truncated (its `reason` says so) rather than failed.
    max_page_words: int = 5000
    max_file_bytes: int = 200 * 1024 * 1024
    # Decoded pixels of any one image: every image a PDF declares, masks included (refused from
    # its /Width x /Height before pdfium decodes it) and every frame of a TIFF/PNG/JPEG (from
    # its header). Apart from max_page_pixels, which bounds the rasters *we* render at our dpi:
    # an embedded image is decoded at the file's own resolution whatever the page size.
    # realdocs: largest embedded image 14.9 Mpx, largest frame 34.8 Mpx (A4 at 600 dpi).
    max_image_pixels: int = 60_000_000
    # Page objects (text runs, paths, images) on one PDF page, counted right after pdfium
    # parses the page and before any text page, raster or image walk is built: each costs
    # ~1-1.5 us per object. realdocs' densest of 1,259 pages has 24,277; 4x that margin.
    max_page_objects: int = 100_000
    # MiB pdfium may grow by while it parses one PDF page (pipelines/parse_check.py: the pages are
    # parsed first in a watched child process, killed past this). realdocs' densest page
    # (24,277 objects) grows it by 10 MB; the object budget's 100,000 by ~45 MB.
    max_parse_mb: int = 512
    # Bytes of one page artifact (JSON: words, boxes, PNG raster). Over it the artifact keeps
    # the first words that fit (the model reads only the first few hundred tokens) and, only
    # if the raster alone is over, a smaller raster: a page is never failed for its size.
    # realdocs' 1,259 PDF pages: median 80 KB, largest 278 KB; 1 MiB is ~3.8x that.
    max_artifact_bytes: int = 1024 * 1024
    # Wall-clock seconds for one document's ingest, checked between pages: over it the
    # document fails with the pages read so far kept. 600 keeps the longest ingest task plus
    # the longest retry countdown (300 s) under the broker's 900 s visibility timeout; at
    # ~1.5-2 s per OCRed page on one core that is ~300-400 scanned pages (raise both for more).
    max_ingest_s: float = 600.0
    # Share of the page's ink that text-layer words must cover on a scan-like page (images cover
    # at least `scan_image_area` of it) for the text layer to be trusted. Measured on realdocs:
    # scans whose layer is only a stamp/metadata block cover <= 0.21 of the ink, scans with a
    # usable OCR layer 0.45-0.99; pages in between carried garbled layers (pipelines/coverage.py).
    min_text_coverage: float = 0.4
    scan_image_area: float = 0.5

    def __post_init__(self) -> None:
        if self.ocr_mode not in OCR_MODES:
            raise ValueError(f"ocr_mode must be one of {OCR_MODES}, not {self.ocr_mode!r}")
        positive = ("dpi", "ocr_dpi", "max_pages", "max_page_pixels", "max_page_words",
                    "max_image_pixels", "max_page_objects", "max_parse_mb", "max_ingest_s")
        for field in (*positive, "max_file_bytes"):
            if getattr(self, field) <= 0:
                raise ValueError(f"{field} must be positive")
        if self.ocr_psm not in OCR_PSMS:
            raise ValueError(f"ocr_psm must be one of {OCR_PSMS}, not {self.ocr_psm!r}")
        if self.ocr_timeout_s <= 0:
            raise ValueError("ocr_timeout_s must be positive")
        if self.max_artifact_bytes < MIN_ARTIFACT_BYTES:
            # below this even a wordless artifact with a tiny raster may not fit
            raise ValueError(f"max_artifact_bytes must be at least {MIN_ARTIFACT_BYTES}")
