"""Every kind of bad input gives one DocumentError naming the file and the reason, and pages that
were good before the damage still come out."""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pagedocs import text_image, write_text_pdf
from reportlab.pdfgen import canvas

from pipelines.pages import DocumentError, IngestOptions, count_pages, iter_pages

TEXT = IngestOptions(ocr_mode="text")


def read_all(path, options: IngestOptions = TEXT) -> tuple[list[int], DocumentError | None]:
    numbers: list[int] = []
    try:
        for page in iter_pages(path, options=options):
            numbers.append(page.number)
    except DocumentError as exc:
        assert "\n" not in str(exc)
        assert str(exc) == f"{exc.name}: {exc.reason}"
        return numbers, exc
    return numbers, None


def png_with_header(width: int, height: int, idat: bytes = b"\x00" * 64) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(idat))
        + chunk(b"IEND", b"")
    )


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.pdf"
    path.write_bytes(b"")
    pages, err = read_all(path)
    assert pages == [] and err is not None
    assert str(err) == f"{path}: empty file (0 bytes)"


def test_missing_file_and_directory(tmp_path):
    _, err = read_all(tmp_path / "nope.pdf")
    assert err is not None and err.reason == "no such file"
    _, err = read_all(tmp_path)
    assert err is not None and "directory" in err.reason


def test_non_pdf_bytes_named_pdf(tmp_path):
    path = tmp_path / "letter.pdf"
    path.write_text("Dear customer, this is plain text.")
    _, err = read_all(path)
    assert err is not None and err.name == str(path)
    assert err.reason.startswith("not a PDF, TIFF, PNG or JPEG file")


def test_kind_is_sniffed_not_taken_from_the_name(tmp_path):
    path = tmp_path / "actually-a-png.pdf"
    text_image(["hello"], (300, 200)).save(path, format="PNG")
    assert [p.number for p in iter_pages(path, options=TEXT)] == [1]


def test_encrypted_pdf(tmp_path):
    path = write_text_pdf(tmp_path / "locked.pdf", encrypt="s3cret")
    pages, err = read_all(path)
    assert pages == [] and err is not None
    assert err.reason == "encrypted PDF (password required)"


