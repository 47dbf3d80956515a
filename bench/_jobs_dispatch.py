"""Benchmark 1: trivial (`echo`) jobs created as fast as possible, run by real workers.

Jobs are created through the HTTP API (several keep-alive clients) or in this process with
`service.start_job`, one transaction each, as the API does; each job gets a case of its own.
Every figure comes from the jobs' own timestamps in the database (one clock: one machine).

In this process, `inprocess` sends one message per job (`voxelhub.run_job`: the dispatcher's
groups of one), `inprocess-batch` starts the jobs with `service.start_jobs`, BATCH a
transaction, whose messages go out in groups (`voxelhub.run_jobs`, `tasks.GROUP_SIZE` jobs
a message). The API process (`http`, `http-batch`) groups what waits together.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _jobs_server import Platform, RoleCpu, database_counters
from _jobs_stats import Profiler, spread, worker_profile
from sqlalchemy import func, select

from voxelhub.algorithms import service
from voxelhub.algorithms.schemas import InputRef, JobCreate
from voxelhub.archives.models import Case
from voxelhub.core.db import session_scope
from voxelhub.jobs import engine, tasks
from voxelhub.jobs.models import Job
from voxelhub.jobs.tasks import dispatcher_for, sender

POLL_S = 0.25
SERIAL_POLL_S = 0.02
COUNTERS_FLUSH_S = 1.2  # PostgreSQL backends flush their statistics about once a second


@dataclass
class Created:
    """What creating the jobs took, seen by the creator."""

    ids: list[uuid.UUID] = field(default_factory=list)
    seconds: float = 0.0
    call_s: list[float] = field(default_factory=list)
    send_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def make_cases(platform: Platform, count: int, label: str) -> list[uuid.UUID]:
    """`count` empty cases in the bench archive, in one transaction (not timed)."""
    archive_id = uuid.UUID(platform.archive_id)
    stamp = uuid.uuid4().hex[:8]
    with session_scope(platform.database_url) as db:
        cases = [Case(archive_id=archive_id, title=f"{label}-{stamp}-{i}") for i in range(count)]
        db.add_all(cases)
        db.flush()
        return [c.id for c in cases]


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    return [items[i::parts] for i in range(parts) if items[i::parts]]


BATCH = 100


def create_http(
    platform: Platform, cases: list[uuid.UUID], *, clients: int, batch: int | None = None
) -> Created:
    """POST /api/v1/algorithms/echo/jobs once per case from `clients` keep-alive clients,
    or, with `batch`, /jobs/batch with that many cases a request (one transaction each)."""
    created = Created()
    path = "/api/v1/algorithms/echo/jobs" + ("/batch" if batch else "")

    def post(c: httpx.Client, chunk: list[uuid.UUID]) -> None:
        jobs = [_job_body(platform, case_id) for case_id in chunk]
        started = time.perf_counter()
        try:
            answer = c.post(path, json={"jobs": jobs} if batch else jobs[0])
        except httpx.HTTPError as err:
            created.errors.append(f"{type(err).__name__}: {err}")
            return
        created.call_s.append(time.perf_counter() - started)
        if answer.status_code != 202:
            created.errors.append(f"{answer.status_code}: {answer.text[:300]}")
            return
        answered = answer.json() if batch else [answer.json()]
        created.ids += [uuid.UUID(job["id"]) for job in answered]

    def run(chunk: list[uuid.UUID]) -> None:
        step = batch or 1
        with httpx.Client(base_url=platform.base, headers=platform.headers, timeout=120) as c:
            for first in range(0, len(chunk), step):
                post(c, chunk[first : first + step])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(run, _split(cases, clients)))
    created.seconds = time.perf_counter() - started
    return created


def _job_body(platform: Platform, case_id: uuid.UUID) -> dict[str, Any]:
    return {
        "archive_id": platform.archive_id,
        "case_id": str(case_id),
        "inputs": {"payload": {"value": {"case": str(case_id)}}},
    }


def create_inprocess_batch(
    platform: Platform, cases: list[uuid.UUID], *, threads: int, batch: int = BATCH
) -> Created:
    """`service.start_jobs` for `batch` cases at a time here, one transaction each; their
    messages go out in groups after the commit."""
    created = Created()
    url, principal = platform.database_url, platform.principal()
    archive_id = uuid.UUID(platform.archive_id)
    dispatcher = dispatcher_for(platform.rt)
    dispatcher.group_size = tasks.GROUP_SIZE

    def timed_send_many(messages: list[tuple[uuid.UUID, str, int]]) -> None:
        started = time.perf_counter()
        dispatcher.send_many(messages)
        created.send_s.append(time.perf_counter() - started)

    def run(chunk: list[uuid.UUID]) -> None:
        for first in range(0, len(chunk), batch):
            part = chunk[first : first + batch]
            started = time.perf_counter()
            try:
                with session_scope(url) as db:
                    requests = [
                        JobCreate(
                            archive_id=archive_id,
                            case_id=case_id,
                            inputs={"payload": InputRef(value={"case": str(case_id)})},
                        )
                        for case_id in part
                    ]
                    jobs = service.start_jobs(
                        db,
                        principal,
                        service.get_algorithm(db, "echo"),
                        requests,
                        send=_Batched(timed_send_many),
                    )
                    job_ids = [job.id for job in jobs]
            except Exception as err:  # counted and shown; the run goes on
                created.errors.append(f"{type(err).__name__}: {err}"[:300])
                continue
            created.call_s.append(time.perf_counter() - started)
            created.ids += job_ids

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, _split(cases, threads)))
    created.seconds = time.perf_counter() - started
    return created


class _Batched:
    """A sender that hands a batch's messages over together (`engine.create_jobs`), timed."""

    def __init__(self, send_many: Callable[[list[tuple[uuid.UUID, str, int]]], None]) -> None:
        self.send_many = send_many

    def __call__(self, job_id: uuid.UUID, queue: str, priority: int) -> None:
        self.send_many([(job_id, queue, priority)])


