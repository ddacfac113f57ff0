"""docker/compose.yaml, checked without a Docker engine: it parses, has every service the
deployment needs with health checks, volumes and a GPU reservation, its settings are real
DOCTRIAGE_* settings, the commands it runs are real `doctriage` commands with those options, the
MinIO event target and the watcher agree on the Redis list, and the worker health check really
probes the metrics endpoint. If a `docker compose` binary is available (PATH, or
DOCTRIAGE_COMPOSE_BIN), its own `config` validation runs too."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from doctriage.cli import app
from doctriage.settings import Settings
from workers.celery_app import QUEUES

DOCKER = Path(__file__).resolve().parents[2] / "docker"
DOCTRIAGE_SERVICES = ("init", "worker-ingest", "worker-ocr", "worker-classify", "beat",
                      "watcher")
ALL_SERVICES = {"redis", "postgres", "minio", "minio-init", "flower", *DOCTRIAGE_SERVICES}
LONG_RUNNING_WITH_HEALTH = {"redis", "postgres", "minio", "worker-ingest", "worker-ocr",
                            "worker-classify", "beat", "flower"}
_DEFAULT = re.compile(r"\$\{\w+:-([^}]*)\}")  # ${VAR:-default} -> default


class _ComposeLoader(yaml.SafeLoader):
    """Compose's merge-control tags (!reset, !override) read as plain values."""


