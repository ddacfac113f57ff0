"""Load-adaptive exits under a backlog: live-drop latency, throughput and the estimated loss, with
and without load adaptation, on real Redis + Celery workers and PostgreSQL.

The backlog is --pages born-digital synthetic pages (pipelines.synth; text layer only, no OCR)
already ingested and waiting for classification, as after a classify outage or a model upgrade:
seeded once (register + ingest in this process), then copied for each mode (a PostgreSQL template
database). Each mode starts one ingest worker (prefork, 1 process) and one classify worker
(classify,full_depth; threads pool, 1 thread), warms them up on one document, then runs
`doctriage backlog --no-scan` (claims the backlog and sends it to the classify queue, paced:
--max-in-queue messages ahead of live work, declaring backlog pressure as it sends) while a live
drop (one short new document) is submitted every --live-every-s until the backlog is answered.
The modes, same documents, same order:

- `off`: DOCTRIAGE_PRESSURE_BUDGET=0, DOCTRIAGE_FULL_DEPTH_YIELDS=false and
  DOCTRIAGE_BACKLOG_PRIORITY=0: the normal exit policy throughout, classify and full_depth asked
  round robin, backlog and live messages in one line;
- `queues` (ablation, not in the default --modes): the scheduling alone: the backlog's messages
  (and what they lead to) at priority 6 behind live work, full_depth asked last, the normal
  exit policy throughout;
- `on`: the defaults: that scheduling, and the pressure policy while the classify queue holds
  more than --pressure-depth messages or the backlog declares pressure.

The bundle is --model (default: the shipped one). One without a pressure policy gets it here as
`doctriage train` fits it: the bundle's own threshold selection at the pressure budget, on
--fit-pages labelled synthetic validation pages, written into a copy's exits.json.

Per mode: pages/s (backlog + live pages, from the backlog's start to every page final), live-drop
latency from submit to every page answered (an early answer stored: DONE, or REROUTED awaiting
full depth) and to DONE (the full-depth pass of a re-routed or audited page included), p50/p95/
max; the estimated loss (early vs full-depth disagreement on the audit sample, Wilson 95%),
overall and by policy version; the share of early answers the pressure policy decided.

    python -m bench.pressure [--pages 2000] [--live-every-s 1.0] [--max-in-queue 32]
        [--audit-fraction 0.1] [--modes off,on] [--model DIR] [--out FILE]

Prints JSON and writes bench/results/pressure.json (or --out).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import harness
from bench.true_loss import true_loss
from workers.queue_config import QueueConfig  # plain data: no Celery import

DOCTRIAGE = str(Path(sys.executable).parent / "doctriage")
SHIPPED = harness.REPO / "doctriage" / "default_bundle"
POLL_S = 0.1  # a live drop's finish is seen at most this late
MODES = ("off", "queues", "on")


def arguments() -> argparse.ArgumentParser:
    ap = harness.parser(__doc__, "pressure", harness.Common(threads=False, seed=5))
    ap.add_argument("--pages", type=int, default=2000, help="backlog pages")
    ap.add_argument("--live-every-s", type=float, default=1.0,
                    help="a live drop every this many seconds while the backlog runs")
    ap.add_argument("--max-in-queue", type=int, default=32,
                    help="the backlog's messages allowed ahead of live work (its pacer)")
    ap.add_argument("--pressure-depth", type=int, default=8,
                    help="DOCTRIAGE_PRESSURE_QUEUE_DEPTH of the `on` mode")
    ap.add_argument("--pressure-budget", type=float, default=0.02)
    ap.add_argument("--audit-fraction", type=float, default=0.1,
                    help="audit sample share (more pages than the default 0.02 narrow the "
                         "loss estimate's interval)")
    ap.add_argument("--reroute-below", type=float, default=0.6)
    ap.add_argument("--fit-pages", type=int, default=600,
                    help="labelled validation pages for a pressure policy the bundle lacks")
    ap.add_argument("--fit-selection", choices=("ucb", "point"), default=None,
                    help="the selection the pressure policy is fitted with (default: the "
                         "bundle's recorded one, else point: the shipped bundle's thresholds "
                         "came from the point search, before selections were recorded)")
    ap.add_argument("--fit-delta", type=float, default=None,
                    help="the pressure policy's ucb delta, the chance allowed that its true "
                         "loss is over the budget (default: train's, 0.05; the normal policy "
                         "keeps the bundle's recorded one, else 0.1)")
    ap.add_argument("--refit-normal", action="store_true",
                    help="choose the bundle's normal thresholds again on the fit pages too, at "
                         "--normal-budget with the same selection")
    ap.add_argument("--normal-budget", type=float, default=0.005)
    ap.add_argument("--modes", default="off,on",
                    help=f"a comma-separated subset of {', '.join(MODES)}")
    ap.add_argument("--model", type=Path, default=SHIPPED)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379",
                    help="the Redis server: the bench claims an empty database number on it "
                         "(as the tests do), flushes it between modes and at the end")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--timeout-s", type=float, default=900.0, help="per mode")
    ap.add_argument("--no-true-loss", dest="true_loss", action="store_false",
                    help="skip recomputing every early-answered page at full depth after each "
                         "mode (the true loss beside the estimate; ~1 min a mode on 2 cores)")
    return ap


# -- documents --------------------------------------------------------------------------------


def synth_docs(folder: Path, pages: int, seed: int, *, max_pages: int | None = None
               ) -> list[tuple[Path, int]]:
    """Born-digital synthetic documents (pipelines.synth) totalling at least `pages` pages,
    in manifest order: (path, pages). `max_pages`: only documents that short."""
    from pipelines.synth.corpus import CLASSES, generate_corpus

    per_class = 4
    while True:
        corpus = folder / f"corpus-{seed}-{per_class}"
        manifest = generate_corpus(corpus, per_class, seed, scanned_fraction=0.0,
                                   progress=False)
        with open(manifest, newline="") as fh:
            rows = [(corpus / r["path"], int(r["pages"])) for r in csv.DictReader(fh)]
        rows = [r for r in rows if max_pages is None or r[1] <= max_pages]
        picked, total = [], 0
        for row in rows:
            if total >= pages:
                break
            picked.append(row)
            total += row[1]
        if total >= pages:
            return picked
        per_class = math.ceil(per_class * 1.5 * pages / max(1, total)) + len(CLASSES)


def stage(docs: list[tuple[Path, int]], folder: Path, prefix: str) -> list[Path]:
    """Copies under `folder` with unique names (a folder source refuses symlinks out)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (path, _) in enumerate(docs):
        target = folder / f"{prefix}{i:05d}-{path.name}"
        shutil.copy(path, target)
        out.append(target)
    return out


