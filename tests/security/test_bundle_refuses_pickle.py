"""Model loading is safetensors only: a bundle carrying pickle is refused before anything in it
is read, and a pickle disguised as the safetensors file is never unpickled."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from relkit import hostile_pickle

from classifier.bundle import BundleError, load_bundle


def test_the_clean_bundle_loads(security_bundle: Path) -> None:
    assert load_bundle(security_bundle).num_stages == 5


@pytest.mark.parametrize("name", ["pytorch_model.bin", "weights.pt", "extra/state.PKL",
                                  "opt.pth", "x.pickle", "last.ckpt"])
def test_bundle_with_a_pickle_file_is_refused(security_bundle: Path, tmp_path: Path,
                                              name: str) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(security_bundle, bundle)
    marker = tmp_path / "pwned"
    (bundle / name).parent.mkdir(parents=True, exist_ok=True)
    (bundle / name).write_bytes(hostile_pickle(marker))
    with pytest.raises(BundleError, match="refusing to load pickle") as err:
        load_bundle(bundle)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_pickle_disguised_as_safetensors_is_not_unpickled(security_bundle: Path,
                                                          tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(security_bundle, bundle)
    marker = tmp_path / "pwned"
    (bundle / "model.safetensors").write_bytes(hostile_pickle(marker))
    with pytest.raises(BundleError) as err:
        load_bundle(bundle)
    assert "model.safetensors" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_cli_reports_a_pickle_bundle_in_one_line(security_bundle: Path, tmp_path: Path) -> None:
    import subprocess

    from relkit import text_pdf_bytes
    from servicekit import DOCTRIAGE_BIN

    bundle = tmp_path / "bundle"
    shutil.copytree(security_bundle, bundle)
    (bundle / "pytorch_model.bin").write_bytes(hostile_pickle(tmp_path / "pwned"))
    doc = tmp_path / "a.pdf"
    doc.write_bytes(text_pdf_bytes(1))
    out = subprocess.run([DOCTRIAGE_BIN, "run", str(doc), "--model", str(bundle)],
                         capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "DOCTRIAGE_HOME": str(tmp_path / "h")})
    assert out.returncode == 2, out.stderr
    assert "refusing to load pickle" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "pwned").exists()
