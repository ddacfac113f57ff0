"""One page's content, the one type that extraction yields (`pipelines.pages.iter_pages`), a page
artifact encodes and decodes (`pipelines.artifacts`) and the training cache stores
(`pipelines.dataset`). It has the `words`, `boxes` and `image` the classifier reads
(`classifier.inputs.PageLike`), so it goes to the model as it is.

Light on purpose (PIL only): the classify side decodes artifacts without importing the
extraction stack."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

Box = tuple[int, int, int, int]


@dataclass
class Page:
    number: int  # 1-based
    # The ingest raster's size in pixels. `image` is that raster when extracted; an artifact's
    # or the cache's image has been downsized since (the size stays the ingest one).
    width: int
    height: int
    image: Image.Image  # RGB
    words: list[str]
    boxes: list[Box]  # 0-1000, same length as words, reading order
    text_source: str  # "text_layer" | "ocr" | "none" (an image page not OCRed)
    # What extraction adds (not stored in artifacts or the cache: they come back with defaults).
    ms: float = 0.0  # time spent producing this page
    size_pt: tuple[float, float] | None = None  # page size in points (None: unknown resolution)
    coverage: float | None = None  # share of the page's ink inside text-layer word boxes
    image_area: float | None = None  # share of the page covered by images (PDF pages)
    ocr_conf: float | None = None  # mean tesseract confidence of the kept words
    reason: str = ""  # why this text source was chosen
    # The document's name as its reader gave it (iter_pages' name; the dataset's document key).
    doc_key: str = ""