# -- the bundle's pressure policy ---------------------------------------------------------------


def bundle_with_pressure(model_dir: Path, work: Path, args: argparse.Namespace
                         ) -> tuple[Path, dict[str, Any]]:
    """`model_dir` if its exits.json has a pressure policy fitted at the budget; else a copy
    with one fitted as `train` fits it (its own selection, the pressure budget). With
    --refit-normal the copy's normal thresholds are chosen again too, on the same pages, at
    --normal-budget: both policies as `train` with that selection would store them."""
    exits = json.loads((model_dir / "exits.json").read_text())
    fitted = exits.get("pressure")
    if fitted and float(fitted.get("budget", 1.0)) <= args.pressure_budget \
            and not args.refit_normal:
        return model_dir, {"source": "bundle", **fitted}
    import torch

    from classifier.bundle import load_bundle
    from classifier.calibrate import fit_pressure_policy, stage_cost_layers
    from classifier.policy import NeverExit
    from classifier.thresholds import PRESSURE_DELTA, ThresholdRule, select_thresholds
    from classifier.training import all_logits
    from doctriage.bundle_evaluation import EvaluationOptions, labelled_pages
    from pipelines.options import IngestOptions
    from pipelines.synth.corpus import CLASSES, generate_corpus

    model = load_bundle(model_dir)
    data_dir = work / "fit"  # born-digital documents average about 2 pages
    generate_corpus(data_dir, max(1, math.ceil(args.fit_pages / (2 * len(CLASSES)))),
                    args.seed + 2, scanned_fraction=0.0, progress=False)
    data = labelled_pages(model, model_dir, data_dir, EvaluationOptions(
        cache_dir=work / "fit-cache", progress=False, log=lambda _m: None,
        ingest=IngestOptions(ocr_mode="text")))
    logits = all_logits(model, data.inputs, 32)
    probs = torch.stack(
        [model.calibrated_probs(k, logits[:, k]) for k in range(model.num_stages)], 1)
    chosen = dict((exits.get("metadata", {}).get("calibration") or {})
                  .get("threshold_selection") or {})
    # As `train` fits them: the normal policy at the bundle's delta, the pressure one at
    # train's pressure delta (--fit-delta overrides the latter).
    selection = args.fit_selection or str(chosen.get("selection", "point"))
    normal_delta = float(chosen.get("delta", 0.1))
    rule = ThresholdRule(args.pressure_budget, selection,
                         args.fit_delta or PRESSURE_DELTA)
    normal: dict[str, Any] = {}
    if args.refit_normal:
        choice = select_thresholds(probs, data.labels, stage_cost_layers(model),
                                   ThresholdRule(args.normal_budget, selection, normal_delta))
        model.thresholds = choice.thresholds
        model.policy_spec = (NeverExit(model.num_stages).to_json() if choice.fallback else
                             {"name": "max_softmax", "thresholds": choice.thresholds})
        exits["thresholds"], exits["policy"] = model.thresholds, model.policy_spec
        normal = {"normal_policy": model.policy_spec, "normal_selection": choice.record,
                  "normal_val_flops_ratio": 1.0 if choice.fallback
                  else choice.simulation.mean_cost}
    pressure = fit_pressure_policy(model, probs, data.labels, rule)
    copy = work / "bundle"
    shutil.copytree(model_dir, copy)
    exits["pressure"] = pressure
    (copy / "exits.json").write_text(json.dumps(exits, indent=2))
    return copy, {"source": f"fitted here on {len(data.labels)} labelled synthetic pages "
                            f"({rule.selection})", **pressure, **normal}


