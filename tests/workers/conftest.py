"""Fixtures for the workflow tests: a tiny model bundle built here (nothing is downloaded) and a
handful of short real documents."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from modelkit import build_tiny_bundle

# A few short realdocs, born-digital mostly (fast: text layer, no OCR), one image (OCR).
SHORT_DOCS = [
    "contract/kleister-nda-83087d7615931fce886400dab46a067a.pdf",
    "contract/kleister-nda-8a7c202263381bfbeb524450b7008425.pdf",
    "contract/kleister-nda-a87c00460edbc6ccd0451589ae609b9b.pdf",
    "contract/kleister-nda-503bf3d3c382b93016b28a53eba95a17.pdf",
    "invoice/vrdu-adbuy-42adf390-6e50-6fbc-fbbe-65117a1ffcb2.pdf",
    "form/funsd-0000990274.png",
]


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def short_docs(realdocs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of copies of a few short realdocs (copies: a folder source refuses symlinks
    that lead out of it)."""
    folder = tmp_path_factory.mktemp("docs")
    for rel in SHORT_DOCS:
        shutil.copyfile(realdocs_dir / rel, folder / Path(rel).name)
    return folder


@pytest.fixture
def bad_doc(tmp_path: Path) -> Path:
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.4\nthis is not really a pdf\n")
    return path

