"""Words and boxes from a PDF page's text layer (pdfium), normalised to 0-1000.

pdfium gives characters, not words, and only inserts a space where the file has one or where it
guesses one; PDFs printed from browsers often place each word separately with no space character,
so words are cut on whitespace *and* on horizontal gaps between characters (measured against
`pdftotext -bbox`, which does the same). Measured on realdocs: ~10 ms a page (pdftotext: 12 ms
with its process start; pdfplumber: 140 ms).
"""

from __future__ import annotations

import ctypes

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as raw

Box = tuple[int, int, int, int]

# A gap wider than this share of the line height (font ascent to descent) between two adjacent
# characters ends a word. Inter-letter gaps are ~0 with kerning noise; a space is ~0.25 em.
# Word-multiset F1 against pdftotext on 60 realdocs pages: 0.988 at 0.06-0.10, 0.982 at 0.12,
# 0.963 at 0.15, 0.944 at 0.2.
WORD_GAP = 0.1


def page_transform(page: pdfium.PdfPage) -> tuple[float, float, float, float, float, float]:
    """Affine map from PDF page space to 0-1000 rendered space (rotation and crop box included),
    found once per page from three points with pdfium's own PageToDevice."""
    size = 1_000_000  # large virtual device so the integer outputs keep precision
    dx, dy = ctypes.c_int(), ctypes.c_int()

    def dev(x: float, y: float) -> tuple[float, float]:
        raw.FPDF_PageToDevice(page.raw, 0, 0, size, size, 0, x, y, dx, dy)
        return dx.value / 1000.0, dy.value / 1000.0

    ox, oy = dev(0.0, 0.0)
    ax, ay = dev(1000.0, 0.0)
    bx, by = dev(0.0, 1000.0)
    return ((ax - ox) / 1000, (bx - ox) / 1000, ox, (ay - oy) / 1000, (by - oy) / 1000, oy)


# Characters read per allowed word: the densest realdocs pages average under 8 characters a word
# (spaces included), so 16 leaves the word budget, not the character cut, as the binding limit.
CHARS_PER_WORD = 16


def extract_words(
    page: pdfium.PdfPage, max_words: int | None = None
) -> tuple[list[str], list[Box]]:
    """Words in content-stream order with their boxes in 0-1000 page space (callers sort them).
    With `max_words`, at most that many, read from the start of the content stream: a page that
    carries 300,000 words costs what a dense page does (seconds per page otherwise)."""
    textpage = page.get_textpage()
    try:
        words, boxes = _words(textpage, page_transform(page), max_words)
    finally:
        textpage.close()
    if max_words is not None and len(words) > max_words:
        words, boxes = words[:max_words], boxes[:max_words]
    return words, boxes


def _words(
    textpage: pdfium.PdfTextPage, t: tuple[float, ...], max_words: int | None = None
) -> tuple[list[str], list[Box]]:
    # One ctypes call per character (its loose box: advance width x font ascent-descent), then
    # the word cuts and box unions in numpy: ~10 ms for a dense page. The loose box is also the
    # word box (it spans the line height, as an OCR word box does).
    n = textpage.count_chars()
    if max_words is not None:
        n = min(n, max_words * CHARS_PER_WORD)
    if n == 0:
        return [], []
    tp = textpage.raw
    text = textpage.get_text_range(0, n)
    if len(text) != n:  # surrogate pairs shift indices: take characters one by one
        text = "".join(chr(raw.FPDFText_GetUnicode(tp, i) or 32) for i in range(n))
    text = text.replace("\x02", "-")  # pdfium's mark for a hyphen at a line end
    keep = np.fromiter((c.isprintable() and not c.isspace() for c in text), bool, n)
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        return [], []
    rect = raw.FS_RECTF()
    get_box = raw.FPDFText_GetLooseCharBox
    flat = []
    for i in idx.tolist():
        get_box(tp, i, rect)
        flat += (rect.left, rect.bottom, rect.right, rect.top)
    b = np.asarray(flat, dtype=np.float64).reshape(-1, 4)  # left, bottom, right, top
    starts = np.ones(len(idx), dtype=bool)
    if len(idx) > 1:
        p, c = b[:-1], b[1:]
        adjacent = idx[1:] == idx[:-1] + 1  # no whitespace between them in the text
        starts[1:] = ~adjacent | _breaks(p, c)
    first = np.flatnonzero(starts)
    lefts = np.minimum.reduceat(b[:, 0], first)
    bottoms = np.minimum.reduceat(b[:, 1], first)
    rights = np.maximum.reduceat(b[:, 2], first)
    tops = np.maximum.reduceat(b[:, 3], first)
    bounds = np.append(first, len(idx))
    chars = [text[i] for i in idx.tolist()]
    words = ["".join(chars[bounds[k] : bounds[k + 1]]) for k in range(len(first))]
    boxes = _to_norm_all(t, lefts, bottoms, rights, tops)
    return words, boxes


def _to_norm_all(
    t: tuple[float, ...], x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray
) -> list[Box]:
    """PDF-space boxes to 0-1000 rendered space (all four corners, so rotation is handled)."""
    a, b, c, d, e, f = t
    corners = ((x0, y0), (x1, y1), (x0, y1), (x1, y0))
    xs = np.stack([a * x + b * y + c for x, y in corners])
    ys = np.stack([d * x + e * y + f for x, y in corners])
    out = np.clip(np.rint(np.stack([xs.min(0), ys.min(0), xs.max(0), ys.max(0)], 1)), 0, 1000)
    return [tuple(row) for row in out.astype(int).tolist()]


def _breaks(p: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Does a word end between consecutive loose boxes p and c (rows: left, bottom, right, top)?"""
    ph, ch = p[:, 3] - p[:, 1], c[:, 3] - c[:, 1]
    pw, cw = p[:, 2] - p[:, 0], c[:, 2] - c[:, 0]
    v_overlap = np.minimum(p[:, 3], c[:, 3]) - np.maximum(p[:, 1], c[:, 1])
    h_overlap = np.minimum(p[:, 2], c[:, 2]) - np.maximum(p[:, 0], c[:, 0])
    same_line = (ph > 0) & (ch > 0) & (v_overlap > 0.5 * np.minimum(ph, ch))
    height = np.maximum(ph, ch)
    gap_x = c[:, 0] - p[:, 2]
    line_break = (gap_x > WORD_GAP * height) | (gap_x < -0.5 * height)
    # Vertical text (e.g. the arXiv stamp in paper margins) runs along y.
    column = (pw > 0) & (cw > 0) & (h_overlap > 0.5 * np.minimum(pw, cw))
    gap_y = np.maximum(c[:, 1] - p[:, 3], p[:, 1] - c[:, 3])
    column_break = gap_y > WORD_GAP * np.maximum(pw, cw)
    return np.where(same_line, line_break, np.where(column, column_break, True))