# -- services -----------------------------------------------------------------------------------


CLAIM_KEY = "doctriage-test-claim"  # tests/servicekit.py's: a claimed DB is not empty


@dataclass
class Stores:
    """The PostgreSQL databases the bench creates (dropped at the end) and its Redis DB: an
    empty database number claimed with SET NX (from 1 up; the tests claim from 15 down), so a
    test run beside it never takes the same one."""

    pg_admin: str
    redis_url: str
    made: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        import redis

        self.token = uuid.uuid4().hex
        for db in range(1, 16):
            client = redis.Redis.from_url(f"{self.redis_url}/{db}")
            if client.dbsize() == 0 and client.set(CLAIM_KEY, self.token, nx=True) \
                    and client.dbsize() == 1:
                self.redis, self.broker = client, f"{self.redis_url}/{db}"
                return
        raise harness.BadInput(f"no empty Redis database on {self.redis_url}")

    def reset_redis(self) -> None:
        # One MULTI/EXEC: the DB number is never empty and unclaimed for another run to take.
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.flushdb().set(CLAIM_KEY, self.token).execute()

    def _admin(self) -> Any:
        import psycopg2

        conn = psycopg2.connect(self.pg_admin, connect_timeout=5)
        conn.autocommit = True
        return conn

    def create(self, template: str | None = None) -> str:
        name = f"bench_pressure_{uuid.uuid4().hex[:8]}"
        conn = self._admin()
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template
                                                       else ""))
        conn.close()
        self.made.append(name)
        return name

    def url(self, name: str) -> str:
        return self.pg_admin.rsplit("/", 1)[0] + f"/{name}"

    def clean(self) -> None:
        self.redis.flushdb()
        conn = self._admin()
        with conn.cursor() as cur:
            for name in self.made:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


