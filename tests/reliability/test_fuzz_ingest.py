"""Bounded fuzzing of ingestion (the harness: tests/reliability/fuzzkit.py). Real documents from
the shared realdocs folder - PDFs, PNG/JPEG/TIFF files, and PDF page rasters re-encoded as
standalone PNG/JPEG/TIFF (multi-frame TIFFs included) - are mutated (byte flips, truncations,
splices, zeroed and repeated ranges, PDF numbers set to extremes, headers declaring huge
dimensions, TIFF page chains repeated) and fed to pipelines.pages.iter_pages (+ the page
artifact encoding) in a child process. The outcome must be pages and/or one DocumentError line -
never another exception, a crash of the process, a hang past the limit, or a peak RSS over the
bound. Default run: 40 cases and a replay of every kept finding (fuzz_regressions/); `-m slow`:
$DOCTRIAGE_FUZZ_CASES cases (300 by default; seed $DOCTRIAGE_FUZZ_SEED, 0), 2% with OCR on, on
two children. The 5,000-case run is bench/fuzz_ingest.py (README, testing)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import fuzzkit
import pytest
from fuzzkit import Child
from relkit import record_result


@pytest.fixture(scope="module")
def realdocs() -> None:
    if not fuzzkit.realdocs_available():
        pytest.skip(f"realdocs not found at {fuzzkit.REALDOCS} (set DOCTRIAGE_REALDOCS)")


@pytest.fixture(scope="module")
def child():
    c = Child()
    yield c
    c.close()


def _fuzz(cases: int, seed: int, ocr_share: float, workers: int, name: str,
          fixtures: Path | None) -> None:
    stats = fuzzkit.run_cases(
        range(cases), lambda i: fuzzkit.draw_recipe(seed, i, ocr_share=ocr_share),
        workers=workers, fixtures=fixtures,
    )
    record_result({"fault": f"fuzz: mutated realdocs PDFs and images ({name})", "kind": "fuzz",
                   "pages_in": cases, "pages_out": stats.cases, "duplicates": 0,
                   "recover_s": None,
                   "outcome": f"{stats.outcomes.get('pages', 0)} read, "
                              f"{stats.outcomes.get('document_error', 0)} DocumentError, "
                              f"{len(stats.findings)} crash/hang/other; peak child RSS "
                              f"{stats.peak_rss / fuzzkit.MIB:.0f} MiB; child started "
                              f"{stats.child_starts}x; {stats.seconds:.1f} s"})
    found = [f"{f.kind}: {f.detail[:500]} (recipe {json.dumps(f.recipe)}; kept: {f.fixture})"
             for f in stats.findings]
    assert found == []
    assert stats.harness_errors == []
    assert stats.cases == cases


def test_fuzz_mutated_documents_small(realdocs: None) -> None:
    # Findings of this fixed run are reproducible from the recipe in the message: not kept.
    _fuzz(40, 0, 0.0, 1, "40 cases, text", fixtures=None)


@pytest.mark.slow
def test_fuzz_mutated_documents_large(realdocs: None) -> None:
    cases = int(os.environ.get("DOCTRIAGE_FUZZ_CASES", "300"))
    seed = int(os.environ.get("DOCTRIAGE_FUZZ_SEED", "0"))
    _fuzz(cases, seed, 0.02, 2, f"{cases} cases, seed {seed}, 2% OCR",
          fixtures=fuzzkit.REGRESSIONS)


def _kept() -> list[Path]:
    return sorted(fuzzkit.REGRESSIONS.glob("*.json"))


@pytest.mark.parametrize("meta_path", _kept(), ids=lambda p: p.stem)
def test_kept_findings_replay(meta_path: Path, child: Child, tmp_path: Path) -> None:
    """Every input a fuzz run found failing (fuzz_regressions/) now ends in pages or one
    DocumentError line, in time and under the RSS bound."""
    meta = json.loads(meta_path.read_text())
    if not meta_path.with_suffix(".bin").exists() and not fuzzkit.realdocs_available():
        pytest.skip("kept as a recipe over realdocs, which are not here")
    data = fuzzkit.fixture_input(meta_path)
    if hashlib.sha256(data).hexdigest() != meta["sha256"]:
        pytest.skip("the recipe no longer rebuilds the same bytes (realdocs or encoders "
                    "changed); keep the input as a .bin instead")
    path = tmp_path / "input"
    path.write_bytes(data)
    got = child.run({**meta["request"], "path": str(path)})
    kind, detail = fuzzkit.classify(got)
    assert kind in ("pages", "document_error"), f"{meta['kind']} again: {detail}"


def test_child_reports_hangs_and_crashes(child: Child, tmp_path: Path) -> None:
    """The harness itself: a garbage file is a DocumentError, a child that dies mid-request is
    a crash, and one that cannot answer in time is a hang."""
    junk = tmp_path / "junk.pdf"
    junk.write_bytes(b"%PDF-1.7\n" + os.urandom(256))
    assert child.run({"path": str(junk)})["error"].startswith(f"{junk}: ")
    stand_in = Child()
    try:
        stand_in.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.readline(); sys.exit(3)"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert stand_in.run({"path": str(junk)}) == {"crash": "child died with status 3"}
        stand_in.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert "hang" in stand_in.run({"path": str(junk)}, timeout=0.5)
        assert stand_in.proc is None  # the hung child was killed
    finally:
        stand_in.close()


def test_child_reports_each_cases_peak_rss(child: Child, tmp_path: Path) -> None:
    """The RSS finding rests on the child's per-case peak: a 7000x8000 page (decoded: ~220 MB
    as RGB) shows in its own answer and not in the next small case's (VmHWM reset per case)."""
    from PIL import Image

    big = tmp_path / "big.png"
    Image.new("RGB", (7000, 8000), "white").save(big)  # RGB: grey frames stay grey (56 MB)
    small = tmp_path / "small.png"
    Image.new("L", (100, 100), 255).save(small)
    big_peak = child.run({"path": str(big)})["peak_rss"]
    small_peak = child.run({"path": str(small)})["peak_rss"]
    assert big_peak > small_peak + 150 * fuzzkit.MIB, (big_peak, small_peak)
    assert fuzzkit.classify({"pages": 1, "error": None, "peak_rss": big_peak},
                            rss_bound=small_peak + 100 * fuzzkit.MIB)[0] == "rss"


