"""A user's first minutes with the `doctriage` command: help that reads as plain text, bad values
said in one `error: ` line of our own, one message per unusable model folder, and start-up that
loads nothing heavy before a command needs it.

Every test runs the real command in a subprocess. Start-up speed is asserted through what a start
imports, never through wall time (the README gives the measured times).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

# What --help and an instant error must not load: seconds of imports (torch + transformers alone
# are 4-6 s here), and the project's modules that pull them in.
HEAVY = (
    "torch", "transformers", "celery", "matplotlib", "boto3", "botocore", "sqlalchemy",
    "classifier", "workers.embedded", "workers.steps", "workers.tasks", "workers.celery_app",
    "pipelines.pages", "pipelines.s3", "db",
)
# Runs the CLI's entry point like the console script, then writes the loaded modules to a file.
PROBE = """
import json, sys
out, sys.argv = sys.argv[1], ["doctriage", *sys.argv[2:]]
from doctriage.cli import main
try:
    main()
finally:
    with open(out, "w") as fh:
        json.dump(sorted(sys.modules), fh)
"""
EXE = str(Path(sys.executable).with_name("doctriage"))  # the console script a user runs
# Python type names typer prints by default; "<label>" in a help sentence is fine.
TYPE_TAG = re.compile(r"<(bool|int|float|str|path|Path|datetime|list\[[^>]*\])>")


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DOCTRIAGE_")}
    env["DOCTRIAGE_HOME"] = str(home)
    return env


def doctriage(home: Path, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, timeout=300,
        env={**_env(home), **(env or {})},
    )


def loaded_modules(home: Path, tmp_path: Path, *args: str) -> tuple[int, set[str]]:
    out = tmp_path / f"modules-{abs(hash(args))}.json"
    proc = subprocess.run([sys.executable, "-c", PROBE, str(out), *args], capture_output=True,
                          text=True, timeout=300, env=_env(home), cwd=tmp_path)
    return proc.returncode, set(json.loads(out.read_text()))


def heavy_in(modules: set[str]) -> list[str]:
    """The HEAVY entries found in `modules` (a package counts when any of its modules is)."""
    return sorted({h for m in modules for h in HEAVY if m == h or m.startswith(f"{h}.")})


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    return proc.stderr.rstrip("\n")


def _command_names(help_text: str) -> list[str]:
    """The names listed under "Commands:" in a group's --help."""
    section = help_text.split("\nCommands:\n", 1)[1]
    return [m.group(1) for m in re.finditer(r"^  (\S+)  ", section, re.MULTILINE)]


def test_every_help_is_plain_text(isolated_home: Path) -> None:
    root = doctriage(isolated_home, "--help")
    assert root.returncode == 0, root.stderr
    commands = _command_names(root.stdout)
    assert {"pages", "run", "evaluate", "status", "audit"} <= set(commands), commands
    audit = doctriage(isolated_home, "audit", "--help")
    paths = [[c] for c in commands] + [["audit", c] for c in _command_names(audit.stdout)]
    assert ["audit", "label"] in paths, paths
    with ThreadPoolExecutor(max_workers=2) as pool:
        helps = list(pool.map(lambda p: doctriage(isolated_home, *p, "--help"), paths))
    for path, proc in [([], root), *zip(paths, helps, strict=True)]:
        where = " ".join(["doctriage", *path])
        assert proc.returncode == 0 and proc.stderr == "", f"{where}: {proc.stderr}"
        usage = proc.stdout.splitlines()[0]
        assert usage.startswith(f"Usage: {where} [OPTIONS]"), usage
        assert not re.search(r"[{}<>]", usage), f"{where}: {usage}"
        assert not TYPE_TAG.search(proc.stdout), f"{where}:\n{proc.stdout}"
    pages = dict(zip(map(tuple, paths), helps, strict=True))[("pages",)].stdout
    assert pages.splitlines()[0] == "Usage: doctriage pages [OPTIONS] PATH"
    # a flag is just its name; a value says what it takes
    assert re.search(r"^  --json +One JSON", pages, re.MULTILINE), pages
    assert re.search(r"^  --dpi INTEGER +Raster", pages, re.MULTILINE), pages
    assert re.search(r"^  --ocr auto\|ocr\|text +auto:", pages, re.MULTILINE), pages
    run = dict(zip(map(tuple, paths), helps, strict=True))[("run",)].stdout
    assert run.splitlines()[0] == "Usage: doctriage run [OPTIONS] PATHS..."