def create_inprocess(platform: Platform, cases: list[uuid.UUID], *, threads: int) -> Created:
    """`service.start_job` per case here, one transaction each, sent after the commit, one
    message per job (the dispatcher's groups of one)."""
    created = Created()
    url, principal = platform.database_url, platform.principal()
    archive_id = uuid.UUID(platform.archive_id)
    dispatcher_for(platform.rt).group_size = 1
    send = sender(platform.rt)

    def timed_send(job_id: uuid.UUID, queue: str, priority: int) -> None:
        started = time.perf_counter()
        send(job_id, queue, priority)
        created.send_s.append(time.perf_counter() - started)

    def run(chunk: list[uuid.UUID]) -> None:
        for case_id in chunk:
            started = time.perf_counter()
            try:
                with session_scope(url) as db:
                    job = service.start_job(
                        db,
                        principal,
                        service.get_algorithm(db, "echo"),
                        archive_id=archive_id,
                        case_id=case_id,
                        inputs={"payload": InputRef(value={"case": str(case_id)})},
                        send=timed_send,
                    )
                    job_id = job.id
            except Exception as err:  # counted and shown; the run goes on
                created.errors.append(f"{type(err).__name__}: {err}"[:300])
                continue
            created.call_s.append(time.perf_counter() - started)
            created.ids.append(job_id)

    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, _split(cases, threads)))
    created.seconds = time.perf_counter() - started
    return created


def count_final(platform: Platform, ids: list[uuid.UUID]) -> int:
    with session_scope(platform.database_url) as db:
        return int(
            db.scalar(select(func.count()).where(Job.id.in_(ids), Job.state.in_(engine.FINAL))) or 0
        )


def wait_final(platform: Platform, ids: list[uuid.UUID], *, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while count_final(platform, ids) < len(ids):
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)
    return True


def cancel_unfinished(platform: Platform, ids: list[uuid.UUID]) -> int:
    """Cancel what a timed-out run left waiting, so it does not load the next run."""
    cancelled = 0
    with session_scope(platform.database_url) as db:
        for job in db.scalars(
            select(Job).where(Job.id.in_(ids), Job.state.in_((engine.PENDING, engine.QUEUED)))
        ):
            engine.cancel(db, job)
            cancelled += 1
    return cancelled


