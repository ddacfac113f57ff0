"""Page artifacts stored before the shared page type (pipelines.page_content) still decode, and
encoding a page writes the same JSON layout: stored artifacts outlive the code that wrote them."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from pipelines.artifacts import decode_page, encode_page, raster_png
from pipelines.page_content import Page

# Written by the encoder of commit d1fa133 (before `Page`): a 4x3 red raster, two words.
STORED = (
    b'{"version":1,"number":2,"width":4,"height":3,"text_source":"text_layer",'
    b'"words":["h\\u00e9llo","x"],"boxes":[[1,2,3,4],[0,0,1000,1000]],'
    b'"raster_png":"iVBORw0KGgoAAAANSUhEUgAAAAQAAAADCAIAAAA7ljmRAAAAFUlEQVR4XmM8wcXFAANMcBaQgc'
    b'IBACEmAOJ/ygHeAAAAAElFTkSuQmCC"}'
)


def test_an_artifact_stored_before_the_page_type_decodes() -> None:
    page = decode_page(STORED)
    assert isinstance(page, Page)
    assert (page.number, page.width, page.height, page.text_source) == (2, 4, 3, "text_layer")
    assert page.words == ["héllo", "x"]
    assert page.boxes == [(1, 2, 3, 4), (0, 0, 1000, 1000)]
    assert page.image.mode == "RGB" and page.image.size == (4, 3)
    assert page.image.tobytes() == bytes([200, 10, 10]) * 12


def test_encoding_writes_the_stored_layout_and_nothing_extraction_adds() -> None:
    page = Page(number=2, width=4, height=3, image=Image.new("RGB", (4, 3), (200, 10, 10)),
                words=["héllo", "x"], boxes=[(1, 2, 3, 4), (0, 0, 1000, 1000)],
                text_source="text_layer", ms=12.5, reason="text layer", doc_key="a.pdf")
    data = encode_page(page)
    stored = json.loads(STORED)
    fresh = json.loads(data)
    assert list(fresh) == list(stored)  # same keys, same order
    assert {k: v for k, v in fresh.items() if k != "raster_png"} == {
        k: v for k, v in stored.items() if k != "raster_png"
    }
    # The PNG's bytes depend on the zlib build; its pixels do not.
    assert decode_page(data).image.tobytes() == decode_page(STORED).image.tobytes()
    assert data.startswith(STORED[: STORED.index(b'"raster_png"')])


def test_the_stored_raster_is_read_without_decoding_it() -> None:
    png = raster_png(STORED)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert Image.open(io.BytesIO(png)).size == (4, 3)
    assert png == base64.b64decode(json.loads(STORED)["raster_png"])  # the bytes as stored
    stored = json.loads(STORED)
    for bad in ({**stored, "version": 2}, {**stored, "raster_png": "R0lGODlh"},
                {**stored, "raster_png": "not base64!"}):
        with pytest.raises(ValueError):
            raster_png(json.dumps(bad).encode())