def test_outcomes_that_are_findings() -> None:
    ok = {"pages": 1, "error": None, "peak_rss": fuzzkit.MIB}
    assert fuzzkit.classify(ok) == ("pages", None)
    assert fuzzkit.classify({**ok, "error": "x: bad"}) == ("document_error", None)
    assert fuzzkit.classify({**ok, "error": "x: bad\nfailed: forged"})[0] == "multiline_error"
    assert fuzzkit.classify({"pages": 0, "unexpected": "KeyError: 1"})[0] == "exception"
    assert fuzzkit.classify({**ok, "peak_rss": fuzzkit.RSS_BOUND + 1})[0] == "rss"


def test_header_mutations_declare_what_they_say(tmp_path: Path) -> None:
    """`dims` really declares the huge size in PNG, JPEG and TIFF headers and `frames` really
    makes a many-frame TIFF, so the fuzz run exercises the pixel and page budgets."""
    from PIL import Image

    im = Image.new("L", (64, 48), 200)
    for fmt, kw in (("PNG", {}), ("JPEG", {}), ("TIFF", {"compression": "tiff_lzw"})):
        buf = tmp_path / f"x.{fmt.lower()}"
        im.save(buf, format=fmt, **kw)
        # Under PIL's bomb limit (pipelines sets it), so that opening the header can show it.
        out = fuzzkit.mutate(buf.read_bytes(), b"", [["dims", 0, 9000, 7000]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            got = Image.open(io.BytesIO(out))
        assert got.size == (9000, 7000), fmt
    tiff = fuzzkit.mutate((tmp_path / "x.tiff").read_bytes(), b"", [["frames", 0, 50]])
    with Image.open(io.BytesIO(tiff)) as got:
        assert got.n_frames == 50
    pdf = b"%PDF-1.4\n1 0 obj << /Width 10 /Height 20 /Length 5 >>"
    assert b"/Width 40000 /Height 7" in fuzzkit.mutate(pdf, b"", [["dims", 0, 40000, 7]])


def test_recipes_are_deterministic_and_kept_findings_replayable(realdocs: None,
                                                                tmp_path: Path) -> None:
    recipes = [fuzzkit.draw_recipe(7, i, ocr_share=0.5) for i in range(30)]
    assert recipes == [fuzzkit.draw_recipe(7, i, ocr_share=0.5) for i in range(30)]
    assert {fuzzkit.family_of(r["base"]) for r in recipes} == {"pdf", "image", "raster"}
    first = fuzzkit.build(recipes[0])
    fuzzkit.base_bytes.cache_clear()
    assert fuzzkit.build(recipes[0]) == first
    # A fuzz input (realdocs content) is kept as its recipe, rebuilt when replayed; only a
    # self-contained reproducer is kept as bytes.
    small = fuzzkit.write_fixture(b"%PDF-1.4 tiny", {"recipe": None}, tmp_path, keep_bytes=True)
    assert fuzzkit.fixture_input(small) == b"%PDF-1.4 tiny"
    kept = fuzzkit.write_fixture(first, {"recipe": recipes[0]}, tmp_path)
    assert not kept.with_suffix(".bin").exists()
    fuzzkit.base_bytes.cache_clear()
    assert fuzzkit.fixture_input(kept) == first