def use_env(env: dict[str, str]) -> Any:
    """This process's settings from `env`'s DOCTRIAGE_* values; the Celery app configured."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("DOCTRIAGE_")})
    from doctriage import wiring
    from doctriage.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    wiring.configure_celery(settings)
    return settings


def seed_backlog(files: list[Path], env: dict[str, str]) -> int:
    """Register and ingest the backlog here (its pages PENDING, as a classify outage leaves
    them), aged past the backlog's grace period; the number of pages."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import func, select, update

    from db.models import Document, Page
    from db.session import session_scope
    from doctriage import wiring
    from pipelines.sources import LocalSource
    from workers import steps
    from workers.intake.registration import register_documents

    settings = use_env(env)
    ctx = wiring.step_context(settings)
    refs = list(LocalSource([f.parent for f in files[:1]]))
    registered = register_documents(ctx.sessions, refs)
    for doc_id in registered.documents:
        steps.ingest_document(ctx, doc_id)
    with session_scope(ctx.sessions) as s:
        old = datetime.now(UTC) - timedelta(days=1)
        s.execute(update(Document).values(updated_at=old))
        s.execute(update(Page).values(updated_at=old))
        pages = int(s.execute(select(func.count()).select_from(Page)).scalar_one())
    ctx.sessions.kw["bind"].dispose()
    return pages


# -- one mode -------------------------------------------------------------------------------------


class Watch:
    """Live drops: when each was submitted, answered (every page DONE or REROUTED) and DONE."""

    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions
        self.sent: dict[int, float] = {}
        self.answered: dict[int, float] = {}
        self.done: dict[int, float] = {}

    def poll(self) -> None:
        from sqlalchemy import func, select

        from db.models import Document, Page
        from db.session import session_scope

        waiting = [d for d in self.sent if d not in self.done]
        if not waiting:
            return
        with session_scope(self.sessions) as s:
            states = dict(s.execute(select(Document.id, Document.state)
                                    .where(Document.id.in_(waiting))).all())
            open_pages = dict(s.execute(
                select(Page.document_id, func.count()).where(
                    Page.document_id.in_(waiting),
                    Page.state.not_in(["DONE", "REROUTED", "FAILED"]))
                .group_by(Page.document_id)).all())
            any_pages = dict(s.execute(
                select(Page.document_id, func.count()).where(Page.document_id.in_(waiting))
                .group_by(Page.document_id)).all())
        now = time.perf_counter()
        for doc_id in waiting:
            if states.get(doc_id) in ("DONE", "FAILED"):
                self.done[doc_id] = now
                self.answered.setdefault(doc_id, now)
            elif any_pages.get(doc_id) and not open_pages.get(doc_id) \
                    and states.get(doc_id) != "INGESTING":
                self.answered.setdefault(doc_id, now)

    def latencies(self, finished: dict[int, float]) -> dict[str, Any]:
        ms = sorted(1000 * (finished[d] - self.sent[d]) for d in self.sent if d in finished)
        if not ms:
            return {"drops": 0}
        return {"drops": len(ms), "p50_ms": round(statistics.median(ms)),
                "p95_ms": round(ms[min(len(ms) - 1, math.ceil(0.95 * len(ms)) - 1)]),
                "max_ms": round(ms[-1]), "mean_ms": round(statistics.fmean(ms))}


def start_worker(queues: str, extra: list[str], env: dict[str, str], log: Path
                 ) -> subprocess.Popen:
    with log.open("wb") as fh:
        return subprocess.Popen(
            ["nice", "-n", "10", DOCTRIAGE, "worker", "--queues", queues, *extra,
             "--loglevel", "INFO"], env=env, stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True)


def mode_env(base: dict[str, str], mode: str, args: argparse.Namespace, db_url: str,
             home: Path) -> dict[str, str]:
    scheduled = mode != "off"  # live work first: queues and on
    return {**base, "DOCTRIAGE_DATABASE_URL": db_url, "DOCTRIAGE_HOME": str(home),
            "DOCTRIAGE_PRESSURE_BUDGET": str(args.pressure_budget if mode == "on" else 0),
            "DOCTRIAGE_FULL_DEPTH_YIELDS": "true" if scheduled else "false",
            # the default priority (QueueConfig's) or none
            "DOCTRIAGE_BACKLOG_PRIORITY": str(QueueConfig.backlog_priority if scheduled else 0),
            "DOCTRIAGE_PRESSURE_QUEUE_DEPTH": str(args.pressure_depth)}


