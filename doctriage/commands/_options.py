"""Options that several model commands (train, evaluate, thresholds fit) take, declared once so
their names, defaults and help stay the same everywhere. typer and the standard library only:
command modules are imported at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ModelDir = Annotated[Path, typer.Argument(help="Model bundle directory.")]
LabelledData = Annotated[
    Path, typer.Argument(help="Labelled DATA folder (manifest.csv or class sub-folders).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the full JSON report.")]
Split = Annotated[str, typer.Option("--split", help=(
    "all, or val/train/test: the documents of the bundle's training split (test: held out of "
    "training and threshold choice, train --test-fraction)."))]
BatchSize = Annotated[int, typer.Option("--batch-size")]
CacheDir = Annotated[Path | None, typer.Option(
    "--cache-dir", help="Page cache (default: DOCTRIAGE_HOME/cache/pages).")]
Workers = Annotated[int, typer.Option(
    "--workers", help="Processes for ingesting uncached documents.")]
Threads = Annotated[int | None, typer.Option(
    "--threads", help="torch CPU threads (1 is fastest on a busy machine).")]
Budget = Annotated[float, typer.Option("--budget", help=(
    "Allowed share of pages whose early answer differs from full depth, in points "
    "(--selection point: accuracy lost against full depth)."))]
Delta = Annotated[float, typer.Option(
    "--delta", help="ucb: the bound holds with confidence 1 - delta.")]
