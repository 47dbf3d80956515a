"""Elastic workers: the scaling policy, the queue metrics and the local scaler."""

from __future__ import annotations

import doctest
import re
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from voxelhub.algorithms.models import Algorithm, AlgorithmVersion
from voxelhub.api import build_app
from voxelhub.archives.models import Archive, Case
from voxelhub.core.db import session_scope, utcnow
from voxelhub.core.runtime import Runtime
from voxelhub.core.settings import Settings
from voxelhub.jobs import autoscale, metrics
from voxelhub.jobs.autoscale import (
    Decision,
    Memory,
    Policy,
    PolicyError,
    QueueState,
    desired_workers,
)
from voxelhub.jobs.models import Job, WorkerHeartbeat
from voxelhub.jobs.scaler import LocalScaler, choose_to_stop


def state(
    depth: int = 0,
    running: int = 0,
    *,
    workers: int = 0,
    wait: float = 0.0,
    durations: tuple[float, ...] = (8.0,),
) -> QueueState:
    return QueueState("cpu", depth, running, wait, durations, workers)


def decide(
    queue: QueueState,
    policy: Policy | None = None,
    *,
    since_change: float | None = None,
    idle_for: float | None = None,
) -> Decision:
    now = 1000.0
    return desired_workers(
        queue,
        policy or Policy(),
        now=now,
        last_change_at=None if since_change is None else now - since_change,
        idle_since=None if idle_for is None else now - idle_for,
    )


def test_the_worked_example_in_the_docstring_holds() -> None:
    assert doctest.testmod(autoscale).failed == 0


@pytest.mark.parametrize(
    ("queue", "policy", "expected"),
    [
        (state(4, 1, workers=1, durations=(6.0, 8.0, 10.0)), Policy(), 4),
        # No history: the assumed 30 s duration, but never more than one worker per job.
        (state(1, durations=()), Policy(), 1),
        (state(3, durations=()), Policy(), 3),
        (state(10, durations=(1.0,)), Policy(), 1),
        (state(10, durations=(2.0, 2.0, 50.0)), Policy(), 2),
        (state(8, durations=(20.0,)), Policy(jobs_per_worker=2), 4),
        (state(1, durations=(0.0,)), Policy(), 1),
    ],
)
def test_backlog_scales_up_at_once(queue: QueueState, policy: Policy, expected: int) -> None:
    decision = decide(queue, policy, since_change=1.0)
    assert decision.desired == expected
    assert f"→ {expected} workers" in decision.reason


@pytest.mark.parametrize(("workers", "expected"), [(0, 4), (1, 4), (4, 4), (6, 4)])
def test_clamped_at_the_maximum(workers: int, expected: int) -> None:
    decision = decide(state(200, workers=workers), since_change=1.0)
    assert decision.desired == expected
    assert "maximum" in decision.reason


@pytest.mark.parametrize(
    ("since_change", "expected"), [(0.0, 3), (30.0, 3), (59.9, 3), (60.0, 2), (None, 2)]
)
def test_scale_down_waits_for_the_cooldown(since_change: float | None, expected: int) -> None:
    decision = decide(state(1, workers=3), since_change=since_change)
    assert decision.desired == expected
    if expected == 3:
        assert "cool-down" in decision.reason


@pytest.mark.parametrize("workers", [2, 4, 8])
def test_scale_down_goes_one_step_at_a_time(workers: int) -> None:
    decision = decide(state(workers=workers, durations=()), Policy(max_workers=8), idle_for=1e6)
    assert decision.desired == workers - 1
    assert "one step down" in decision.reason


@pytest.mark.parametrize(("idle_for", "expected"), [(None, 1), (0.0, 1), (119.0, 1), (120.0, 0)])
def test_scale_to_zero_only_after_the_idle_period(idle_for: float | None, expected: int) -> None:
    decision = decide(state(workers=1), idle_for=idle_for)
    assert decision.desired == expected
    assert ("1 → 0" in decision.reason) == (expected == 0)