@dataclass(frozen=True)
class ModeSetup:
    """What every mode's run shares: the arguments, the workers' base environment, the stores,
    the seeded template database, the backlog folder and the run's scratch folder."""

    args: argparse.Namespace
    base: dict[str, str]
    stores: Stores
    template: str
    backlog_dir: Path
    work: Path


def run_mode(mode: str, setup: ModeSetup, live: list[Path]) -> dict[str, Any]:
    from sqlalchemy import func, select

    from db.models import Document, Page
    from db.repository import register_document
    from db.session import make_engine, session_factory, session_scope
    from pipelines.sources import LocalSource

    args, work = setup.args, setup.work
    setup.stores.reset_redis()
    db = setup.stores.create(setup.template)
    env = mode_env(setup.base, mode, args, setup.stores.url(db), work / f"home-{mode}")
    use_env(env)
    from workers.tasks import ingest

    engine = make_engine(setup.stores.url(db))
    sessions = session_factory(engine)

    def submit(path: Path) -> int:
        ref = next(iter(LocalSource([path])))
        with session_scope(sessions) as s:
            doc_id = register_document(s, ref.uri, sha256=ref.sha256)[0]
        ingest.delay(doc_id)
        return int(doc_id)

    logs = work / f"logs-{mode}"
    logs.mkdir()
    workers = [start_worker("ingest", ["-c", "1"], env, logs / "ingest.log"),
               start_worker("classify,full_depth", ["-c", "1"], env, logs / "classify.log")]
    try:
        warm = submit(live[0])  # model loaded, connections made: not timed
        _until(lambda: _state(sessions, warm) == "DONE", 300, workers, logs)
        backlog_pages = _pending_pages(sessions)
        started = time.perf_counter()
        backlog = _start_backlog(setup, env, logs)
        watch = Watch(sessions)
        running = _Drive(sessions, backlog, workers, watch, submit, logs)
        _drive(mode, args, running, live[1:], started)
        seconds = time.perf_counter() - started
        watch.poll()
        with session_scope(sessions) as s:
            pages = int(s.execute(select(func.count()).select_from(Page)).scalar_one())
            docs = int(s.execute(select(func.count()).select_from(Document)).scalar_one())
        timed_pages = pages - _pages_of(sessions, warm)
        return {
            "backlog_pages": backlog_pages, "documents": docs,
            "live_drops": len(watch.sent), "seconds": round(seconds, 1),
            "pages_per_s": round(timed_pages / seconds, 2),
            "live_latency_answered": watch.latencies(watch.answered),
            "live_latency_done": watch.latencies(watch.done),
            **quality(sessions),
            **({"true_loss": true_loss(sessions, Path(env["DOCTRIAGE_MODEL_DIR"]),
                                       env["DOCTRIAGE_ARTIFACT_URL"])} if args.true_loss else {}),
            "backlog_report": _json_tail(logs / "backlog.json"),
        }
    finally:
        for w in workers:
            harness.stop_process_group(w)
        engine.dispose()


def _pending_pages(sessions: Any) -> int:
    from sqlalchemy import func, select

    from db.models import Page
    from db.session import session_scope

    with session_scope(sessions) as s:
        return int(s.execute(select(func.count()).select_from(Page).where(
            Page.state == "PENDING")).scalar_one())


def _start_backlog(setup: ModeSetup, env: dict[str, str], logs: Path) -> subprocess.Popen:
    """`doctriage backlog --no-scan` of the seeded pages, in the background, niced."""
    return subprocess.Popen(
        ["nice", "-n", "10", DOCTRIAGE, "backlog", str(setup.backlog_dir), "--no-scan",
         "--max-in-queue", str(setup.args.max_in_queue), "--json"], env=env,
        stdout=(logs / "backlog.json").open("wb"), stderr=subprocess.STDOUT)


