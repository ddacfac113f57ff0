"""Model processes tune glibc malloc once, and leave an operator's own allocator choice alone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = (
    "from workers.allocator import tune_malloc; "
    "first = tune_malloc(); assert tune_malloc() == first; print(first)"
)


def probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("MALLOC_") and k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env},
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


@pytest.mark.skipif(sys.platform != "linux", reason="glibc only")
def test_applied_on_glibc():
    assert probe().startswith("applied")


def test_an_operators_allocator_choice_is_kept():
    assert probe(MALLOC_TOP_PAD_="1000").startswith("skipped")
    jemalloc = "/lib/x86_64-linux-gnu/libjemalloc.so.2"
    if os.path.exists(jemalloc):
        assert probe(LD_PRELOAD=jemalloc).startswith("skipped (LD_PRELOAD")


def test_setting_turns_it_off(tmp_path, monkeypatch):
    """DOCTRIAGE_MALLOC_TUNING=false: building the classify runtime never calls mallopt."""
    from doctriage import wiring
    from doctriage.settings import Settings
    from tests.modelkit import build_tiny_bundle

    bundle = build_tiny_bundle(tmp_path / "bundle")
    calls: list[str] = []
    monkeypatch.setattr(wiring, "tune_malloc", lambda: calls.append("tuned") or "applied")
    off = Settings(home=tmp_path, model_dir=bundle, malloc_tuning=False)
    wiring.classify_runtime(off)
    assert calls == []
    wiring.classify_runtime(Settings(home=tmp_path, model_dir=bundle))
    assert calls == ["tuned"]
