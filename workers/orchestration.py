"""The orchestration seam: what follows a step, written once, and the in-process way to run it.

Every entry point (`run`, `submit`, `watch`, `backlog`, `retry`, the Celery tasks and the
reconciler) hands ids to an `Orchestrator`: ``ingest(doc_ids)``, ``classify(page_ids)``,
``ocr(page_ids)``, ``full_depth(page_ids)``, then ``drain()``. Two implementations:

- ``workers.tasks.CeleryOrchestrator`` sends messages (one per document; page ids in chunks of
  ``doctriage_classify_chunk`` = ``max_batch``, one batcher batch per message); ``drain`` is a
  no-op because workers run the steps and the tasks apply the same follow-on rules.
- ``InProcessOrchestrator`` (here) runs the steps in this process, with no broker, and OCR in
  a process pool (so the model is never blocked by tesseract).

The follow-on rules (``after_ingest``, ``after_classify``, ``after_ocr``) are the only place
that says what comes next: after an ingest, its pending pages are classified; after a classify,
the re-routed pages get the full-depth pass and the pages the OCR-free exit did not settle go
to OCR; after an OCR, the pages are classified (with their words). Documents are finished by
the steps themselves (the classify, ocr and full-depth transactions mark a document DONE once
every page is final).

Error rule, in process: a step that raises fails its document or pages with
``"<ExceptionType>: <message>"`` and the failure kind (``workers.failures.is_transient``), as a
Celery task does once its retries are spent, and the run goes on; nothing escapes to the caller.
(The backlog's old in-process runner let classify errors escape; `run`'s never did.)
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Protocol

from classifier.predict import ClassifyRuntime
from pipelines.errors import one_line
from workers import steps
from workers.ocr_work import OcrOutcome, read_words
from workers.steps import ClassifyResult, IngestResult, OcrStepResult, OcrWork, StepContext

log = logging.getLogger(__name__)

# In process, pages per classify step call: several batcher batches (batches span documents),
# one store transaction.
CLASSIFY_CHUNK_BATCHES = 4


class Orchestrator(Protocol):
    """Where ids go to be worked on. Calls may return before the work is done; ``drain`` returns
    once everything handed over so far has been run (in process) or sent (Celery)."""

    def ingest(self, doc_ids: Sequence[int]) -> None: ...

    def classify(self, page_ids: Sequence[int]) -> None: ...

    def full_depth(self, page_ids: Sequence[int]) -> None: ...

    def ocr(self, page_ids: Sequence[int]) -> None: ...

    def drain(self) -> None: ...


def chunks(ids: Sequence[int], size: int) -> list[list[int]]:
    """``ids`` in order, ``size`` at a time (the one chunking rule; the size is the
    implementation's: a message in Celery, a store transaction in process)."""
    return [[int(i) for i in ids[start:start + size]] for start in range(0, len(ids), size)]


def after_ingest(result: IngestResult, then: Orchestrator) -> None:
    """An ingested document's pending pages are classified next."""
    if result.page_ids:
        then.classify(result.page_ids)


def after_classify(result: ClassifyResult, then: Orchestrator) -> None:
    """Pages the early pass re-routed get the full-depth pass next; pages awaiting OCR that
    the OCR-free exit did not settle (or whose answer is re-routed or audited) get OCR."""
    if result.rerouted:
        then.full_depth(result.rerouted)
    if result.needs_ocr:
        then.ocr(result.needs_ocr)


def after_ocr(result: OcrStepResult, then: Orchestrator) -> None:
    """OCRed pages are classified next (stage 0, with their words)."""
    if result.classify:
        then.classify(result.classify)


class StepObserver(Protocol):
    """What the in-process runner reports about each step call (timings, progress)."""

    def ingested(self, doc_id: int, result: IngestResult | None, seconds: float) -> None: ...

    def classified(self, page_ids: Sequence[int], result: ClassifyResult | None,
                   seconds: float, *, full: bool) -> None: ...


class _Quiet:
    def ingested(self, doc_id: int, result: IngestResult | None, seconds: float) -> None:
        pass

    def classified(self, page_ids: Sequence[int], result: ClassifyResult | None,
                   seconds: float, *, full: bool) -> None:
        pass


def _is_transient(exc: BaseException) -> bool:
    # Imported here: workers.failures loads botocore, kombu and redis, which `run` rarely needs.
    from workers.failures import is_transient

    return is_transient(exc)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def ocr_pool_size() -> int:
    """OCR processes in process: one per core but one, which the model and the ingest use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 2
    return max(1, cores - 1)


def _pool_context() -> multiprocessing.context.BaseContext:
    # Never fork: the parent holds the model's threads and the store's connections.
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class InProcessOrchestrator:
    """Runs the steps here. Documents are ingested one at a time as they are handed over; their
    pages queue up and are classified ``chunk`` at a time as soon as a chunk is full, so batches
    span documents; re-routed pages wait for ``drain``, which classifies what is left and then
    runs the full-depth pass over every re-routed page handed over (page id order, once each).

    Pages sent to OCR are claimed here and read by tesseract in a process pool of
    ``ocr_workers`` (default ``ocr_pool_size()``), so neither the model nor the ingest waits
    for it; finished pages are stored and handed to classify between documents and in
    ``drain`` (which waits for OCR before classifying a partial chunk, keeping batches full).

    ``runtime`` is the classify runtime, or ``runtime_factory`` builds it on first use (so a run
    with nothing to classify never loads a model); ``chunk`` defaults to
    ``CLASSIFY_CHUNK_BATCHES`` x the batcher's ``max_batch``."""

    def __init__(self, ctx: StepContext, runtime: ClassifyRuntime | None = None, *,
                 runtime_factory: Callable[[], ClassifyRuntime] | None = None,
                 chunk: int | None = None, observer: StepObserver | None = None,
                 ocr_workers: int | None = None) -> None:
        if (runtime is None) == (runtime_factory is None):
            raise TypeError("give either runtime or runtime_factory")
        self.ctx = ctx
        self._runtime = runtime
        self._factory = runtime_factory
        self._chunk = chunk
        self.observer: StepObserver = observer or _Quiet()
        self._pending: list[int] = []
        self._rerouted: dict[int, None] = {}  # an ordered set
        self._ocr_workers = ocr_workers or ocr_pool_size()
        self._pool: ProcessPoolExecutor | None = None
        self._ocr_running: dict[Future[OcrOutcome], OcrWork] = {}

    @property
    def runtime(self) -> ClassifyRuntime:
        if self._runtime is None:
            assert self._factory is not None
            self._runtime = self._factory()
        return self._runtime

    @property
    def chunk(self) -> int:
        return self._chunk or self.runtime.options.max_batch * CLASSIFY_CHUNK_BATCHES

    def ingest(self, doc_ids: Sequence[int]) -> None:
        for doc_id in doc_ids:
            t0 = time.perf_counter()
            result: IngestResult | None = None
            try:
                result = steps.ingest_document(self.ctx, int(doc_id))
            except Exception as exc:  # one bad document never stops the run
                log.warning("document %s failed: %s", doc_id, one_line(exc))
                steps.fail_document(self.ctx, int(doc_id), _reason(exc),
                                    transient=_is_transient(exc))
            self.observer.ingested(int(doc_id), result, time.perf_counter() - t0)
            if result is not None:
                after_ingest(result, self)
            self._collect(block=False)  # OCR finished meanwhile: on to classify

    def classify(self, page_ids: Sequence[int]) -> None:
        self._pending.extend(int(i) for i in page_ids)
        while self._pending and len(self._pending) >= self.chunk:
            ids, self._pending = self._pending[:self.chunk], self._pending[self.chunk:]
            self._classify_now(ids)

    def full_depth(self, page_ids: Sequence[int]) -> None:
        self._rerouted.update(dict.fromkeys(int(i) for i in page_ids))

    def ocr(self, page_ids: Sequence[int]) -> None:
        """Claim the pages and start their OCR in the pool; returns at once."""
        ids = [int(i) for i in page_ids]
        try:
            work = steps.claim_ocr(self.ctx, ids)
        except Exception as exc:  # the document cannot be read again, or the store is down
            log.warning("OCR of %d pages failed: %s", len(ids), one_line(exc))
            steps.fail_pages(self.ctx, ids, _reason(exc), transient=_is_transient(exc))
            return
        if work.known:
            self._store_ocr(work, work.known)
        for job in work.jobs:
            page = work.pages[job.page_id]
            future = self._ocr_pool().submit(read_words, job, self.ctx.ingest)
            self._ocr_running[future] = OcrWork({page.id: page}, [job], [], [])

    def drain(self) -> None:
        try:
            while self._pending or self._rerouted or self._ocr_running:
                # A partial chunk waits while OCR may still add pages to it.
                if self._pending and (len(self._pending) >= self.chunk
                                      or not self._ocr_running):
                    for ids in chunks(self._pending, self.chunk):
                        self._classify_now(ids)  # may re-route pages, or send them to OCR
                    self._pending = []
                    continue
                if self._ocr_running:
                    self._collect(block=True)
                    continue
                rerouted, self._rerouted = sorted(self._rerouted), {}
                for ids in chunks(rerouted, self.chunk):
                    self._full_depth_now(ids)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the OCR pool (a later OCR starts a new one)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _ocr_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self._ocr_workers, mp_context=_pool_context())
        return self._pool

    def _collect(self, *, block: bool) -> None:
        """Store the OCR results that are in (with `block`, at least one) and classify them."""
        if not self._ocr_running:
            return
        finished, _ = wait(list(self._ocr_running), timeout=None if block else 0,
                           return_when=FIRST_COMPLETED)
        for future in finished:
            work = self._ocr_running.pop(future)
            try:
                outcome = future.result()
            except Exception as exc:  # a pool process died (BrokenProcessPool): not the page
                log.warning("OCR of page %s failed: %s", list(work.pages), one_line(exc))
                steps.fail_pages(self.ctx, list(work.pages), _reason(exc), transient=True)
                if isinstance(exc, BrokenProcessPool) and self._pool is not None:
                    self._pool.shutdown(wait=False)  # unusable: the next OCR starts a new one
                    self._pool = None
                continue
            self._store_ocr(work, [outcome])

    def _store_ocr(self, work: OcrWork, outcomes: list[OcrOutcome]) -> None:
        try:
            result = steps.store_ocr(self.ctx, work, outcomes)
        except Exception as exc:
            log.warning("storing OCR of %d pages failed: %s", len(outcomes), one_line(exc))
            steps.fail_pages(self.ctx, [o.page_id for o in outcomes], _reason(exc),
                             transient=_is_transient(exc))
            return
        after_ocr(result, self)

    def _classify_now(self, ids: list[int]) -> None:
        result = self._run_pass(ids, full=False)
        if result is not None:
            after_classify(result, self)

    def _full_depth_now(self, ids: list[int]) -> None:
        self._run_pass(ids, full=True)

    def _run_pass(self, ids: list[int], *, full: bool) -> ClassifyResult | None:
        """One classify or full-depth pass over `ids`. As a task would, a failure fails the
        pages with the reason, and the run goes on."""
        step = steps.full_depth_pages if full else steps.classify_pages
        t0 = time.perf_counter()
        result: ClassifyResult | None = None
        try:
            result = step(self.ctx, self.runtime, ids)
        except Exception as exc:
            what = "full-depth pass over" if full else "classifying"
            log.warning("%s %d pages failed: %s", what, len(ids), one_line(exc))
            steps.fail_pages(self.ctx, ids, _reason(exc), transient=_is_transient(exc))
        self.observer.classified(ids, result, time.perf_counter() - t0, full=full)
        return result