@dataclass(frozen=True)
class _Drive:
    """One mode's running parts: its store, the backlog process, the workers, the live-drop
    watch and how a live drop is submitted."""

    sessions: Any
    backlog: subprocess.Popen
    workers: list[subprocess.Popen]
    watch: Watch
    submit: Callable[[Path], int]
    logs: Path


def _drive(mode: str, args: argparse.Namespace, run: _Drive, live: list[Path],
           started: float) -> None:
    """Drop a live document every `live_every_s` while the backlog is open, until the backlog
    has ended and every page is final."""
    remaining = list(live)
    next_drop = started
    deadline = started + args.timeout_s
    while True:
        now = time.perf_counter()
        if now >= next_drop and remaining and _backlog_open(run.sessions, run.backlog):
            doc_id = run.submit(remaining.pop(0))
            run.watch.sent[doc_id] = time.perf_counter()
            next_drop += args.live_every_s
        run.watch.poll()
        if run.backlog.poll() is not None and not _backlog_open(run.sessions, run.backlog) \
                and _all_final(run.sessions):
            return
        if now > deadline:
            raise RuntimeError(f"mode {mode}: not finished in {args.timeout_s} s")
        if any(w.poll() is not None for w in run.workers):
            raise RuntimeError(f"mode {mode}: a worker exited; see {run.logs}")
        time.sleep(POLL_S)


def quality(sessions: Any) -> dict[str, Any]:
    """The estimated loss on the audit sample (overall, by policy version), and who decided."""
    from sqlalchemy import func, select

    from classifier.policy import is_pressure_version
    from db.audit_loss import loss
    from db.models import Prediction
    from db.session import session_scope

    with session_scope(sessions) as s:
        by_version = loss(s, by="version")
        early = s.execute(select(Prediction.policy_version, func.count(),
                                 func.avg(Prediction.exit_stage))
                          .where(Prediction.pass_name == "early")
                          .group_by(Prediction.policy_version)).all()
        full = int(s.execute(select(func.count()).select_from(Prediction).where(
            Prediction.pass_name == "full")).scalar_one())
    n = sum(int(c) for _, c, _ in early)
    pressured = sum(int(c) for v, c, _ in early if is_pressure_version(v))
    return {
        "estimated_loss": by_version["total"],
        "estimated_loss_by_version": by_version["groups"],
        "early_answers": n,
        "pressure_share": round(pressured / n, 4) if n else 0.0,
        "mean_exit_stage": round(sum(float(a) * int(c) for _, c, a in early) / n, 3) if n
        else None,
        "full_depth_passes": full,
    }


def _state(sessions: Any, doc_id: int) -> str | None:
    from db.models import Document
    from db.session import session_scope

    with session_scope(sessions) as s:
        doc = s.get(Document, doc_id)
        return doc.state if doc is not None else None


def _pages_of(sessions: Any, doc_id: int) -> int:
    from sqlalchemy import func, select

    from db.models import Page
    from db.session import session_scope

    with session_scope(sessions) as s:
        return int(s.execute(select(func.count()).select_from(Page)
                             .where(Page.document_id == doc_id)).scalar_one())


def _backlog_open(sessions: Any, backlog: subprocess.Popen) -> bool:
    """The backlog still has pages without an answer (or is still being sent)."""
    from sqlalchemy import func, select

    from db.models import Page
    from db.session import session_scope

    if backlog.poll() is None:
        return True
    with session_scope(sessions) as s:
        return bool(s.execute(select(func.count()).select_from(Page).where(
            Page.state.in_(["PENDING", "CLASSIFYING"]))).scalar_one())


def _all_final(sessions: Any) -> bool:
    from sqlalchemy import func, select

    from db.models import Document
    from db.session import session_scope

    with session_scope(sessions) as s:
        return not s.execute(select(func.count()).select_from(Document).where(
            Document.state.not_in(["DONE", "FAILED", "SKIPPED"]))).scalar_one()


