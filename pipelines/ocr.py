"""Words and boxes from tesseract (word level, confidence-filtered), normalised to 0-1000.

tesseract is run as a subprocess with an argument list, `OMP_THREAD_LIMIT=1` in *its* environment
only (OpenMP threads fighting over 2 cores make it ~7x slower; setting the variable in our own
process would also cap torch's thread pool) and a hard timeout. The TSV it writes is what
pytesseract's `image_to_data` parses; we call it directly because pytesseract can only pass
that variable by changing the whole process's environment.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
from dataclasses import dataclass

from PIL import Image

Box = tuple[int, int, int, int]


class OcrTimeout(Exception):
    pass


class OcrFailed(Exception):
    pass


@dataclass(frozen=True)
class OcrResult:
    words: list[str]
    boxes: list[Box]
    mean_conf: float | None


def tesseract_cmd() -> str:
    return shutil.which("tesseract") or "tesseract"


@dataclass(frozen=True)
class OcrSettings:
    """How tesseract reads a page: language, time limit, the confidence under which a word is
    dropped, and the page segmentation mode."""

    lang: str = "eng"
    timeout_s: float = 60.0
    min_conf: float = 30.0
    psm: int = 3


def ocr_image(image: Image.Image, settings: OcrSettings = OcrSettings(), *,
              dpi: int | None = None) -> OcrResult:
    """OCR one page image (`dpi`: the resolution to tell tesseract, None when unknown); words
    in tesseract's block/paragraph/line order."""
    lang, timeout_s, min_conf, psm = (settings.lang, settings.timeout_s, settings.min_conf,
                                      settings.psm)
    buf = io.BytesIO()
    # Uncompressed-ish PNG: encoding cost stays small next to the OCR itself.
    image.save(buf, format="PNG", compress_level=1, dpi=(dpi, dpi) if dpi else None)
    args = [tesseract_cmd(), "stdin", "stdout", "-l", lang, "--psm", str(psm)]
    if dpi:
        args += ["--dpi", str(dpi)]
    args.append("tsv")
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    try:
        proc = subprocess.run(
            args, input=buf.getvalue(), capture_output=True, timeout=timeout_s, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise OcrTimeout(f"OCR timed out after {timeout_s:g} s") from None
    except OSError as exc:
        raise OcrFailed(f"cannot run tesseract ({exc.strerror or exc})") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise OcrFailed(f"tesseract failed ({err[-1] if err else 'exit ' + str(proc.returncode)})")
    return parse_tsv(proc.stdout.decode("utf-8", "replace"), image.width, image.height, min_conf)


def parse_tsv(tsv: str, width: int, height: int, min_conf: float) -> OcrResult:
    words: list[str] = []
    boxes: list[Box] = []
    confs: list[float] = []
    rows = csv.DictReader(io.StringIO(tsv), delimiter="\t", quoting=csv.QUOTE_NONE)
    for row in rows:
        if row.get("level") != "5":
            continue
        text = (row.get("text") or "").strip()
        try:
            conf = float(row["conf"])
            left, top, w, h = (int(row[k]) for k in ("left", "top", "width", "height"))
        except (KeyError, TypeError, ValueError):
            continue
        if not text or conf < min_conf:
            continue
        words.append(text)
        boxes.append(_norm((left, top, left + w, top + h), width, height))
        confs.append(conf)
    return OcrResult(words, boxes, sum(confs) / len(confs) if confs else None)


def _norm(box: tuple[int, int, int, int], width: int, height: int) -> Box:
    """A pixel box (x0, y0, x1, y1) on the 0..1000 grid LayoutLMv3 takes."""
    x0, y0, x1, y1 = box

    def nx(v: int) -> int:
        return max(0, min(1000, round(v * 1000 / width)))

    def ny(v: int) -> int:
        return max(0, min(1000, round(v * 1000 / height)))

    return (nx(x0), ny(y0), nx(x1), ny(y1))
