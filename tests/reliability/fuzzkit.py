"""Fuzzing ingestion, shared by tests/reliability/test_fuzz_ingest.py and bench/fuzz_ingest.py
(imported as `fuzzkit`: tests/ folders are not packages; the bench script loads this file by
its path).

- `Child`: the long-lived ingestion process (fuzz_child.py), one JSON request and answer per
  line, restarted after a crash or a hang. It reports each case's peak RSS (VmHWM, reset per
  case) and runs under an RLIMIT_AS safety net.
- Corpus: base inputs taken from realdocs (read in place, never copied into the repository):
  small PDFs, PNGs, JPEGs and TIFFs as they are, and page rasters of realdocs PDFs re-encoded as
  standalone PNG/JPEG/TIFF (several TIFF compressions, multi-frame TIFFs).
- Recipes: a case is a JSON recipe (base, splice donor, ops, options) drawn from
  (seed, case index) alone, so any case can be rebuilt without running the ones before it;
  `build(recipe)` gives the same bytes on every run with the same realdocs and library versions.
- Findings (crash, hang, an exception other than DocumentError, a multi-line error, RSS over the
  bound) are kept in fuzz_regressions/ as <sha>.json: request, recipe, what was seen. A fuzz
  input is a realdocs file + ops, and real documents are never copied into the repository, so
  it is kept as its recipe (replayed where realdocs are); a self-contained reproducer (made by
  hand, no realdocs bytes) under 200 KB is kept as <sha>.bin beside its .json. The default
  suite replays every one.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import os
import random
import re
import select
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
REALDOCS = Path(
    os.environ.get("DOCTRIAGE_REALDOCS", REPO.parent / "shared" / "datasets" / "realdocs")
)
CHILD = Path(__file__).with_name("fuzz_child.py")
REGRESSIONS = Path(__file__).with_name("fuzz_regressions")

MIB = 1024 * 1024
# The stated peak-RSS bound of one ingest process (issue 16: "peak RSS under 1 GB").
RSS_BOUND = 1024 * MIB
# Address-space cap of the child: a safety net so a runaway decoder fails (MemoryError, a
# finding) instead of taking the machine; the bound itself is checked on VmHWM.
AS_CAP = 3 * 1024 * MIB
HANG_S = 60.0  # per case: well past the slowest legitimate parse at these options
FIXTURE_MAX_BYTES = 200_000
BASE_MAX_BYTES = 300_000  # realdocs inputs larger than this are not used as bases (speed)
BASE_MAX_PAGES = 6

# Request options: the shipped defaults except the OCR switch (most cases text only: OCR is
# ~100x the cost of a text-layer page), at most 60 pages, and for OCR cases shorter OCR and
# ingest time budgets, so a legitimately long document (50 OCRed frames) ends with its
# DocumentError well inside HANG_S: 30 s + one page's OCR (15 s) < 60 s.
TEXT_REQUEST: dict[str, Any] = {"ocr_mode": "text", "dpi": 100}
OCR_REQUEST: dict[str, Any] = {
    "ocr_mode": "auto",
    "dpi": 100,
    "ocr_timeout_s": 15.0,
    "max_ingest_s": 30.0,
}


# -- the child ---------------------------------------------------------------------------------


class Child:
    """The ingestion child, restarted after a crash or a hang (both recorded as findings)."""

    def __init__(self, as_cap: int = AS_CAP) -> None:
        self.proc: subprocess.Popen | None = None
        self.started = 0
        self.as_cap = as_cap

    def _start(self) -> subprocess.Popen:
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "OMP_THREAD_LIMIT": "1",
            "DOCTRIAGE_FUZZ_AS_BYTES": str(self.as_cap),
        }
        self.started += 1
        return subprocess.Popen(
            [sys.executable, str(CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=REPO,
        )

    def run(self, request: dict, timeout: float = HANG_S) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:  # died before reading the request
            code = self.proc.wait(10)
            self.proc = None
            return {"crash": f"child died with status {code}"}
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.close()
            return {"hang": f"no answer in {timeout:g} s"}
        line = self.proc.stdout.readline()
        if not line.endswith("\n"):  # nothing, or cut off mid-answer: the child died
            code = self.proc.wait(10)
            self.proc = None
            return {"crash": f"child died with status {code}"}
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def classify(got: dict, rss_bound: int = RSS_BOUND) -> tuple[str, str | None]:
    """(outcome kind, finding detail or None). Kinds: pages, document_error (not findings);
    crash, hang, exception, multiline_error, rss (findings)."""
    for kind in ("crash", "hang"):
        if kind in got:
            return kind, got[kind]
    if "unexpected" in got:
        return "exception", f"{got['unexpected']}\n{got.get('trace', '')}"
    peak = int(got.get("peak_rss") or 0)
    if peak > rss_bound:
        return "rss", f"peak RSS {peak / MIB:.0f} MiB over the {rss_bound / MIB:.0f} MiB bound"
    error = got.get("error")
    if error is None:
        return "pages", None
    if "\n" in error or "\r" in error:
        return "multiline_error", error
    return "document_error", None


# -- corpus ------------------------------------------------------------------------------------

KIND_OF_SUFFIX = {
    "pdf": "pdf",
    "png": "png",
    "jpg": "jpeg",
    "jpeg": "jpeg",
    "tif": "tiff",
    "tiff": "tiff",
}
# Page rasters of realdocs PDFs written as standalone images: (format name, frames).
RASTER_FORMATS = (
    "png-rgb",
    "png-l",
    "png-1",
    "png-p",
    "jpeg",
    "jpeg-progressive",
    "tiff-lzw",
    "tiff-g4",
    "tiff-jpeg",
    "tiff-deflate",
    "tiff-raw-l",
    "tiff-g4-multi",
    "tiff-lzw-multi",
)
RASTER_DPI = 72


def realdocs_available() -> bool:
    return (REALDOCS / "manifest.csv").exists()


@functools.cache
def pools() -> dict[str, list[str]]:
    """Base ids by family: 'pdf' and 'image' (realdocs files as they are: 'file:<path>') and
    'raster' ('raster:<format>:<pdf path>'), each sorted: the same realdocs give the same pools."""
    with open(REALDOCS / "manifest.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    pdfs, images = [], []
    for r in sorted(rows, key=lambda r: r["path"]):
        kind = KIND_OF_SUFFIX.get(r["path"].rsplit(".", 1)[-1].lower())
        pages = int(r["pages"] or 0) if (r["pages"] or "0").isdigit() else 0
        if kind is None or int(r["bytes"]) > BASE_MAX_BYTES or pages > BASE_MAX_PAGES:
            continue
        (pdfs if kind == "pdf" else images).append(f"file:{r['path']}")
    # Rasters from every 8th small PDF: enough variety, bounded build cost.
    rasters = [f"raster:{fmt}:{p[5:]}" for p in pdfs[::8] for fmt in RASTER_FORMATS]
    return {"pdf": pdfs, "image": images, "raster": rasters}


@functools.lru_cache(maxsize=512)
def base_bytes(base: str) -> bytes:
    if base.startswith("file:"):
        return (REALDOCS / base[5:]).read_bytes()
    if base.startswith("raster:"):
        _, fmt, path = base.split(":", 2)
        return _raster(fmt, path)
    raise ValueError(f"unknown base {base!r}")


@functools.lru_cache(maxsize=64)
def _page_images(path: str) -> tuple[Any, ...]:
    from pipelines.pages import IngestOptions, iter_pages

    opts = IngestOptions(ocr_mode="text", dpi=RASTER_DPI)
    return tuple(p.image for p in iter_pages(REALDOCS / path, options=opts))


def _raster(fmt: str, path: str) -> bytes:
    frames = list(_page_images(path))
    multi = fmt.endswith("-multi")
    frames = (frames * 3)[:3] if multi else frames[:1]  # multi: 3 frames, whatever the pages
    name = fmt.removesuffix("-multi")
    conv = {"png-l": "L", "png-1": "1", "tiff-g4": "1", "tiff-raw-l": "L"}
    ims = [f.convert(conv.get(name, "RGB")) for f in frames]
    if name == "png-p":
        ims = [im.convert("P", palette=1, colors=16) for im in ims]  # 1 = Palette.ADAPTIVE
    buf = io.BytesIO()
    kw: dict[str, Any] = {"dpi": (RASTER_DPI, RASTER_DPI)}
    if name.startswith("png"):
        ims[0].save(buf, format="PNG", **kw)
    elif name.startswith("jpeg"):
        ims[0].save(buf, format="JPEG", quality=60, progressive=name.endswith("progressive"), **kw)
    else:
        comp = {
            "tiff-lzw": "tiff_lzw",
            "tiff-g4": "group4",
            "tiff-jpeg": "jpeg",
            "tiff-deflate": "tiff_adobe_deflate",
            "tiff-raw-l": "raw",
        }[name]
        ims[0].save(
            buf, format="TIFF", compression=comp, save_all=multi, append_images=ims[1:], **kw
        )
    return buf.getvalue()


def family_of(base: str) -> str:
    if base.startswith("raster:"):
        return "raster"
    return "pdf" if base.endswith(".pdf") or base.endswith(".PDF") else "image"


def format_of(data: bytes) -> str:
    from pipelines.sniff import detect_kind

    return detect_kind(data[:1024]) or "unknown"


# -- recipes -----------------------------------------------------------------------------------

HUGE = (0, 1, 65535, 40000, 100_000, 2**31 - 1, 2**32 - 1, 30000, 12000)
PDF_NUMBER_KEYS = (
    "Length",
    "Count",
    "Size",
    "W",
    "BitsPerComponent",
    "Columns",
    "Predictor",
    "Colors",
    "N",
    "K",
    "Rows",
    "First",
    "Prev",
    "Rotate",
    "Width",
    "Height",
)
PDF_NUMBERS = (0, -1, 1, 2, 16, 255, 65535, 2**31 - 1, 2**31, 10**12, -(2**31))
# TIFF tags set to odd values by `tag`: BitsPerSample, Compression, Photometric, StripOffsets,
# SamplesPerPixel, RowsPerStrip, StripByteCounts, PlanarConfiguration, Predictor, TileWidth,
# TileLength, ExtraSamples, SampleFormat.
TIFF_TAGS = (258, 259, 262, 273, 277, 278, 279, 284, 317, 322, 323, 338, 339)
TIFF_VALUES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 255, 32773, 65535, 2**31 - 1, 2**32 - 1)
PDF_BOXES = (
    "0 0 0 0",
    "0 0 1e9 1e9",
    "0 0 -612 -792",
    "0 0 14400 14400",
    "0 0 0.01 0.01",
    "0 0 200000 3",
    "612 792 0 0",
    "0 0 nan 5",
    "0 0 1",
)


def draw_recipe(
    seed: int,
    index: int,
    *,
    ocr_share: float = 0.0,
    families: tuple[str, ...] = ("pdf", "image", "raster"),
) -> dict:
    """Case `index` of the run with `seed`: depends on nothing else (and the realdocs)."""
    rng = random.Random(f"doctriage-fuzz:{seed}:{index}")
    weights = {"pdf": 0.5, "image": 0.2, "raster": 0.3}
    fams = [f for f in families if pools()[f]]
    family = rng.choices(fams, weights=[weights[f] for f in fams])[0]
    base = rng.choice(pools()[family])
    donors = [b for f in fams for b in pools()[f] if (f == "pdf") == (family == "pdf")]
    other = rng.choice(donors)
    ops = [_draw_op(rng, family) for _ in range(rng.randint(1, 4))]
    request = dict(OCR_REQUEST if rng.random() < ocr_share else TEXT_REQUEST)
    return {
        "seed": seed,
        "index": index,
        "base": base,
        "other": other,
        "ops": ops,
        "request": request,
    }


def _huge_or_any_side(rng: random.Random) -> int:
    return rng.choice(HUGE) if rng.random() < 0.7 else rng.randint(2, 20000)


# The arguments of each op after its kind, drawn in this order (a recipe's ops depend on it).
# Byte ops start at a relative offset; structural ops name what they rewrite.
_BYTE_OP_ARGS: dict[str, Callable[[random.Random], list]] = {
    "flip": lambda rng: [rng.randint(1, 255), rng.choice([1, 1, 2, 8, 64])],
    "truncate": lambda rng: [],
    "splice": lambda rng: [round(rng.random(), 6), rng.randint(1, 4096)],
    "zero": lambda rng: [rng.randint(1, 2048)],
    "repeat": lambda rng: [rng.randint(1, 512), rng.randint(2, 8)],
}
_STRUCTURAL_OP_ARGS: dict[str, Callable[[random.Random], list]] = {
    "tag": lambda rng: [rng.randint(0, 3), rng.choice(TIFF_TAGS), rng.choice(TIFF_VALUES)],
    # PNG bit depth, colour type, interlace
    "ihdr": lambda rng: [rng.choice([1, 2, 4, 8, 16, 0, 3]), rng.choice([0, 2, 3, 4, 6, 1, 7]),
                         rng.choice([0, 1, 2])],
    "box": lambda rng: [rng.randint(0, 3), rng.choice(["MediaBox", "CropBox"]),
                        rng.choice(PDF_BOXES)],
    "number": lambda rng: [rng.choice(PDF_NUMBER_KEYS), rng.randint(0, 7),
                           rng.choice(PDF_NUMBERS)],
    "dims": lambda rng: [rng.randint(0, 3), _huge_or_any_side(rng), _huge_or_any_side(rng)],
    "frames": lambda rng: [rng.randint(0, 3), rng.choice([2, 6, 50, 4000])],  # which IFD, count
}


def _draw_op(rng: random.Random, family: str) -> list:
    structural = (
        ["number", "dims", "box"] if family == "pdf" else ["dims", "dims", "frames", "tag", "ihdr"]
    )
    kind = rng.choices(
        ["flip", "truncate", "splice", "zero", "repeat", *structural],
        weights=[4, 1, 2, 1, 1, *[2] * len(structural)],
    )[0]
    at = round(rng.random(), 6)  # drawn for every op, used by the byte ops
    if kind in _BYTE_OP_ARGS:
        return [kind, at, *_BYTE_OP_ARGS[kind](rng)]
    return [kind, *_STRUCTURAL_OP_ARGS[kind](rng)]


def build(recipe: dict) -> bytes:
    return mutate(base_bytes(recipe["base"]), base_bytes(recipe["other"]), recipe["ops"])


def _pdf_number(data: bytes, key: str, which: int, value: int) -> bytes:
    """The `which`-th (cyclically) `/key <number>` of a PDF set to `value`."""
    hits = list(re.finditer(rb"/" + key.encode() + rb"\s+(-?\d+(?:\.\d+)?)", data))
    if not hits:
        return data
    m = hits[which % len(hits)]
    return data[: m.start(1)] + str(value).encode() + data[m.end(1) :]


def _pdf_box(data: bytes, which: int, key: str, box: str) -> bytes:
    """The `which`-th (cyclically) /MediaBox replaced by `box`, or followed by a /CropBox of it."""
    hits = list(re.finditer(rb"/MediaBox\s*\[[^\]]*\]", data))
    if not hits:
        return data
    m = hits[which % len(hits)]
    new = f"/{key} [{box}]".encode()
    if key == "CropBox":
        new = m.group(0) + new
    return data[: m.start()] + new + data[m.end() :]


def _dims(data: bytes, which: int, w: int, h: int) -> bytes:
    """Declared image dimensions rewritten in the header, the pixels left as they are."""
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        ihdr = struct.pack(">II", w & 0xFFFFFFFF, h & 0xFFFFFFFF) + data[24:29]
        crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
        return data[:16] + ihdr + crc + data[33:]
    if data.startswith(b"\xff\xd8"):
        return _jpeg_dims(data, w, h)
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_dims(data, which, w, h)
    if b"%PDF" in data[:1024]:
        for key, value in ((b"Width", w), (b"Height", h)):
            data = _pdf_number(data, key.decode(), which, value)
        return data
    return data


def _jpeg_dims(data: bytes, w: int, h: int) -> bytes:
    i = 2
    while i + 9 < len(data) and data[i] == 0xFF:
        marker, seg = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC9, 0xCA):  # SOFn: precision, height, width
            dims = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)
            return data[: i + 5] + dims + data[i + 9 :]
        i += 2 + seg
    return data


def _tiff_ifds(data: bytes) -> tuple[str, list[int]]:
    end = "<" if data[:2] == b"II" else ">"
    offsets, off, seen = [], struct.unpack(end + "I", data[4:8])[0], set()
    while 8 <= off < len(data) - 2 and off not in seen and len(offsets) < 64:
        seen.add(off)
        offsets.append(off)
        count = struct.unpack(end + "H", data[off : off + 2])[0]
        nxt = off + 2 + 12 * count
        if nxt + 4 > len(data):
            break
        off = struct.unpack(end + "I", data[nxt : nxt + 4])[0]
    return end, offsets


def _tiff_dims(data: bytes, which: int, w: int, h: int) -> bytes:
    """ImageWidth and ImageLength of the `which`-th (cyclically) IFD set to `w` and `h`."""
    return _tiff_set_longs(data, which, {256: w, 257: h})


def _tiff_tag(data: bytes, which: int, tag: int, value: int) -> bytes:
    """Tag `tag` of the `which`-th (cyclically) IFD set to `value` (as one LONG), if present."""
    return _tiff_set_longs(data, which, {tag: value})


def _tiff_set_longs(data: bytes, which: int, values: dict[int, int]) -> bytes:
    """The entries of the `which`-th (cyclically) IFD whose tag is in `values` rewritten as one
    LONG of that value; tags the IFD lacks are not added."""
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return data
    end, ifds = _tiff_ifds(data)
    if not ifds:
        return data
    buf = bytearray(data)
    off = ifds[which % len(ifds)]
    count = struct.unpack(end + "H", buf[off : off + 2])[0]
    for k in range(count):
        e = off + 2 + 12 * k
        if e + 12 > len(buf):
            break
        tag = struct.unpack(end + "H", buf[e : e + 2])[0]
        if tag in values:
            buf[e + 2 : e + 12] = struct.pack(end + "HII", 4, 1, values[tag] & 0xFFFFFFFF)
    return bytes(buf)


def _png_ihdr(data: bytes, depth: int, colour: int, interlace: int) -> bytes:
    """PNG header's bit depth, colour type and interlace method set (CRC kept valid)."""
    if not (data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR"):
        return data
    ihdr = data[16:24] + bytes([depth, colour]) + data[26:28] + bytes([interlace])
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return data[:16] + ihdr + crc + data[33:]


def _tiff_frames(data: bytes, which: int, count: int) -> bytes:
    """A TIFF whose chain repeats one IFD `count` times (each copy pointing at the next; the
    last at 0): many frames from few bytes, sharing the same strips."""
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return data
    end, ifds = _tiff_ifds(data)
    if not ifds:
        return data
    off = ifds[which % len(ifds)]
    n = struct.unpack(end + "H", data[off : off + 2])[0]
    body = data[off : off + 2 + 12 * n]
    if len(body) < 2 + 12 * n:
        return data
    out = bytearray(data)
    start = len(out)
    size = len(body) + 4
    for k in range(count):
        nxt = start + (k + 1) * size if k + 1 < count else 0
        out += body + struct.pack(end + "I", nxt)
    out[4:8] = struct.pack(end + "I", start)
    return bytes(out)


def _flip(buf: bytearray, at: int, op: Sequence[Any], other: bytes) -> None:
    for i in range(at, min(at + op[3], len(buf))):  # xor a run of bytes
        buf[i] ^= op[2]


def _truncate(buf: bytearray, at: int, op: Sequence[Any], other: bytes) -> None:
    del buf[at:]


def _splice(buf: bytearray, at: int, op: Sequence[Any], other: bytes) -> None:
    src = min(int(op[2] * len(other)), max(0, len(other) - 1))  # a chunk of another document
    buf[at:at] = other[src : src + op[3]]


def _zero(buf: bytearray, at: int, op: Sequence[Any], other: bytes) -> None:
    buf[at : at + op[2]] = b"\x00" * len(buf[at : at + op[2]])


def _repeat(buf: bytearray, at: int, op: Sequence[Any], other: bytes) -> None:
    buf[at:at] = bytes(buf[at : at + op[2]]) * (op[3] - 1)


# Byte ops edit the buffer in place at the op's offset; structural ops rewrite a field of the
# format and take the op's arguments after its kind (how many: the second item).
_BYTE_EDITS: dict[str, Callable[[bytearray, int, Sequence[Any], bytes], None]] = {
    "flip": _flip, "truncate": _truncate, "splice": _splice, "zero": _zero, "repeat": _repeat,
}
_STRUCTURAL_EDITS: dict[str, tuple[Callable[..., bytes], int]] = {
    "number": (_pdf_number, 3),
    "dims": (_dims, 3),
    "tag": (_tiff_tag, 3),
    "ihdr": (_png_ihdr, 3),
    "box": (_pdf_box, 3),
    "frames": (_tiff_frames, 2),
}


def mutate(data: bytes, other: bytes, ops: Iterable[list | tuple]) -> bytes:
    buf = bytearray(data)
    for op in ops:
        n = max(1, len(buf))
        at = min(int(op[1] * n), n - 1) if isinstance(op[1], float) else 0
        if op[0] in _BYTE_EDITS:
            _BYTE_EDITS[op[0]](buf, at, op, other)
        elif op[0] in _STRUCTURAL_EDITS:
            edit, arity = _STRUCTURAL_EDITS[op[0]]
            buf = bytearray(edit(bytes(buf), *op[1 : 1 + arity]))
    return bytes(buf)


# -- running cases -----------------------------------------------------------------------------


@dataclass
class Finding:
    kind: str
    detail: str
    recipe: dict | None
    sha256: str
    fixture: str | None = None


@dataclass
class RunStats:
    cases: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    families: dict[str, int] = field(default_factory=dict)
    ocr_cases: int = 0
    findings: list[Finding] = field(default_factory=list)
    peak_rss: int = 0
    peak_rss_case: int | None = None
    peak_tesseract_rss: int = 0
    slowest_s: float = 0.0
    slowest_case: int | None = None
    child_starts: int = 0
    harness_errors: list[str] = field(default_factory=list)  # inputs that could not be built
    seconds: float = 0.0
    stopped_early: bool = False


def write_fixture(
    data: bytes, meta: dict, folder: Path = REGRESSIONS, *, keep_bytes: bool = False
) -> Path:
    """<sha>.json (meta: request, recipe, finding), rebuilt from its recipe when replayed; with
    `keep_bytes` (a self-contained input: no realdocs content) and under FIXTURE_MAX_BYTES, the
    bytes too, as <sha>.bin."""
    if keep_bytes and len(data) >= FIXTURE_MAX_BYTES:
        raise ValueError(f"{len(data)} bytes: keep a recipe or a smaller reproducer")
    sha = hashlib.sha256(data).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    if keep_bytes:
        (folder / f"{sha}.bin").write_bytes(data)
    path = folder / f"{sha}.json"
    path.write_text(
        json.dumps(
            {**meta, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}, indent=2
        )
        + "\n"
    )
    return path


def fixture_input(meta_path: Path) -> bytes:
    """The input a fixture stands for: its .bin, else rebuilt from its recipe."""
    bin_path = meta_path.with_suffix(".bin")
    if bin_path.exists():
        return bin_path.read_bytes()
    meta = json.loads(meta_path.read_text())
    return build(meta["recipe"])


def run_cases(
    indices: Iterable[int],
    recipe_for: Callable[[int], dict],
    *,
    workers: int = 2,
    hang_s: float = HANG_S,
    rss_bound: int = RSS_BOUND,
    max_seconds: float | None = None,
    fixtures: Path | None = REGRESSIONS,
    progress: Callable[[RunStats], None] | None = None,
) -> RunStats:
    """Run every case on `workers` children in parallel (one thread each feeding its child);
    findings are written as fixtures to `fixtures` (None: not written)."""
    run = _CaseRun(iter(indices), recipe_for, hang_s, rss_bound, max_seconds, fixtures, progress)
    with tempfile.TemporaryDirectory(prefix="doctriage-fuzz-") as tmp:
        threads = [
            threading.Thread(target=run.work, args=(Path(tmp) / f"case-{k}",), daemon=True)
            for k in range(workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    run.stats.seconds = time.monotonic() - run.t0
    return run.stats


@dataclass
class _CaseRun:
    """What the threads of one `run_cases` share: the cases left, the stats, one lock."""

    todo: Iterator[int]
    recipe_for: Callable[[int], dict]
    hang_s: float
    rss_bound: int
    max_seconds: float | None
    fixtures: Path | None
    progress: Callable[[RunStats], None] | None
    stats: RunStats = field(default_factory=RunStats)
    lock: threading.Lock = field(default_factory=threading.Lock)
    t0: float = field(default_factory=time.monotonic)

    def work(self, path: Path) -> None:
        """One thread: cases through its own child, each input written to `path`."""
        child = Child()
        try:
            while (index := self._next_index()) is not None:
                self._run_case(child, path, index)
        finally:
            child.close()
            with self.lock:
                self.stats.child_starts += child.started

    def _next_index(self) -> int | None:
        with self.lock:
            if self.max_seconds is not None and time.monotonic() - self.t0 > self.max_seconds:
                self.stats.stopped_early = True
                return None
            return next(self.todo, None)

    def _run_case(self, child: Child, path: Path, index: int) -> None:
        recipe = self.recipe_for(index)
        try:
            data = build(recipe)
        except Exception as exc:  # the harness's own failure: counted, never hidden
            with self.lock:
                self.stats.harness_errors.append(f"case {index}: {type(exc).__name__}: {exc}")
            return
        path.write_bytes(data)
        c0 = time.monotonic()
        got = child.run({**recipe["request"], "path": str(path)}, timeout=self.hang_s)
        took = time.monotonic() - c0
        kind, detail = classify(got, self.rss_bound)
        with self.lock:
            _tally(self.stats, CaseOutcome(index, recipe, data, got, kind, took))
            if detail is not None:
                self.stats.findings.append(self._finding(kind, detail, recipe, data))
            if self.progress is not None:
                self.progress(self.stats)

    def _finding(self, kind: str, detail: str, recipe: dict, data: bytes) -> Finding:
        finding = Finding(kind, detail[-3000:], recipe, hashlib.sha256(data).hexdigest())
        if self.fixtures is not None:
            meta = {"kind": kind, "detail": finding.detail, "request": recipe["request"],
                    "recipe": recipe}
            finding.fixture = str(write_fixture(data, meta, self.fixtures))
        return finding


@dataclass(frozen=True)
class CaseOutcome:
    """One case run: its input, the child's answer and how it was classified."""

    index: int
    recipe: dict
    data: bytes
    got: dict
    kind: str
    took: float


def _tally(stats: RunStats, case: CaseOutcome) -> None:
    stats.cases += 1
    stats.outcomes[case.kind] = stats.outcomes.get(case.kind, 0) + 1
    fmt = format_of(case.data)
    stats.formats[fmt] = stats.formats.get(fmt, 0) + 1
    fam = family_of(case.recipe["base"])
    stats.families[fam] = stats.families.get(fam, 0) + 1
    stats.ocr_cases += case.recipe["request"].get("ocr_mode") != "text"
    peak = int(case.got.get("peak_rss") or 0)
    if peak > stats.peak_rss:
        stats.peak_rss, stats.peak_rss_case = peak, case.index
    stats.peak_tesseract_rss = max(stats.peak_tesseract_rss, int(case.got.get("children_rss") or 0))
    if case.took > stats.slowest_s:
        stats.slowest_s, stats.slowest_case = case.took, case.index
