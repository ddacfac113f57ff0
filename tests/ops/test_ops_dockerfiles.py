"""The images install what CI installs: the same Debian packages and torch release as
scripts/setup.sh, then the project itself; every package of the distribution is copied in; the
torch build is named explicitly (CPU in one image, a CUDA variant in the other). Parsed here,
since no Docker engine runs on this machine."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILES = {kind: REPO / "docker" / f"Dockerfile.{kind}" for kind in ("cpu", "cuda")}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        word, _, rest = pending.partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def setup_sh() -> str:
    return (REPO / "scripts" / "setup.sh").read_text()


def setup_apt_packages() -> set[str]:
    """Packages setup.sh installs for the application (not the optional browser for tests)."""
    found: set[str] = set()
    for line in setup_sh().splitlines():
        if "need_apt+=(" in line and "chromium" not in line:
            found.update(re.search(r"need_apt\+=\(([^)]*)\)", line).group(1).split())
    return found


def setup_torch_pin() -> str:
    return re.search(r'"torch==([0-9.]+)"', setup_sh()).group(1)


def args_of(path: Path) -> dict[str, str]:
    out = {}
    for word, rest in instructions(path):
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            out[key] = value.strip('"')
    return out


def runs(path: Path) -> str:
    return "\n".join(rest for word, rest in instructions(path) if word == "RUN")


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_same_debian_packages_as_setup(kind: str) -> None:
    wanted = setup_apt_packages()
    assert wanted == {"tesseract-ocr", "tesseract-ocr-eng", "poppler-utils"}
    installs = [c for c in runs(DOCKERFILES[kind]).split("&&") if "apt-get install" in c]
    assert len(installs) == 1
    packages = {w for w in shlex.split(installs[0]) if not w.startswith("-")}
    packages -= {"apt-get", "install", "DEBIAN_FRONTEND=noninteractive"}
    assert packages == wanted


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_same_torch_release_with_an_explicit_build(kind: str) -> None:
    text = runs(DOCKERFILES[kind])
    pins = re.findall(r'"torch==([^"]+)"', text)
    assert len(pins) == 1
    release, _, build = pins[0].partition("+")
    assert release == setup_torch_pin()  # the release CI tests
    assert build == "${TORCH_VARIANT}"
    variant = args_of(DOCKERFILES[kind])["TORCH_VARIANT"]
    assert variant == "cpu" if kind == "cpu" else re.fullmatch(r"cu\d{3}", variant)
    # torch is installed before the project, from the index the build argument names, and the
    # build refuses to go on without one (the default index has no +cpu / +cuXXX builds).
    assert text.index("torch==") < text.index("pip install .")
    assert 'test -n "$TORCH_INDEX_URL"' in text and '"$TORCH_INDEX_URL"' in text
    assert "pip install --upgrade pip" in text  # as setup.sh


def test_the_installed_torch_is_the_pinned_release() -> None:
    import torch

    assert torch.__version__.split("+")[0] == setup_torch_pin()


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_every_package_of_the_distribution_is_copied(kind: str) -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"]}
    copies = [rest.split() for word, rest in instructions(DOCKERFILES[kind]) if word == "COPY"]
    copied = {src.rstrip("/") for parts in copies for src in parts[:-1]}
    assert packages <= copied
    assert {"pyproject.toml", config["project"]["readme"]} <= copied
    for src in copied:
        assert (REPO / src).exists() or src == config["project"]["readme"], src


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_runtime_environment(kind: str) -> None:
    steps = instructions(DOCKERFILES[kind])
    env = " ".join(rest for word, rest in steps if word == "ENV")
    # tesseract gets OMP_THREAD_LIMIT=1 in its own environment (pipelines/ocr.py); for the
    # whole image it would cap torch's threads in the classify worker.
    assert "OMP_THREAD_LIMIT" not in env
    assert "DOCTRIAGE_HOME=/var/lib/doctriage" in env
    froms = [rest for word, rest in steps if word == "FROM"]
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert froms == ["python:3.11-slim-bookworm"]  # the Python CI runs
    assert config["project"]["requires-python"] == ">=3.11"
    users = [rest for word, rest in steps if word == "USER"]
    assert users and users[-1] != "root"
    assert [rest for word, rest in steps if word == "ENTRYPOINT"] == ['["doctriage"]']
    ignore = (DOCKERFILES[kind].parent / f"{DOCKERFILES[kind].name}.dockerignore").read_text()
    assert ".venv" in ignore.split()


def test_cuda_image_selects_the_gpu() -> None:
    env = " ".join(rest for word, rest in instructions(DOCKERFILES["cuda"]) if word == "ENV")
    assert "DOCTRIAGE_DEVICE=cuda" in env and "NVIDIA_VISIBLE_DEVICES=all" in env
