"""The run job: classify documents in this process (no broker) into the embedded store, with
progress bars on a terminal, and a warning when the model does not seem to fit them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from doctriage import preflight, wiring
from doctriage.jobs import JobError

if TYPE_CHECKING:  # workers.embedded loads SQLAlchemy and torch: imported when the job runs
    from classifier.predict import ClassifyRuntime
    from doctriage.settings import Settings
    from pipelines.sources import DocumentRef, DocumentSource
    from workers.embedded import RunSummary
    from workers.steps import StepContext


@dataclass(frozen=True)
class RunOptions:
    paths: list[str]  # files, folders or s3://BUCKET/PREFIX
    model: Path | None = None  # None: DOCTRIAGE_MODEL_DIR, else the default bundle


def classify_here(settings: Settings, opts: RunOptions) -> RunSummary:
    """List opts.paths, classify every document found, and add the model-fit warning."""
    source, refs = _list(settings, opts.paths)
    if not any(ref.skip is None for ref in refs):
        raise JobError("no documents found (looked for .pdf .png .jpg .jpeg .tif .tiff)")
    try:
        if opts.model is not None:
            wiring.bundle_folder(opts.model)  # a mistyped --model fails before torch loads
        ctx = wiring.step_context(settings)  # the store first: a bad one fails in a second
        # The store's policy for the model version is read once, at the first classify.
        runtime = wiring.classify_runtime(settings, opts.model, policies=wiring.policy_feed(
            settings, lambda: ctx.sessions, once=True))
    except wiring.WiringError as exc:
        raise JobError(str(exc)) from None
    summary = _run_with_progress(ctx, runtime, refs, source, opts.paths)
    from workers.model_fit import fit_warning

    default = opts.model is None and settings.model_dir is None
    warning = fit_warning(runtime.model, summary.per_document, settings.reroute_below,
                          model_name="the default model" if default else "the model")
    if warning:
        summary.warnings.append(warning)
    return summary


def _list(settings: Settings, paths: list[str]) -> tuple[DocumentSource, list[DocumentRef]]:
    """The source over `paths` and what it holds, listed once (non-documents with their reason)."""
    from pipelines.sources_factory import source_for

    try:
        # folders, files, S3 prefixes (S3 options, and so boto3, only for s3:// paths)
        s3 = wiring.s3_options(settings) if any(p.startswith("s3://") for p in paths) else None
        source = source_for(paths, s3, follow_symlinks=settings.follow_symlinks)
        preflight.check_s3(settings, sources=paths)  # s3:// paths are listed next, artifacts
        return source, list(source)
    except (FileNotFoundError, wiring.WiringError) as exc:
        raise JobError(str(exc)) from None


def _run_with_progress(ctx: StepContext, runtime: ClassifyRuntime, refs: list[DocumentRef],
                       source: DocumentSource, roots: list[str]) -> RunSummary:
    """run_embedded with a documents bar and a pages bar (drawn only on a terminal)."""
    from tqdm import tqdm

    from workers.embedded import RunDisplay, run_embedded

    candidates = sum(ref.skip is None for ref in refs)
    with (
        tqdm(total=candidates, unit="doc", desc="documents", leave=False, disable=None) as docs_bar,
        tqdm(unit="page", desc="pages", leave=False, disable=None) as pages_bar,
    ):
        def progress(event: str, n: int) -> None:
            (docs_bar if event == "document" else pages_bar).update(n)

        return run_embedded(ctx, runtime, refs, screen=source.screen,
                            display=RunDisplay(progress, roots))
