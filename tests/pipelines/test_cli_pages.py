"""`doctriage pages`: one line per page, JSON lines, exit 2 and one stderr line on bad input.

Most tests drive the command in-process on an app holding only this command (the full CLI imports
every command group, torch included, ~10 s a start on this machine); one test runs the installed
console script end to end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import typer
from pagedocs import text_image, write_text_pdf
from typer.testing import CliRunner

from doctriage.commands import pages as pages_command

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: bytes


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Keep `pages` a sub-command."""

    pages_command.register(app)
    return app


def run(*args: str, stdin: bytes | None = None) -> Result:
    out = CliRunner().invoke(_app(), list(args), input=stdin)
    if out.exception and not isinstance(out.exception, SystemExit):
        raise out.exception
    return Result(out.exit_code, out.stdout_bytes, out.stderr_bytes or b"")


def test_json_lines_one_per_page(tmp_path):
    path = write_text_pdf(tmp_path / "doc.pdf", pages=3)
    out = run("pages", str(path), "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.decode().splitlines()]
    assert [r["page"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert r["text_source"] == "text_layer" and r["words"] == 20
        assert (r["width"], r["height"], r["dpi"]) == (850, 1100, 100)  # letter at 100 dpi
        assert r["ms"] > 0


def test_plain_lines_and_options(tmp_path):
    path = write_text_pdf(tmp_path / "doc.pdf", pages=2)
    out = run("pages", str(path), "--dpi", "50", "--ocr", "text")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("page 1\t425x550 px @50dpi\ttext_layer\t20 words\t")


def test_an_image_read_without_ocr_says_it_has_no_text_layer(tmp_path):
    scan = text_image(["INVOICE 42"])
    for name in ("scan.png", "scan.jpg", "scan.tif"):
        path = tmp_path / name
        scan.save(path, dpi=(200, 200))
        out = run("pages", str(path), "--ocr", "text")
        assert out.returncode == 0, out.stderr
        # the 200-dpi scan at the default 100 dpi, and no "text_layer 0 words"
        assert out.stdout.decode().startswith(
            "page 1\t850x1100 px @100dpi\tnone (image: no text layer)\t0 words\t"
        ), name
        (row,) = [json.loads(line) for line in run("pages", str(path), "--ocr", "text",
                                                    "--json").stdout.decode().splitlines()]
        assert (row["text_source"], row["reason"], row["dpi"]) == (
            "none", "image: no text layer", 100)


def test_an_image_without_a_recorded_resolution_has_no_dpi(tmp_path):
    path = tmp_path / "photo.png"
    text_image(["x"], (400, 300)).save(path)  # no dpi in the file: kept at its own size
    out = run("pages", str(path), "--ocr", "text")
    assert out.stdout.decode().startswith("page 1\t400x300 px (dpi unknown)\tnone"), out.stdout
    row = json.loads(run("pages", str(path), "--ocr", "text", "--json").stdout)
    assert (row["width"], row["height"], row["dpi"]) == (400, 300, None)


def test_reads_stdin(tmp_path):
    data = write_text_pdf(tmp_path / "doc.pdf", pages=2).read_bytes()
    out = run("pages", "-", "--json", stdin=data)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.decode().splitlines()) == 2


def test_bad_input_exits_2_with_one_line(tmp_path):
    path = tmp_path / "notes.pdf"
    path.write_text("just some text")
    out = run("pages", str(path))
    assert out.returncode == 2
    assert out.stdout == b""
    err = out.stderr.decode()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {path}: not a PDF")


def test_pages_before_the_error_are_printed(tmp_path):
    data = write_text_pdf(tmp_path / "doc.pdf", pages=3).read_bytes()
    path = tmp_path / "cut.pdf"
    path.write_bytes(data[:-8])  # recoverable pages, then the truncation is reported
    out = run("pages", str(path), "--json")
    assert out.returncode == 2
    assert len(out.stdout.decode().splitlines()) == 3
    err = out.stderr.decode()
    assert err.count("\n") == 1 and "truncated PDF" in err


def test_bad_option_values_exit_2(tmp_path):
    path = write_text_pdf(tmp_path / "doc.pdf", pages=1)
    out = run("pages", str(path), "--dpi", "0")
    assert out.returncode == 2 and out.stderr.decode() == "error: dpi must be positive\n"
    out = run("pages", str(path), "--ocr", "sometimes")
    assert out.returncode == 2 and b"Traceback" not in out.stderr


def test_console_script_end_to_end(tmp_path):
    # One start only: each costs ~10-20 s here (see the module docstring).
    bad = tmp_path / "empty.pdf"
    bad.write_bytes(b"")
    exe = str(Path(sys.executable).with_name("doctriage"))
    fail = subprocess.run([exe, "pages", str(bad)], capture_output=True, timeout=300, text=True)
    assert fail.returncode == 2
    assert fail.stderr == f"error: {bad}: empty file (0 bytes)\n"


# The command alone in a small app: a real process (real fd 2) without the full CLI's start cost.
SMALL_APP = """
import sys, typer
from doctriage.commands import pages
app = typer.Typer()
@app.callback()
def _root() -> None: pass
pages.register(app)
app(sys.argv[1:])
"""


def test_damaged_tiff_gives_one_stderr_line_even_though_libtiff_complains(tmp_path):
    frames = [text_image([f"page {n}"], (400, 300)).convert("L") for n in (1, 2)]
    path = tmp_path / "two.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:], compression="tiff_lzw")
    data = bytearray(path.read_bytes())
    start = len(data) // 2 + len(data) // 4  # inside page 2's LZW strip
    data[start : start + 200] = b"\xff" * 200  # libtiff prints "Using code not yet in table."
    path.write_bytes(bytes(data))
    out = subprocess.run(
        [sys.executable, "-c", SMALL_APP, "pages", str(path), "--ocr", "text"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert out.returncode == 2
    assert out.stdout.startswith("page 1\t") and out.stdout.count("\n") == 1
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith(f"error: {path}: page 2: corrupt or unreadable image")
    assert "Using code" not in out.stderr
