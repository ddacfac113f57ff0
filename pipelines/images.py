"""Image documents (PNG, JPEG, multi-page TIFF): one frame at a time, rasters for vision and OCR."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps

from pipelines.errors import DocumentError
from pipelines.sniff import OpenedDocument

# PIL's own guard: warn above this, refuse above twice this. Our image budget is checked first
# (every frame's header, before any pixel is decoded); `open_image` sets this to the budget, so
# anything PIL opens elsewhere in the process is refused above twice it.
Image.MAX_IMAGE_PIXELS = 60_000_000

# Images that say nothing trustworthy about their resolution are OCRed with their longer side
# brought up to at least this many pixels (a letter page at 200 dpi): FUNSD forms (1000 px tall)
# go from 188 words at mean confidence 78 to 225 at 88 when doubled.
OCR_MIN_LONG_SIDE = 2200
MAX_UPSCALE = 3.0
PAGE_LONG_SIDE_IN = 11.7
_PLAUSIBLE_INCHES = (2.0, 24.0)  # a stated dpi implying a page outside this is ignored


def decode_error(name: str, exc: BaseException, page: int | None = None) -> DocumentError:
    if isinstance(exc, Image.DecompressionBombError):
        return DocumentError(name, f"image too large to decode safely ({exc})", page)
    detail = str(exc).strip() or type(exc).__name__
    where = f"page {page}: " if page else ""
    return DocumentError(name, f"{where}corrupt or unreadable image ({detail})", page)


def open_image(source: OpenedDocument, max_pixels: int | None = None) -> Image.Image:
    """Open lazily (header only). With `max_pixels`, PIL's guard follows that budget."""
    data: Path | BinaryIO = source.data
    if not isinstance(data, Path):
        data.seek(0)
    if max_pixels is not None:
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Image.open(data)
    except Image.DecompressionBombError as exc:  # over twice the budget: PIL refused it
        budget = f"{max_pixels:,}" if max_pixels else "pixel"
        raise DocumentError(
            source.name, f"page 1: image too large to decode safely (over the {budget}-pixel "
            f"budget; {exc})", 1
        ) from None
    except Exception as exc:  # decoder boundary: any failure is a bad document, not a crash
        raise decode_error(source.name, exc) from None


def count_frames(source: OpenedDocument, im: Image.Image) -> int | None:
    """Frames in the file; None when a TIFF's chain of pages is damaged somewhere (the good pages
    before the damage are then read one by one until it is reached)."""
    if source.kind != "tiff":
        return 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return int(getattr(im, "n_frames", 1))
    except Exception:  # decoder boundary: counted lazily instead
        return None


def iter_frames(
    source: OpenedDocument, im: Image.Image, n: int | None, max_pages: int, max_image_pixels: int
) -> Iterator[tuple[int, Image.Image, tuple[float, float] | None]]:
    """Yield (page number, decoded frame (RGB, or L: see decoded_frame), stated dpi or None), one
    frame in memory at a time.
    With n None, frames are read until the file ends or a damaged frame is met. Each frame's
    size is read from its header (seek) and checked against the budget before it is decoded."""
    number = 0
    while n is None or number < n:
        number += 1
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PIL warns about odd EXIF etc.; errors still raise
                if number > 1:
                    try:
                        im.seek(number - 1)
                    except EOFError:
                        if n is None:
                            return
                        raise
                    if n is None and number > max_pages:
                        raise DocumentError(
                            source.name, f"too many pages (more than {max_pages})", number
                        )
                _check_declared_size(source, number, im.size, max_image_pixels)
                frame = decoded_frame(im)
                if source.kind == "jpeg":  # in place: the frame is our own copy (no third one)
                    ImageOps.exif_transpose(frame, in_place=True)
        except DocumentError:
            raise
        except Exception as exc:  # decoder boundary
            raise decode_error(source.name, exc, number) from None
        yield number, frame, stated_dpi(im)