@pytest.mark.parametrize(("workers", "depth", "expected"), [(0, 0, 2), (2, 0, 2), (3, 0, 2)])
def test_minimum_respected(workers: int, depth: int, expected: int) -> None:
    decision = decide(state(depth, workers=workers), Policy(min_workers=2), idle_for=1e6)
    assert decision.desired == expected


@pytest.mark.parametrize(
    ("wait", "since_change", "expected"),
    [(5.0, 1e6, 3), (10.0, 1e6, 3), (30.0, 1e6, 4), (30.0, 10.0, 4), (30.0, 9.0, 3)],
)
def test_a_job_waiting_too_long_adds_a_worker(
    wait: float, since_change: float, expected: int
) -> None:
    # Short jobs: by duration alone one worker would do, but the three are all busy. A worker
    # added less than a target wait ago is given the time to start first.
    queue = state(1, 3, workers=3, wait=wait, durations=(1.0,))
    decision = decide(queue, since_change=since_change)
    assert decision.desired == expected
    if expected == 4:
        assert "waited 30 s" in decision.reason


def test_never_plans_below_the_running_jobs() -> None:
    busy = state(0, 3, workers=4, durations=(1.0,))
    assert decide(busy, since_change=1e6).desired == 3
    held = decide(state(0, 3, workers=3, durations=(1.0,)), since_change=1e6)
    assert (held.desired, "all are busy" in held.reason) == (3, True)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"min_workers": -1}, "min_workers"),
        ({"max_workers": 0}, "max_workers"),
        ({"min_workers": 5, "max_workers": 4}, "max_workers"),
        ({"jobs_per_worker": 0}, "jobs_per_worker"),
        ({"target_wait_s": 0.0}, "target_wait_s"),
        ({"cooldown_s": -1.0}, "cooldown_s"),
        ({"scale_to_zero_after_s": float("nan")}, "scale_to_zero_after_s"),
    ],
)
def test_contradictory_policies_are_refused(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(PolicyError, match=named):
        Policy(**fields)


def test_memory_tracks_idleness_and_changes() -> None:
    memory = Memory().observe(state(), now=10.0).observe(state(), now=20.0)
    assert memory == Memory(None, 10.0)
    busy = memory.changed(now=25.0).observe(state(1), now=30.0)
    assert busy == Memory(25.0, None)


@pytest.mark.parametrize(
    ("hostnames", "busy", "count", "expected"),
    [
        (["a", "b", "c"], set(), 1, ["c"]),
        (["a", "b", "c"], {"c"}, 1, ["b"]),
        (["a", "b", "c"], {"a", "c"}, 2, ["b"]),
        (["a", "b"], {"a", "b"}, 2, []),
    ],
)
def test_only_idle_workers_are_chosen_to_stop(
    hostnames: list[str], busy: set[str], count: int, expected: list[str]
) -> None:
    assert choose_to_stop(hostnames, busy, count) == expected


# The text exposition format, version 0.0.4.
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
LABELS = (
    rf"\{{(?:[a-zA-Z_][a-zA-Z0-9_]*={LABEL_VALUE})(?:,[a-zA-Z_][a-zA-Z0-9_]*={LABEL_VALUE})*\}}"
)
NUMBER = r"(?:[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+)|NaN|[+-]Inf)"
SAMPLE = re.compile(rf"^(?P<name>{NAME})(?:{LABELS})? (?P<value>{NUMBER})(?: -?\d+)?$")
HELP = re.compile(rf"^# HELP (?P<name>{NAME}) \S.*$")
TYPE = re.compile(rf"^# TYPE (?P<name>{NAME}) (?:counter|gauge|histogram|summary|untyped)$")


def parse_exposition(text: str) -> dict[str, list[str]]:
    """Samples by metric name; fails on any line that is not valid exposition format."""
    assert text.endswith("\n")
    samples: dict[str, list[str]] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if match := TYPE.match(line):
            assert match["name"] not in typed, f"second TYPE line for {match['name']}"
            typed.add(match["name"])
        elif not HELP.match(line):
            match = SAMPLE.match(line)
            assert match is not None, f"not an exposition line: {line!r}"
            assert match["name"] in typed, f"{match['name']} has no TYPE line before it"
            samples.setdefault(match["name"], []).append(line)
    return samples


def test_render_prometheus_writes_valid_exposition_lines() -> None:
    states = {
        "cpu": state(7, 2, workers=3, wait=12.3456),
        'we"ird\\q': QueueState('we"ird\\q', 0, 0, float("nan"), (), 0),
    }
    decisions = {"cpu": Decision(4, "because")}
    samples = parse_exposition(metrics.render_prometheus(states, decisions))
    assert samples["voxelhub_queue_depth"][0] == 'voxelhub_queue_depth{queue="cpu"} 7'
    assert samples["voxelhub_queue_depth"][1] == 'voxelhub_queue_depth{queue="we\\"ird\\\\q"} 0'
    assert samples["voxelhub_queue_oldest_wait_seconds"] == [
        'voxelhub_queue_oldest_wait_seconds{queue="cpu"} 12.346',
        'voxelhub_queue_oldest_wait_seconds{queue="we\\"ird\\\\q"} NaN',
    ]
    assert samples["voxelhub_queue_running"][0].endswith(" 2")
    assert samples["voxelhub_workers"][0] == 'voxelhub_workers{queue="cpu"} 3'
    assert samples["voxelhub_workers_desired"] == ['voxelhub_workers_desired{queue="cpu"} 4']


@pytest.fixture
def make_job(database_url: str) -> Callable[..., uuid.UUID]:
    """Job rows with everything their foreign keys need."""
    with session_scope(database_url) as db:
        algorithm = Algorithm(slug=f"a-{uuid.uuid4().hex[:8]}", title="A")
        archive = Archive(name=f"Archive {uuid.uuid4().hex[:8]}")
        db.add_all([algorithm, archive])
        db.flush()
        version = AlgorithmVersion(algorithm_id=algorithm.id, version=1, kind="builtin")
        case = Case(archive_id=archive.id, title="c1")
        db.add_all([version, case])
        db.flush()
        keys = {"algorithm_id": algorithm.id, "version_id": version.id,
                "archive_id": archive.id, "case_id": case.id}  # fmt: skip

    def make(**fields: Any) -> uuid.UUID:
        with session_scope(database_url) as db:
            job = Job(**keys, **fields)
            db.add(job)
            db.flush()
            return job.id

    return make


def test_queue_states_reads_depth_wait_durations_and_workers(
    database_url: str, make_job: Callable[..., uuid.UUID]
) -> None:
    now = utcnow()

    def ago(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    make_job(queue="cpu", state="pending", created_at=ago(20))
    make_job(queue="cpu", state="queued", created_at=ago(50), queued_at=ago(40))
    make_job(queue="cpu", state="running", created_at=ago(90), started_at=ago(30), worker="h:1")
    ended = ((100, 90, "succeeded"), (60, 55, "failed"),
             (1300, 1200, "succeeded"), (80, 70, "cancelled"))  # fmt: skip
    for started, finished, job_state in ended:
        make_job(queue="gpu", state=job_state, created_at=ago(started + 1),
                 started_at=ago(started), finished_at=ago(finished))  # fmt: skip
    with session_scope(database_url) as db:
        db.add_all([
            WorkerHeartbeat(hostname="h:1", queues="cpu,gpu", pid=1, seen_at=ago(1)),
            WorkerHeartbeat(hostname="h:2", queues="cpu", pid=2, seen_at=ago(60)),
            WorkerHeartbeat(hostname="h:3", queues="gpu", pid=3, seen_at=ago(2)),
        ])  # fmt: skip
    with session_scope(database_url) as db:
        states = metrics.queue_states(db, now=now)
    assert set(states) == {"cpu", "gpu", "realtime"}
    cpu, gpu = states["cpu"], states["gpu"]
    assert (cpu.depth, cpu.running, cpu.current_workers) == (2, 1, 1)
    assert cpu.oldest_wait_s == pytest.approx(40, abs=0.01)
    assert (gpu.depth, gpu.running, gpu.oldest_wait_s, gpu.current_workers) == (0, 0, 0.0, 2)
    assert sorted(gpu.recent_durations_s) == pytest.approx([5.0, 10.0])
    assert states["realtime"] == QueueState("realtime", 0, 0, 0.0, (), 0)


def test_metrics_endpoint_answers_only_loopback_callers(
    runtime: Runtime, make_job: Callable[..., uuid.UUID]
) -> None:
    make_job(queue="gpu", state="queued", queued_at=utcnow())
    app = build_app(runtime)
    app.include_router(metrics.router)
    for host in ("127.0.0.1", "127.3.4.5", "::1"):
        with TestClient(app, client=(host, 50000)) as client:
            response = client.get("/metrics")
        assert response.status_code == 200, (host, response.text)
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = parse_exposition(response.text)
        assert 'voxelhub_queue_depth{queue="gpu"} 1' in samples["voxelhub_queue_depth"]
        assert 'voxelhub_workers_desired{queue="gpu"} 1' in samples["voxelhub_workers_desired"]
    for host, headers in (("10.1.2.3", {}), ("192.168.0.9", {}),
                          ("127.0.0.1", {"X-Forwarded-For": "203.0.113.9"})):  # fmt: skip
        with TestClient(app, client=(host, 50000)) as client:
            response = client.get("/metrics", headers=headers)
        assert response.status_code == 403, host
        assert "only to this machine" in response.json()["message"]


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(0.2)


@pytest.mark.slow
def test_local_scaler_starts_a_worker_for_a_queued_job_and_stops_it_when_idle(
    settings: Settings,
    database_url: str,
    worker_env: dict[str, str],
    make_job: Callable[..., uuid.UUID],
) -> None:
    job_id = make_job(queue="cpu", state="queued", queued_at=utcnow())
    # The job has no broker message, so it waits on: a long target wait keeps its age from
    # asking for a second worker however long the first one takes to start on a busy host.
    policy = Policy(max_workers=2, target_wait_s=3600.0, cooldown_s=0.0, scale_to_zero_after_s=0.0)
    scaler = LocalScaler(settings, policy=policy, queues=("cpu",), interval_s=0.2,
                         database_url=database_url, env=worker_env)  # fmt: skip

    def heartbeat_pids() -> list[int]:
        with session_scope(database_url) as db:
            return list(db.scalars(select(WorkerHeartbeat.pid)))

    try:
        (first,) = scaler.run_once()
        assert (first.decision.desired, len(first.started)) == (1, 1), first
        (pid,) = first.started
        _wait_for(lambda: pid in heartbeat_pids(), "the worker's first heartbeat")
        (steady,) = scaler.run_once()
        assert (steady.state.current_workers, steady.started, steady.stopped) == (1, (), ())
        # While it runs a job, the worker is kept however idle the queue is otherwise.
        hostname = f"{socket.gethostname()}:{pid}"
        with session_scope(database_url) as db:
            db.execute(update(Job).where(Job.id == job_id).values(
                state="running", started_at=utcnow(), worker=hostname))  # fmt: skip
        (busy,) = scaler.run_once()
        assert (busy.decision.desired, busy.stopped) == (1, ())
        with session_scope(database_url) as db:
            db.execute(update(Job).where(Job.id == job_id).values(
                state="succeeded", finished_at=utcnow()))  # fmt: skip
        (idle,) = scaler.run_once()
        assert (idle.decision.desired, idle.stopped) == (0, (pid,)), idle
        assert scaler.workers() == {"cpu": []}
        _wait_for(lambda: pid not in heartbeat_pids(), "the worker's warm shutdown", 30)
    finally:
        scaler.close(timeout_s=20)