def _until(check: Any, timeout_s: float, workers: list[subprocess.Popen], logs: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
            raise RuntimeError(f"the workers did not warm up; see {logs}")
        time.sleep(0.2)


def _json_tail(path: Path) -> Any:
    text = path.read_text(errors="replace")
    try:
        return json.loads(text[text.index("{"):])
    except ValueError:
        return text[-500:]


def verdict(modes: dict[str, Any], budget: float) -> dict[str, Any]:
    if not {"off", "on"} <= set(modes):
        return {}
    off, on = modes["off"], modes["on"]
    ratio = {
        kind: round(off[kind]["p95_ms"] / max(1, on[kind]["p95_ms"]), 2)
        for kind in ("live_latency_answered", "live_latency_done")
        if off[kind].get("drops") and on[kind].get("drops")}
    loss = on["estimated_loss"]
    truth = on.get("true_loss", {}).get("total")
    return {"live_p95_ratio_off_over_on": ratio,
            "pages_per_s_ratio_on_over_off": round(on["pages_per_s"] / off["pages_per_s"], 2),
            "pressure_budget": budget,
            "estimated_loss_on_within_pressure_budget": loss["estimate"] <= budget,
            "estimated_loss_on_lower_bound_within_budget": loss["lower"] <= budget,
            "estimated_interval_covers_true_loss": None if truth is None
            else loss["lower"] <= truth["estimate"] <= loss["upper"],
            "true_loss_on_within_pressure_budget": None if truth is None
            else truth["estimate"] <= budget}


def main() -> int:
    args = arguments().parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - set(MODES):
        raise harness.BadInput(f"--modes: a comma-separated subset of {', '.join(MODES)}")
    if args.pages < 1 or args.live_every_s <= 0:
        raise harness.BadInput("--pages must be >= 1 and --live-every-s > 0")
    run = harness.start(args, malloc=False)
    stores = Stores(args.pg, args.redis)
    work = Path(tempfile.mkdtemp(prefix="bench-pressure-"))
    try:
        model_dir, pressure = bundle_with_pressure(harness.resolve_model(args.model), work, args)
        backlog_docs = synth_docs(work / "synth", args.pages, args.seed)
        files = stage(backlog_docs, work / "backlog", "b")
        live_docs = synth_docs(work / "synth-live", 400, args.seed + 1, max_pages=2)
        base = {**os.environ, "PYTHONPATH": str(harness.REPO), "OMP_THREAD_LIMIT": "1",
                "DOCTRIAGE_BROKER_URL": stores.broker, "DOCTRIAGE_MODEL_DIR": str(model_dir),
                "DOCTRIAGE_ARTIFACT_URL": str(work / "artifacts"),
                "DOCTRIAGE_OCR_MODE": "text", "DOCTRIAGE_DEFER_OCR": "false",
                "DOCTRIAGE_AUDIT_FRACTION": str(args.audit_fraction),
                "DOCTRIAGE_REROUTE_BELOW": str(args.reroute_below),
                "DOCTRIAGE_RECONCILE_EVERY_S": "3600", "DOCTRIAGE_LOG_LEVEL": "INFO"}
        template = stores.create()
        seeded = seed_backlog(files, {**base, "DOCTRIAGE_DATABASE_URL": stores.url(template),
                                      "DOCTRIAGE_HOME": str(work / "home-seed")})
        results = {}
        setup = ModeSetup(args, base, stores, template, work / "backlog", work)
        for mode in modes:
            results[mode] = run_mode(mode, setup, stage(live_docs, work / f"live-{mode}", "live"))
        result = {"backlog_pages_seeded": seeded, "pressure_policy": pressure,
                  "settings": {k: v for k, v in vars(args).items()
                               if k not in ("out",)} | {"model": str(args.model)},
                  "modes": results, "verdict": verdict(results, args.pressure_budget)}
    finally:
        stores.clean()
        shutil.rmtree(work, ignore_errors=True)
    harness.write_result(result, args.out, run, note=(
        "Celery + Redis + PostgreSQL, one ingest and one classify worker on this machine's "
        "cores (shared with other jobs: see loadavg). Latency: live-drop submit to every "
        "page answered (early answer stored) and to DONE (full depth included)."))
    return 0


if __name__ == "__main__":
    harness.run_main(main)