@dataclass(frozen=True)
class Ran:
    """The timestamps of a job that succeeded, in seconds since the epoch."""

    created: float
    queued: float | None
    started: float
    finished: float


def _rate(count: int, start: float | None, end: float | None) -> float | None:
    return count / (end - start) if start is not None and end is not None and end > start else None


def _load(platform: Platform, ids: list[uuid.UUID]) -> tuple[list[Any], list[Ran]]:
    with session_scope(platform.database_url) as db:
        rows = list(
            db.execute(
                select(
                    Job.state,
                    Job.message,
                    Job.created_at,
                    Job.queued_at,
                    Job.started_at,
                    Job.finished_at,
                ).where(Job.id.in_(ids))
            )
        )
    ran = [
        Ran(
            r.created_at.timestamp(),
            r.queued_at.timestamp() if r.queued_at else None,
            r.started_at.timestamp(),
            r.finished_at.timestamp(),
        )
        for r in rows
        if r.state == "succeeded" and r.started_at and r.finished_at
    ]
    return rows, ran


def summarise(
    platform: Platform,
    created: Created,
    cpu: RoleCpu,
    counters: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Latencies and rates from the jobs' timestamps; CPU per job by role."""
    rows, ok = _load(platform, created.ids)
    created_at = [r.created_at.timestamp() for r in rows]
    first, last = min(created_at, default=None), max(created_at, default=None)
    first_started = min((j.started for j in ok), default=None)
    last_finished = max((j.finished for j in ok), default=None)
    queued = [j for j in ok if j.queued is not None]
    return {
        "jobs": len(created.ids),
        "states": dict(Counter(r.state for r in rows)),
        "errors": sorted({r.message[:300] for r in rows if r.state == "failed"})[:5]
        + created.errors[:5],
        "throughput_per_s": _rate(len(ok), first, last_finished),
        "creation_per_s": _rate(len(rows) - 1, first, last),
        "execution_per_s": _rate(len(ok), first_started, last_finished),
        "creator_seconds": created.seconds,
        "dispatch": spread([j.started - j.created for j in ok]),
        "end_to_end": spread([j.finished - j.created for j in ok]),
        "send": spread([j.queued - j.created for j in queued if j.queued is not None]),
        "queue_wait": spread([j.started - j.queued for j in queued if j.queued is not None]),
        "run": spread([j.finished - j.started for j in ok]),
        "never_marked_queued": len(ok) - len(queued),
        "create_call": spread(created.call_s),
        "send_call": spread(created.send_s),
        "cpu_ms_per_job": {
            role: 1000 * seconds / len(ok) for role, seconds in cpu.seconds.items() if ok
        },
        "cpu_seconds": cpu.seconds,
        "others_cpu_seconds": cpu.others,
        "steal_seconds": cpu.steal,
        "database_per_job": {k: v / len(ok) for k, v in (counters or {}).items()} if ok else {},
    }


def run(
    platform: Platform,
    *,
    label: str,
    jobs: int,
    how: str,
    clients: int,
    timeout_s: float,
    profile_to: Path | None = None,
    prefork: bool = False,
) -> dict[str, Any]:
    """One timed run: make the cases, create the jobs, wait for all, summarise."""
    cases = make_cases(platform, jobs, label)
    profiler = None
    if profile_to is not None:
        profiler = Profiler(platform.worker_pids(), profile_to, subprocesses=prefork)
        profiler.__enter__()
        time.sleep(1.0)  # py-spy attaches
    before = database_counters(platform.database_url)
    try:
        with RoleCpu(platform.roles()) as cpu:
            if how == "http":
                created = create_http(platform, cases, clients=clients)
            elif how == "http-batch":
                created = create_http(platform, cases, clients=clients, batch=BATCH)
            elif how == "inprocess-batch":
                created = create_inprocess_batch(platform, cases, threads=clients)
            else:
                created = create_inprocess(platform, cases, threads=clients)
            done = wait_final(platform, created.ids, timeout_s=timeout_s)
    finally:
        if profiler is not None:
            profiler.__exit__()
    time.sleep(COUNTERS_FLUSH_S)
    after = database_counters(platform.database_url)
    counters = {k: after[k] - before[k] for k in after}
    figures = summarise(platform, created, cpu, counters)
    figures.update(
        {"how": how, "clients": clients, "finished_in_time": done, "timeout_s": timeout_s}
    )
    if not done:
        figures["cancelled_after_timeout"] = cancel_unfinished(platform, created.ids)
    if profiler is not None:
        succeeded = figures["states"].get("succeeded", 0)
        profile = worker_profile(profiler.files)
        seconds = profile["main_thread_samples"] / profiler.rate
        profile["ms_per_job"] = {
            phase: 1000 * share * seconds / succeeded
            for phase, share in profile["main_thread_share"].items()
            if succeeded
        }
        profile["files"] = [str(f) for f in profiler.files]
        figures["profile"] = profile
    return figures


def serial(platform: Platform, *, jobs: int, timeout_s: float = 30) -> dict[str, Any]:
    """One job at a time on idle workers: the dispatch latency without any queueing."""
    cases = make_cases(platform, jobs, "serial")
    total = Created()
    with RoleCpu(platform.roles()) as cpu:
        for case_id in cases:
            one = create_inprocess(platform, [case_id], threads=1)
            total.ids += one.ids
            total.call_s += one.call_s
            total.send_s += one.send_s
            total.errors += one.errors
            deadline = time.monotonic() + timeout_s
            while one.ids and count_final(platform, one.ids) < 1:
                if time.monotonic() > deadline:
                    total.errors.append(f"job {one.ids[0]} did not end in {timeout_s:g} s")
                    break
                time.sleep(SERIAL_POLL_S)
    figures = summarise(platform, total, cpu)
    figures.update({"how": "inprocess", "clients": 1, "serial": True})
    return figures


POLL_SQL = (
    "SELECT * FROM {table} WHERE queue_id = {queue} AND visible != false "
    "ORDER BY timestamp, id LIMIT 1 FOR UPDATE"
)


def broker_table(platform: Platform, *, grown_rows: int = 100_000) -> dict[str, Any]:
    """The embedded broker's message table, and what kombu's poll for the next message
    costs on it now and on a copy grown to `grown_rows` consumed messages (kombu marks a
    consumed message invisible and never deletes it)."""
    from sqlalchemy import text

    with session_scope(platform.database_url) as db:
        if not db.scalar(text("SELECT to_regclass('kombu_message') IS NOT NULL")):
            return {"error": "no kombu_message table: the embedded broker was not used"}
        queue = db.scalar(text("SELECT id FROM kombu_queue WHERE name = 'cpu'"))
        rows = db.scalar(text("SELECT count(*) FROM kombu_message"))
        visible = db.scalar(text("SELECT count(*) FROM kombu_message WHERE visible"))
        now_ms = _explain_ms(db, POLL_SQL.format(table="kombu_message", queue=queue))
        db.execute(text("CREATE TEMP TABLE bench_grown (LIKE kombu_message INCLUDING ALL)"))
        db.execute(
            text(
                "INSERT INTO bench_grown (id, visible, timestamp, payload, version, queue_id) "
                "SELECT g, g = :n, now() - make_interval(secs => :n - g), '{}', 1, :q "
                "FROM generate_series(1, :n) AS g"
            ),
            {"n": grown_rows, "q": queue},
        )
        grown_sql = POLL_SQL.format(table="bench_grown", queue=queue)
        unanalysed_ms = _explain_ms(db, grown_sql)
        db.execute(text("ANALYZE bench_grown"))
        grown_ms = _explain_ms(db, grown_sql)
        db.rollback()
    return {
        "rows": rows,
        "visible_rows": visible,
        "poll_ms_now": now_ms,
        "grown_rows": grown_rows,
        "poll_ms_grown_before_analyze": unanalysed_ms,
        "poll_ms_grown": grown_ms,
    }


def _explain_ms(db: Any, sql: str) -> float | None:
    from sqlalchemy import text

    plan = db.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")).scalar()
    return plan[0].get("Execution Time") if isinstance(plan, list) and plan else None
