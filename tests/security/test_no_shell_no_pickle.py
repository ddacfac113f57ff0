"""Source-tree checks (ast, not grep, so comments and strings do not count): subprocesses get
argument lists and never a shell; nothing imports pickle-family modules or calls torch.load."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".venv", ".git", "node_modules", "build", "dist", "__pycache__"}
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("os", "spawnl"), ("os", "spawnlp"),
               ("os", "execl"), ("subprocess", "getoutput"), ("subprocess", "getstatusoutput"),
               ("commands", "getoutput")}
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output"}
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve",
                  "marshal"}


def python_files() -> list[Path]:
    return [p for p in REPO.rglob("*.py")
            if not SKIP_DIRS & set(p.relative_to(REPO).parts)]


def _dotted(node: ast.AST) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def problems(source: str, name: str = "<src>") -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, name)):
        where = f"{name}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            found += _import_problems(node, where)
        elif isinstance(node, ast.Call):
            found += _call_problems(node, where)
    return found


def _import_problems(node: ast.Import | ast.ImportFrom, where: str) -> list[str]:
    """An import of a module that unpickles."""
    mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
    return [f"{where}: imports {mod}" for mod in mods if mod.split(".")[0] in PICKLE_MODULES]


def _call_problems(node: ast.Call, where: str) -> list[str]:
    """A call that runs a shell, unpickles, or hands subprocess a command string."""
    found = []
    dotted = _dotted(node.func)
    if dotted[-2:] in SHELL_CALLS:
        found.append(f"{where}: {'.'.join(dotted)} runs a shell")
    if dotted[-2:] == ("torch", "load"):
        found.append(f"{where}: torch.load unpickles")
    for kw in node.keywords:
        off = isinstance(kw.value, ast.Constant) and not kw.value.value
        if kw.arg == "shell" and not off:
            found.append(f"{where}: shell={ast.unparse(kw.value)}")
    if dotted and dotted[-1] in SUBPROCESS_CALLS and "subprocess" in dotted[:-1] and node.args:
        first = node.args[0]
        if isinstance(first, ast.Constant | ast.JoinedStr | ast.BinOp):
            found.append(f"{where}: subprocess.{dotted[-1]} given a command string")
    return found


def test_the_checker_catches_what_it_looks_for() -> None:
    bad = "\n".join([
        "import os, subprocess, pickle",
        "from joblib import load",
        "os.system('ls')",
        "subprocess.run('ls -l', shell=True)",
        "subprocess.Popen(f'tesseract {x}')",
        "torch.load('w.pt')",
    ])
    found = problems(bad)
    assert len(found) == 7, found
    assert problems("subprocess.run(['tesseract', path, 'stdout'], shell=False)") == []


def test_source_tree_has_no_shell_and_no_pickle() -> None:
    files = python_files()
    assert len(files) > 50  # the walk really covered the project
    found = [p for f in files for p in problems(f.read_text(), str(f.relative_to(REPO)))]
    assert found == []


def test_ocr_and_pdf_tools_are_called_with_argument_lists() -> None:
    """The external tools the pipeline runs (tesseract; poppler through pdf2image) are given
    lists: check the call sites that exist."""
    calls = []
    for f in (REPO / "pipelines").rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and _dotted(node.func)[-2:] in (
                ("subprocess", "run"), ("subprocess", "Popen")
            ):
                calls.append((f.name, node))
    assert calls, "expected the tesseract call site"
    for name, node in calls:
        assert isinstance(node.args[0], ast.List | ast.Name | ast.Call), name