@pytest.mark.parametrize(
    "args, message",
    [
        (["pages", "--dpi", "abc", "doc.pdf"], "error: --dpi: 'abc' is not an integer"),
        (["pages", "--ocr", "sometimes", "doc.pdf"],
         "error: --ocr: 'sometimes' is not one of auto, ocr, text"),
        (["audit", "label", "first", "memo"], "error: PAGE_ID: 'first' is not an integer"),
        (["audit", "low-confidence", "--below", "low"], "error: --below: 'low' is not a number"),
        (["audit", "calibration", "--bins", "0"], "error: --bins must be at least 1, got 0"),
        (["synth", "out", "--per-class", "many"], "error: --per-class: 'many' is not an integer"),
        (["pages"], "error: missing argument 'PATH'"),
    ],
)
def test_a_bad_value_is_one_line_of_our_own(
    isolated_home: Path, args: list[str], message: str
) -> None:
    proc = doctriage(isolated_home, *args)
    assert one_error_line(proc) == message
    for leak in ("Input should", "Value error", "pydantic", "Traceback", "Usage:"):
        assert leak not in proc.stderr


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"DOCTRIAGE_MAX_BATCH": "abc"}, ["status"],
         "error: bad setting: DOCTRIAGE_MAX_BATCH='abc': input should be a valid integer, "
         "unable to parse string as an integer"),
        ({"DOCTRIAGE_BACKLOG_PRIORITY": "12", "DOCTRIAGE_ATTENTION": "xx"}, ["run", "."],
         "error: bad setting: DOCTRIAGE_ATTENTION='xx': input should be 'eager' or 'fused'; "
         "DOCTRIAGE_BACKLOG_PRIORITY='12': input should be less than or equal to 9"),
    ],
)
def test_a_bad_setting_is_one_line_naming_the_variable(
    isolated_home: Path, env: dict[str, str], args: list[str], message: str
) -> None:
    proc = doctriage(isolated_home, *args, env=env)
    assert one_error_line(proc) == message
    assert "Traceback" not in proc.stderr and "pydantic" not in proc.stderr


def test_a_document_error_has_the_error_prefix_too(isolated_home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    assert one_error_line(doctriage(isolated_home, "pages", str(empty))) == (
        f"error: {empty}: empty file (0 bytes)")


def test_an_unusable_model_folder_is_worded_once(isolated_home: Path, tmp_path: Path) -> None:
    doc = tmp_path / "docs" / "a.pdf"  # listed, never opened: the model check comes first
    doc.parent.mkdir()
    doc.write_bytes(b"%PDF-1.4\n%%EOF\n")
    missing, empty = tmp_path / "no-model", tmp_path / "empty-model"
    empty.mkdir()
    expected = {missing: f"error: {missing}: no such model folder",
                empty: f"error: {empty}: not a model bundle (no exits.json)"}
    for folder, message in expected.items():
        runs = {
            "run": doctriage(isolated_home, "run", str(doc), "--model", str(folder)),
            "evaluate": doctriage(isolated_home, "evaluate", str(folder), str(doc.parent)),
            "worker": doctriage(isolated_home, "worker", "--queues", "classify",
                                env={"DOCTRIAGE_MODEL_DIR": str(folder)}),
        }
        for name, proc in runs.items():
            assert one_error_line(proc) == message, name


def test_help_and_an_instant_error_load_nothing_heavy(isolated_home: Path, tmp_path: Path) -> None:
    for args in (["--help"], ["pages", "--help"], ["run", "--help"], ["audit", "label", "--help"],
                 ["evaluate", "--help"], ["worker", "--help"], ["status", "--help"]):
        code, modules = loaded_modules(isolated_home, tmp_path, *args)
        assert code == 0 and not heavy_in(modules), (args, heavy_in(modules))
    for args in (["run", str(tmp_path / "nope")], ["submit", str(tmp_path / "nope")],
                 ["evaluate", str(tmp_path / "nope"), str(tmp_path)],
                 ["pages", "--dpi", "abc", "x.pdf"]):
        code, modules = loaded_modules(isolated_home, tmp_path, *args)
        assert code == 2 and not heavy_in(modules), (args, heavy_in(modules))


def test_status_reads_the_store_without_the_model_or_queue_stack(
    isolated_home: Path, tmp_path: Path
) -> None:
    code, modules = loaded_modules(isolated_home, tmp_path, "status")
    assert code == 0
    assert "sqlalchemy" in modules  # it does read the store
    assert not heavy_in(modules - {m for m in modules if m.split(".")[0] in ("sqlalchemy", "db")})