def zero_page_pdf() -> bytes:
    """A well-formed PDF whose page tree is empty: pdfium loads it (no load error)."""
    objects = [b"<</Type/Catalog/Pages 2 0 R>>", b"<</Type/Pages/Kids[]/Count 0>>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<</Size %d/Root 1 0 R>>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_page_less_pdf_after_an_encrypted_one_is_not_called_encrypted(tmp_path):
    # pdfium keeps its last load error until the next failing load; a page-less PDF loads fine,
    # so reading that error for it reported whatever failed before it (here: the password).
    locked = write_text_pdf(tmp_path / "locked.pdf", encrypt="s3cret")
    empty = tmp_path / "empty-tree.pdf"
    empty.write_bytes(zero_page_pdf())
    for source in (empty, locked, empty, locked, io.BytesIO(empty.read_bytes())):
        if isinstance(source, io.BytesIO):
            assert count_pages(source, name="stream") == 0
            source.seek(0)
        pages, err = read_all(source)
        assert pages == [] and err is not None
        encrypted = "encrypted PDF (password required)"
        assert err.reason == (encrypted if source == locked else "document has no pages")
    assert count_pages(empty) == 0


def test_truncated_pdf_that_cannot_be_rebuilt(tmp_path):
    data = write_text_pdf(tmp_path / "full.pdf", pages=5).read_bytes()
    path = tmp_path / "cut.pdf"
    path.write_bytes(data[: len(data) // 2])
    pages, err = read_all(path)
    assert pages == [] and err is not None
    assert err.reason == "truncated PDF (the file ends early)"


def test_truncated_pdf_pages_recovered_before_the_error(tmp_path):
    # Cut inside the trailer: pdfium rebuilds all five pages, then the cut is reported.
    data = write_text_pdf(tmp_path / "full.pdf", pages=5).read_bytes()
    path = tmp_path / "cut.pdf"
    path.write_bytes(data[:-8])
    pages, err = read_all(path)
    assert pages == [1, 2, 3, 4, 5]
    assert err is not None and err.reason.startswith("truncated PDF")


def test_broken_xref_offsets_are_repaired(tmp_path):
    # Every offset in the cross-reference table is wrong; pdfium rebuilds the table by scanning
    # the objects, as viewers do, so the document still reads correctly rather than failing.
    data = write_text_pdf(tmp_path / "ok.pdf", pages=2).read_bytes()
    start = data.rfind(b"\nxref")
    broken = data[:start] + re.sub(rb"\d{10} 00000 n", b"0000000999 00000 n", data[start:])
    path = tmp_path / "xref.pdf"
    path.write_bytes(broken)
    pages = list(iter_pages(path, options=TEXT))
    assert [p.words[:2] for p in pages] == [["Page", "1"], ["Page", "2"]]


def test_garbage_xref_is_a_clear_error(tmp_path):
    data = write_text_pdf(tmp_path / "ok.pdf", pages=2).read_bytes()
    start, end = data.rfind(b"\nxref"), data.rfind(b"startxref")
    path = tmp_path / "xref.pdf"
    path.write_bytes(data[:start] + b"\n" + b"#garbage#" * 20 + b"\n" + data[end:])
    pages, err = read_all(path)
    assert pages == [] and err is not None
    assert "corrupt" in err.reason


def test_corrupt_png(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(png_with_header(300, 200, idat=b"not really pixels"))
    pages, err = read_all(path)
    assert pages == [] and err is not None
    assert err.reason.startswith("page 1: corrupt or unreadable image")


def test_png_cut_in_its_header(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(png_with_header(300, 200)[:20])
    _, err = read_all(path)
    assert err is not None and "corrupt or unreadable image" in err.reason


def two_page_tiff(path: Path) -> bytes:
    frames = [text_image([f"page {n}"], (400, 300)).convert("L") for n in (1, 2)]
    frames[0].save(path, save_all=True, append_images=frames[1:], compression="tiff_lzw")
    return path.read_bytes()


def test_multipage_tiff_reads_all_pages(tmp_path):
    path = tmp_path / "two.tif"
    two_page_tiff(path)
    assert [p.number for p in iter_pages(path, options=TEXT)] == [1, 2]
    assert count_pages(path) == 2


def test_corrupt_tiff_second_page_after_a_good_first(tmp_path):
    data = bytearray(two_page_tiff(tmp_path / "two.tif"))
    # The second page's compressed strip sits in the last quarter of the file.
    start = len(data) // 2 + len(data) // 4
    data[start : start + 200] = b"\xff" * 200
    path = tmp_path / "bad.tif"
    path.write_bytes(bytes(data))
    pages, err = read_all(path)
    assert pages == [1]
    assert err is not None and err.page == 2 and "page 2: corrupt" in err.reason


def test_truncated_tiff_yields_its_first_page(tmp_path):
    data = two_page_tiff(tmp_path / "two.tif")
    path = tmp_path / "cut.tif"
    path.write_bytes(data[: int(len(data) * 0.75)])
    pages, err = read_all(path)
    assert pages == [1]
    assert err is not None and err.page == 2


def test_too_many_pages(tmp_path):
    path = write_text_pdf(tmp_path / "long.pdf", pages=4)
    pages, err = read_all(path, IngestOptions(ocr_mode="text", max_pages=3))
    assert pages == [] and err is not None
    assert err.reason == "too many pages (4; the limit is 3)"


def test_png_header_claiming_a_huge_image(tmp_path):
    # 9000 x 9000: over our 60 MP image budget (checked from the header, nothing is decoded).
    path = tmp_path / "bomb.png"
    path.write_bytes(png_with_header(9000, 9000))
    _, err = read_all(path)
    assert err is not None and err.page == 1
    assert "page 1: image 9000x9000 px over the 60,000,000-pixel budget" in err.reason
    # 100000 x 100000: PIL's own bomb guard fires while opening; still one DocumentError.
    path.write_bytes(png_with_header(100_000, 100_000))
    _, err = read_all(path)
    assert err is not None and "too large to decode safely" in err.reason


def test_pdf_page_too_large_to_rasterise(tmp_path):
    path = tmp_path / "poster.pdf"
    c = canvas.Canvas(str(path), pagesize=(14_000, 14_000))  # ~194 in square: 378 MP at 100 dpi
    c.drawString(100, 100, "tiny text on a huge page")
    c.showPage()
    c.save()
    _, err = read_all(path)
    assert err is not None and err.page == 1 and "too many pixels at 100 dpi" in err.reason


def test_file_too_large(tmp_path):
    path = write_text_pdf(tmp_path / "doc.pdf")
    size = path.stat().st_size
    _, err = read_all(path, IngestOptions(ocr_mode="text", max_file_bytes=size - 1))
    assert err is not None and err.reason.startswith(f"file too large ({size} bytes")
    # Streams are held to the same limit, also when they cannot seek.
    with pytest.raises(DocumentError, match="file too large"):
        list(iter_pages(io.BytesIO(path.read_bytes()), options=IngestOptions(max_file_bytes=10)))


def test_ocr_timeout_is_a_clear_error_for_that_page(tmp_path):
    path = tmp_path / "scan.png"
    text_image(["a page that takes a while to read"] * 8).save(path)
    pages, err = read_all(path, IngestOptions(ocr_mode="ocr", ocr_timeout_s=0.05))
    assert pages == [] and err is not None and err.page == 1
    assert err.reason == "page 1: OCR timed out after 0.05 s"


def test_good_pages_before_an_ocr_timeout_are_yielded(tmp_path):
    # Page 1 has a text layer (no OCR); page 2 is a scan whose OCR cannot finish in time.
    path = tmp_path / "mixed.pdf"
    c = canvas.Canvas(str(path))
    c.drawString(72, 720, "born digital first page")
    c.showPage()
    buf = io.BytesIO()
    text_image(["scanned second page"] * 6).save(buf, format="PNG")
    buf.seek(0)
    from reportlab.lib.utils import ImageReader

    c.drawImage(ImageReader(buf), 0, 0, width=595, height=842)
    c.showPage()
    c.save()
    pages, err = read_all(path, IngestOptions(ocr_timeout_s=0.05))
    assert pages == [1]
    assert err is not None and err.page == 2 and "OCR timed out" in err.reason


def _seed_documents() -> dict[str, bytes]:
    tmp = io.BytesIO()
    c = canvas.Canvas(tmp)
    for n in (1, 2):
        c.drawString(72, 720, f"page {n} of a small document")
        c.showPage()
    c.save()
    docs = {"pdf": tmp.getvalue()}
    for fmt, mode in (("PNG", "RGB"), ("JPEG", "RGB"), ("TIFF", "L")):
        buf = io.BytesIO()
        text_image(["hi"], (160, 90)).convert(mode).save(buf, format=fmt)
        docs[fmt.lower()] = buf.getvalue()
    return docs


SEEDS = _seed_documents()


@settings(max_examples=120, deadline=None, derandomize=True)
@given(
    kind=st.sampled_from(sorted(SEEDS)),
    edits=st.lists(
        st.tuples(
            st.floats(0, 1),
            st.sampled_from(["set", "cut", "insert"]),
            st.binary(min_size=1, max_size=24),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_damaged_bytes_never_raise_anything_but_document_error(kind, edits):
    data = bytearray(SEEDS[kind])
    for where, op, blob in edits:
        i = int(where * (len(data) - 1))
        if op == "set":
            data[i : i + len(blob)] = blob
        elif op == "cut":
            del data[i : i + 8 * len(blob)]
        else:
            data[i:i] = blob
    try:
        for page in iter_pages(io.BytesIO(bytes(data)), name="fuzzed", options=TEXT):
            assert len(page.words) == len(page.boxes)
    except DocumentError as exc:
        assert str(exc).startswith("fuzzed: ") and "\n" not in str(exc)
