"""Workers never train a model: a worker that would classify, started without a bundle, stops at
start-up with one line naming the command that builds one (exit 2), whichever way it is started.
Only the embedded commands (`run`) build a missing default bundle."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from doctriage import default_model, wiring
from doctriage.settings import Settings

REPO = Path(__file__).resolve().parents[2]
# Runs `doctriage ...` or `celery ...` as its console script would, optionally in an install
# without the shipped default bundle (the package folder is read-only here, so it is patched).
PROBE = """
import sys
from pathlib import Path
mode, argv = sys.argv[1], sys.argv[2:]
if mode == "no-default":
    from doctriage import default_model
    default_model.SHIPPED_BUNDLE = Path("/nonexistent/shipped-bundle")
if argv[0] == "celery":
    from celery.__main__ import main
else:
    from doctriage.cli import main
sys.argv = argv
main()
"""
DOCTRIAGE_WORKER = ["doctriage", "worker", "--queues", "classify"]
CELERY_WORKER = ["celery", "-A", "doctriage.wiring:celery", "worker", "-Q", "ingest,full_depth"]
NO_DEFAULT = "error: no model bundle: DOCTRIAGE_MODEL_DIR is unset and no default bundle"


def _start(home: Path, mode: str, argv: list[str], **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("DOCTRIAGE_")}
    # The broker is never reached: the check runs before the worker connects.
    clean.update(DOCTRIAGE_HOME=str(home), DOCTRIAGE_BROKER_URL="redis://127.0.0.1:1/0", **env)
    # a timeout far below a training run (15-25 minutes): a worker that trains fails here
    return subprocess.run([sys.executable, "-c", PROBE, mode, *argv], cwd=REPO, env=clean,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture
def celery_wiring():
    """configure_celery installs process-wide state: put it back for the next test."""
    from workers import context

    saved = (context._context_factory, context._runtime_factory)
    settings = list(wiring._celery_settings)
    yield
    context.install(*saved)  # type: ignore[arg-type]
    context.reset()
    wiring._celery_settings[:] = settings


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("argv", [DOCTRIAGE_WORKER, CELERY_WORKER], ids=["doctriage", "celery"])
def test_a_worker_without_a_default_bundle_stops_at_start_up(tmp_path: Path, argv: list[str]):
    proc = _start(tmp_path, "no-default", argv)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = _error_lines(proc)
    assert len(lines) == 1 and lines[0].startswith(NO_DEFAULT), proc.stderr[-2000:]
    assert "python -m doctriage.default_model" in lines[0]  # the command that builds one
    assert "building" not in proc.stderr
    assert not (tmp_path / "models").exists()  # nothing trained, nothing staged


@pytest.mark.parametrize("argv", [DOCTRIAGE_WORKER, CELERY_WORKER], ids=["doctriage", "celery"])
def test_a_worker_whose_model_dir_points_nowhere_stops_at_start_up(tmp_path: Path,
                                                                   argv: list[str]):
    missing = tmp_path / "no-model"
    proc = _start(tmp_path, "plain", argv, DOCTRIAGE_MODEL_DIR=str(missing))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert _error_lines(proc) == [f"error: {missing}: no such model folder"]
    assert not (tmp_path / "models").exists()


@pytest.mark.usefixtures("celery_wiring")
def test_an_ingest_worker_needs_no_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The check concerns model queues only: the worker_init handler lets an ingest worker by."""
    from types import SimpleNamespace

    monkeypatch.setattr(default_model, "SHIPPED_BUNDLE", tmp_path / "not-shipped")
    wiring.configure_celery(Settings(home=tmp_path, broker_url="redis://127.0.0.1:1/0"))
    ingest = SimpleNamespace(app=SimpleNamespace(amqp=SimpleNamespace(
        queues=SimpleNamespace(consume_from={"ingest": None, "maintenance": None}))))
    wiring._refuse_modelless(ingest)  # returns: no model queue
    ingest.app.amqp.queues.consume_from = {"classify": None}
    with pytest.raises(SystemExit) as stopped:
        wiring._refuse_modelless(ingest)
    assert stopped.value.code == 2


@pytest.mark.usefixtures("celery_wiring")
def test_the_worker_runtime_factory_never_trains(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A task that reaches the runtime anyway (a worker started some other way) fails with the
    same line instead of training."""
    from workers import context

    monkeypatch.setattr(default_model, "SHIPPED_BUNDLE", tmp_path / "not-shipped")

    def train(*_a: object, **_k: object) -> Path:
        raise AssertionError("a worker trained the default model")

    monkeypatch.setattr(default_model, "build_default_bundle", train)
    wiring.configure_celery(Settings(home=tmp_path, broker_url="redis://127.0.0.1:1/0"))
    context.reset()
    with pytest.raises(wiring.WiringError, match="no model bundle"):
        context.classify_runtime()


def test_the_embedded_path_still_builds_a_missing_default_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(default_model, "SHIPPED_BUNDLE", tmp_path / "not-shipped")
    built: list[Path] = []

    def build(_settings: Settings, target: Path, **_k: object) -> Path:
        built.append(target)
        return target

    monkeypatch.setattr(default_model, "build_default_bundle", build)
    settings = Settings(home=tmp_path)
    with pytest.raises(wiring.WiringError, match=r"python -m doctriage\.default_model"):
        wiring.model_dir(settings, build_default=False)
    assert built == []
    assert wiring.model_dir(settings) == settings.default_model_dir  # run's default
    assert built == [settings.default_model_dir]


def test_the_model_version_is_the_bundle_a_worker_loads(tmp_path: Path, tiny_bundle: Path):
    """The backlog's "no prediction by the current version" rule and its beat entry read the
    version of the bundle workers serve: the shipped default one when none is configured (it
    read DOCTRIAGE_HOME/models/default, which a shipped install never has, and got None)."""
    import json

    def version(folder: Path) -> str:
        return json.loads((folder / "exits.json").read_text())["version"]

    home = Settings(home=tmp_path)
    assert wiring.current_model_version(home) == version(default_model.SHIPPED_BUNDLE)
    assert wiring.current_model_version(home, tiny_bundle) == version(tiny_bundle)
    configured = Settings(home=tmp_path, model_dir=tiny_bundle)
    assert wiring.current_model_version(configured) == version(tiny_bundle)
    assert wiring.current_model_version(Settings(home=tmp_path, model_dir=tmp_path / "no")) is None
