"""Page artifacts: what the classify step needs of a page, written once by ingest.

One JSON object per page (words, boxes, text source, page size, and a small PNG raster in
base64), so a queue message carries only ids and a classifier worker never re-opens the PDF.
JSON + PNG only: no pickle. Stores are tiny: ``put(key, bytes)`` / ``get(key) -> bytes``; a
local folder now, an S3 prefix can implement the same two calls.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Protocol

from PIL import Image

from pipelines.page_content import Page

log = logging.getLogger(__name__)

ARTIFACT_VERSION = 1
# Longest side of the stored raster. The model resizes to its own square input (224 for
# LayoutLMv3), so twice that keeps enough detail for any later use while staying ~50-150 KB.
DEFAULT_RASTER_MAX_SIDE = 448


class ArtifactStore(Protocol):
    def put(self, key: str, data: bytes) -> str: ...

    def get(self, key: str) -> bytes: ...


class ArtifactNotFound(KeyError):
    """The key names no stored artifact (never written, or removed)."""


class LocalArtifactStore:
    """Artifacts as files under one folder; writes are atomic (temp file + rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"artifact key escapes the store: {key!r}")
        return path

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ArtifactNotFound(key) from exc


def page_key(document_id: int, page_number: int) -> str:
    return f"documents/{document_id}/page-{page_number:05d}.json"


def downsize(image: Image.Image, max_side: int = DEFAULT_RASTER_MAX_SIDE) -> Image.Image:
    img = image.convert("RGB")
    scale = max_side / max(img.size)
    if scale < 1.0:
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.BILINEAR)
    return img


def encode_page(
    page: Page, *, raster_max_side: int = DEFAULT_RASTER_MAX_SIDE, max_bytes: int | None = None
) -> bytes:
    """The page's artifact: its number, ingest raster size, text source, words, boxes and the
    raster downsized to `raster_max_side` (what extraction adds besides is not kept).

    With `max_bytes` it is at most that long: words beyond the ones that fit are dropped from
    the end (reading order: the model reads only the first few hundred tokens), and only when
    the raster alone is over it is the raster made smaller (halving its longest side); a page
    is never refused for its size (logged when cut)."""
    number, image = page.number, page.image
    head = {"version": ARTIFACT_VERSION, "number": number, "width": page.width,
            "height": page.height, "text_source": page.text_source}
    png = _png(image, raster_max_side)
    word_list = list(page.words)
    box_list = [list(map(int, b)) for b in page.boxes]
    data = _dump(head, word_list, box_list, png)
    if max_bytes is None or len(data) <= max_bytes:
        return data
    side = raster_max_side
    while len(_dump(head, [], [], png)) > max_bytes and side > 1:
        side = max(1, side // 2)
        png = _png(image, side)
    base = len(_dump(head, [], [], png))
    # Bytes each kept word adds: its JSON string and its box, each with a separating comma.
    room, keep = max_bytes - base, 0
    for k, (w, b) in enumerate(zip(word_list, box_list, strict=True)):
        room -= len(json.dumps(w)) + len(json.dumps(b, separators=(",", ":"))) + (2 if k else 0)
        if room < 0:
            break
        keep = k + 1
    data = _dump(head, word_list[:keep], box_list[:keep], png)
    log.warning(
        "page %d artifact over %d bytes: kept %d of %d words, raster side %d",
        number, max_bytes, keep, len(word_list), side,
    )
    return data


def _png(image: Image.Image, max_side: int) -> str:
    buf = io.BytesIO()
    # zlib level 3: 14 ms and 66 KiB per realdocs page against level 6's 31 ms and 82 KiB
    # (lossless either way; measured on 15 contract/receipt pages).
    downsize(image, max_side).save(buf, format="PNG", optimize=False, compress_level=3)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _dump(head: dict, words: list[str], boxes: list[list[int]], png: str) -> bytes:
    doc = {**head, "words": words, "boxes": boxes, "raster_png": png}
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def decode_page(data: bytes) -> Page:
    """The page an artifact holds (its image the stored, downsized raster)."""
    doc = json.loads(data)
    if doc.get("version") != ARTIFACT_VERSION:
        raise ValueError(f"unsupported page artifact version {doc.get('version')!r}")
    image = Image.open(io.BytesIO(base64.b64decode(doc["raster_png"])))
    image.load()
    return Page(
        number=int(doc["number"]),
        width=int(doc["width"]),
        height=int(doc["height"]),
        text_source=str(doc["text_source"]),
        words=[str(w) for w in doc["words"]],
        boxes=[(int(a), int(b), int(c), int(d)) for a, b, c, d in doc["boxes"]],
        image=image.convert("RGB"),
    )


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def raster_png(data: bytes) -> bytes:
    """The stored raster's PNG bytes as they are (no decoding: what a viewer shows); ValueError
    when the artifact is of another version or holds no PNG."""
    doc = json.loads(data)
    if doc.get("version") != ARTIFACT_VERSION:
        raise ValueError(f"unsupported page artifact version {doc.get('version')!r}")
    png = base64.b64decode(doc["raster_png"], validate=True)
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("page artifact raster is not a PNG")
    return png


def open_artifact_store(url: str) -> ArtifactStore:
    """A store from a settings URL: a local folder (path or file://). S3 is added by its owner."""
    if url.startswith("file://"):
        from urllib.parse import unquote, urlparse

        return LocalArtifactStore(unquote(urlparse(url).path))
    if "://" in url:
        raise ValueError(f"no artifact store for {url!r} (supported here: a local folder)")
    return LocalArtifactStore(url)