def _check_declared_size(
    source: OpenedDocument, number: int, size: tuple[int, int], max_image_pixels: int
) -> None:
    """Refuse a frame by the size its header declares, before anything is decoded."""
    w, h = size
    if w <= 0 or h <= 0:  # a header that declares no pixels: nothing to decode
        raise DocumentError(
            source.name, f"page {number}: corrupt image (it declares {w}x{h} px)", number
        )
    if w * h > max_image_pixels:
        raise DocumentError(
            source.name,
            f"page {number}: image {w}x{h} px over the {max_image_pixels:,}-pixel budget",
            number,
        )


def decoded_frame(im: Image.Image) -> Image.Image:
    """The frame decoded into a copy of our own: L for bilevel and grey frames (a third of RGB's
    memory: a 7000x8000 fax frame is 56 MB instead of 168 MB; the rasters made from it are
    converted after resizing), RGB for the rest."""
    if im.mode in ("1", "L"):
        return im.convert("L")
    if im.mode == "RGB":
        return im.copy()
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))  # transparent = paper, not black
        return white
    if im.mode.startswith("I;16") or im.mode == "I":
        return im.point(lambda v: v / 256).convert("L")
    return im.convert("RGB")


def stated_dpi(im: Image.Image) -> tuple[float, float] | None:
    dpi = im.info.get("dpi")
    try:
        x, y = float(dpi[0]), float(dpi[1])  # type: ignore[index]
    except (TypeError, ValueError, IndexError):
        return None
    if x <= 1 or y <= 1:
        return None
    w, h = im.size
    lo, hi = _PLAUSIBLE_INCHES
    if not (lo <= max(w / x, h / y) <= hi):
        return None
    return x, y


def vision_raster(frame: Image.Image, dpi: int, src_dpi: tuple[float, float] | None) -> Image.Image:
    """The frame at `dpi` when its resolution is known. Otherwise it is taken to be at most a page
    long (A4's 11.7 in): larger photos are scaled down to that at `dpi`, smaller kept as stored."""
    if src_dpi is None:
        longest = round(PAGE_LONG_SIDE_IN * dpi)
        if max(frame.size) <= longest:
            return _rgb(frame)
        f = longest / max(frame.size)
        size = (max(1, round(frame.width * f)), max(1, round(frame.height * f)))
        return _rgb(frame.resize(size, Image.Resampling.LANCZOS))
    w = max(1, round(frame.width * dpi / src_dpi[0]))
    h = max(1, round(frame.height * dpi / src_dpi[1]))
    if (w, h) == frame.size:
        return _rgb(frame)
    return _rgb(frame.resize((w, h), Image.Resampling.LANCZOS))


def _rgb(im: Image.Image) -> Image.Image:
    return im if im.mode == "RGB" else im.convert("RGB")


def ocr_raster(
    frame: Image.Image, ocr_dpi: int, src_dpi: tuple[float, float] | None, max_pixels: int
) -> tuple[Image.Image, int | None]:
    """A greyscale raster for tesseract, and the dpi to tell it (None when unknown)."""
    grey = frame if frame.mode == "L" else frame.convert("L")  # only read, never changed
    if src_dpi is not None:
        fx, fy = ocr_dpi / src_dpi[0], ocr_dpi / src_dpi[1]
    else:
        fx = fy = max(1.0, OCR_MIN_LONG_SIDE / max(frame.size))
    fx, fy = min(fx, MAX_UPSCALE), min(fy, MAX_UPSCALE)
    area = frame.width * fx * frame.height * fy
    if area > max_pixels:  # never build an OCR raster beyond the page-pixel limit
        shrink = (max_pixels / area) ** 0.5
        fx, fy = fx * shrink, fy * shrink
    size = (max(1, round(frame.width * fx)), max(1, round(frame.height * fy)))
    if size != grey.size:
        grey = grey.resize(size, Image.Resampling.LANCZOS)
    told = round(src_dpi[0] * fx) if src_dpi is not None else None
    return grey, told