def _plain(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


for _tag in ("!reset", "!override"):
    _ComposeLoader.add_constructor(_tag, _plain)


def load(name: str) -> dict[str, Any]:
    return yaml.load((DOCKER / name).read_text(), Loader=_ComposeLoader)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load("compose.yaml")


def test_services_health_checks_and_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == ALL_SERVICES
    for name in LONG_RUNNING_WITH_HEALTH:
        assert services[name]["healthcheck"]["test"], name
    for name in ("minio-init", "init"):
        assert services[name]["restart"] == "no"
    redis_cmd = services["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"  # persistence on
    mounts = {n: [v.split(":")[1] for v in s.get("volumes", [])] for n, s in services.items()}
    assert "/data" in mounts["redis"] and "/data" in mounts["minio"]
    assert "/var/lib/postgresql/data" in mounts["postgres"]
    for name in DOCTRIAGE_SERVICES:
        assert "/var/lib/doctriage" in mounts[name], name
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    assert {n for n in named if not n.startswith(("$", ".", "/"))} <= set(compose["volumes"])
    # Everything that needs the schema waits for the one-shot init to finish.
    for name in ("worker-ingest", "worker-ocr", "worker-classify", "beat", "watcher"):
        condition = services[name]["depends_on"]["init"]["condition"]
        assert condition == "service_completed_successfully", name


def test_classify_worker_reserves_a_gpu_and_runs_the_cuda_image(compose: dict) -> None:
    svc = compose["services"]["worker-classify"]
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert svc["build"]["dockerfile"] == "docker/Dockerfile.cuda"
    assert svc["environment"]["DOCTRIAGE_DEVICE"] == "cuda"
    # The CPU override drops the reservation and switches image and device.
    cpu = load("compose.cpu.yaml")["services"]["worker-classify"]
    assert cpu["deploy"] == {} and cpu["build"]["dockerfile"] == "docker/Dockerfile.cpu"
    assert cpu["environment"]["DOCTRIAGE_DEVICE"] == "cpu"


def _doctriage_env(compose: dict) -> dict[str, Any]:
    env: dict[str, Any] = {}
    for name in DOCTRIAGE_SERVICES:
        env.update(compose["services"][name]["environment"])
    return env


def test_settings_come_through_the_environment_and_exist(compose: dict) -> None:
    env = _doctriage_env(compose)
    fields = set(Settings.model_fields)
    names = [k for k in env if k.startswith("DOCTRIAGE_")]
    assert len(names) >= 10
    unknown = [k for k in names if k.removeprefix("DOCTRIAGE_").lower() not in fields]
    assert unknown == []  # a misspelt setting would be silently ignored (extra="ignore")
    # The values parse as the settings they are.
    values = {k.removeprefix("DOCTRIAGE_").lower(): _DEFAULT.sub(r"\1", str(v))
              for k, v in env.items() if k.startswith("DOCTRIAGE_") and v is not None}
    settings = Settings(**values)
    assert str(settings.database_url).startswith("postgresql://")
    assert settings.metrics_port == 9100 and settings.log_json is True
    assert settings.broker_url == "redis://redis:6379/0"
    # tesseract gets OMP_THREAD_LIMIT=1 from pipelines/ocr.py; for the container it would cap
    # torch's threads in the classify worker too.
    assert "OMP_THREAD_LIMIT" not in env
    # Set for every process it would make one-off commands (init, watcher, `exec`) write
    # metric files into a folder nobody empties; `doctriage worker` makes its own.
    assert "PROMETHEUS_MULTIPROC_DIR" not in env


def _command(svc: dict[str, Any]) -> list[str]:
    return [_DEFAULT.sub(r"\1", c) for c in svc["command"]]


def _queues(svc: dict[str, Any]) -> list[str]:
    cmd = _command(svc)
    return cmd[cmd.index("--queues") + 1].split(",")


def test_commands_are_real_doctriage_commands_with_those_options(compose: dict) -> None:
    services = compose["services"]
    for name in ("worker-ingest", "worker-ocr", "worker-classify", "beat", "watcher"):
        cmd = _command(services[name])
        options = [c.split("=")[0] for c in cmd if c.startswith("--")]
        help_text = CliRunner().invoke(app, [cmd[0], "--help"], terminal_width=200).output
        for opt in options:
            assert opt in help_text, f"{name}: `doctriage {cmd[0]}` has no {opt}"
        if cmd[0] == "worker":
            assert set(_queues(services[name])) <= set(QUEUES), name
    consumed = {q for n in ("worker-ingest", "worker-ocr", "worker-classify", "beat")
                for q in _queues(services[n])}
    assert consumed == set(QUEUES)  # every queue has a consumer
    assert "--beat" in _command(services["beat"])


def test_minio_events_reach_the_watcher(compose: dict) -> None:
    services = compose["services"]
    env = services["minio"]["environment"]
    targets = {m.group(1) for k in env
               if (m := re.fullmatch(r"MINIO_NOTIFY_REDIS_ENABLE_(\w+)", k))}
    assert len(targets) == 1
    target = targets.pop()
    assert env[f"MINIO_NOTIFY_REDIS_FORMAT_{target}"] == "access"  # what minio_events reads
    assert env[f"MINIO_NOTIFY_REDIS_ADDRESS_{target}"] == "redis:6379"
    key = env[f"MINIO_NOTIFY_REDIS_KEY_{target}"]
    watch = _command(services["watcher"])
    assert watch[watch.index("--events-key") + 1] == key
    assert watch[watch.index("--redis-events") + 1].startswith("redis://redis:6379/")
    bucket = watch[1].removeprefix("s3://").split("/")[0]
    init = services["minio-init"]["command"][0]
    assert f"local/{bucket}" in init.split("mc mb --ignore-existing", 1)[1].splitlines()[0]
    assert f"mc event add local/{bucket} arn:minio:sqs::{target}:redis --event put" in init
    artifacts = _doctriage_env(compose)["DOCTRIAGE_ARTIFACT_URL"]
    assert f"local/{artifacts.removeprefix('s3://').split('/')[0]}" in init


def test_worker_health_check_probes_the_metrics_endpoint(compose: dict, free_port) -> None:
    from workers import metrics

    test = compose["services"]["worker-ingest"]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    port = free_port()
    env = {**os.environ, "DOCTRIAGE_METRICS_PORT": str(port)}
    argv = [sys.executable, *test[2:]]
    assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode != 0
    server = metrics.start_metrics_server(port, addr="127.0.0.1")
    try:
        assert subprocess.run(argv, env=env, capture_output=True, timeout=30).returncode == 0
    finally:
        server.shutdown()


def _compose_bin() -> list[str] | None:
    if os.environ.get("DOCTRIAGE_COMPOSE_BIN"):
        return shlex.split(os.environ["DOCTRIAGE_COMPOSE_BIN"])
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


@pytest.mark.parametrize("files", [["compose.yaml"], ["compose.yaml", "compose.cpu.yaml"]])
def test_docker_compose_itself_accepts_the_files(files: list[str]) -> None:
    binary = _compose_bin()
    if binary is None:
        pytest.skip("no docker compose binary (set DOCTRIAGE_COMPOSE_BIN)")
    args = [a for f in files for a in ("-f", f)]
    done = subprocess.run([*binary, *args, "config", "--quiet"], cwd=DOCKER,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
