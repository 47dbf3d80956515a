"""Where one job's time goes on a worker: `tasks.execute` run in this process, each step timed.

The jobs are created in the database as the API creates them, but marked queued without a
broker message, so no worker takes them; then the same `tasks.execute` a worker runs is
called here, with the steps it calls wrapped by timers. Nothing in voxelhub changes: the
wrappers are set on the modules' attributes for the duration and put back afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from _jobs_stats import spread
from sqlalchemy import select

from voxelhub.algorithms import io, runner, service
from voxelhub.algorithms.catalog import register_builtins
from voxelhub.algorithms.schemas import InputRef
from voxelhub.algorithms.webhooks import notify
from voxelhub.core.db import session_scope
from voxelhub.jobs import engine, tasks
from voxelhub.jobs.models import Job

TOTAL = "total (tasks.execute)"
WATCHER = "cancel watcher: commit of its poll (its own thread, not in total)"


class StepTimer:
    """Wall seconds of each call of each wrapped step."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.samples[label].append(time.perf_counter() - started)

        return timed

    def scope(self, label: str, original: Callable[[str], Any]) -> Callable[[str], Any]:
        """A session_scope whose commit, close and after-commit callbacks are timed."""

        @contextlib.contextmanager
        def timed_scope(url: str) -> Iterator[Any]:
            manager = original(url)
            db = manager.__enter__()
            try:
                yield db
            except BaseException:
                if not manager.__exit__(*sys.exc_info()):
                    raise
                return
            started = time.perf_counter()
            manager.__exit__(None, None, None)
            # The cancel watcher polls from its own thread with the same session_scope.
            here = label if threading.current_thread() is threading.main_thread() else WATCHER
            self.samples[here].append(time.perf_counter() - started)

        return timed_scope


@contextlib.contextmanager
def timed_steps(timer: StepTimer) -> Iterator[None]:
    """Wrap the steps of a job run with timers, and put the originals back afterwards."""
    patches: list[tuple[Any, str, str]] = [
        (engine, "claim", "claim with its limit checks (lock, UPDATE, commit)"),
        (engine, "waiting_for_limits", "limit reached: waiting_for_limits"),
        (engine, "finish", "finish (UPDATE … RETURNING)"),
        (io, "materialise", "materialise"),
        (runner, "_request", "build request"),
        (io, "collect", "collect (io.collect, in the finish transaction)"),
        (tasks, "record", "record the end: outputs + finish in one transaction, commit"),
        (runner, "prepare_workdir", "workdir: prepare"),
        (tempfile, "mkdtemp", "workdir: mkdtemp"),
        (shutil, "rmtree", "workdir: rmtree"),
    ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    original_executor = runner.executor_for

    def executor_for(kind: str) -> Any:
        executor = original_executor(kind)
        run = timer.wrap("executor run (thread start, algorithm, join)", executor.run)
        setattr(executor, "run", run)  # noqa: B010 - on this instance only
        return executor

    try:
        for module, name, label in patches:
            setattr(module, name, timer.wrap(label, getattr(module, name)))
        setattr(runner, "executor_for", executor_for)  # noqa: B010
        scope = timer.scope("commit of the record transaction", session_scope)
        setattr(tasks, "session_scope", scope)  # noqa: B010
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)
        setattr(runner, "executor_for", original_executor)  # noqa: B010
        setattr(tasks, "session_scope", session_scope)  # noqa: B010


def _queue_only(database_url: str) -> engine.Sender:
    """A sender that marks the job queued and sends nothing: no worker will take it."""

    def send(job_id: uuid.UUID, queue: str, priority: int) -> None:
        with session_scope(database_url) as db:
            engine.mark_queued(db, job_id)

    return send


def breakdown(
    platform: Any,
    *,
    slug: str,
    cases: list[uuid.UUID],
    inputs: Callable[[int], dict[str, InputRef]],
    archive_id: uuid.UUID | None = None,
) -> dict[str, Any]:
    """Run one job of `slug` per case here, with every step timed; figures per step.
    The cases are in `archive_id`, by default the platform's bench archive."""
    runtime, url = platform.rt, platform.database_url
    principal = platform.principal()
    ids = []
    for index, case_id in enumerate(cases):
        with session_scope(url) as db:
            algorithm = service.get_algorithm(db, slug)
            job = service.start_job(
                db,
                principal,
                algorithm,
                archive_id=archive_id or uuid.UUID(platform.archive_id),
                case_id=case_id,
                inputs=inputs(index),
                send=_queue_only(url),
            )
            ids.append(job.id)
    register_builtins()
    timer = StepTimer()
    context = tasks.WorkerContext(
        runtime,
        f"bench-inprocess:{os.getpid()}",
        timer.wrap("handler (run_algorithm_job)", runner.run_algorithm_job),
        max_jobs_per_user=1_000_000,
        on_finish=timer.wrap("on_finish (webhooks.notify)", notify),
    )
    with timed_steps(timer):
        for job_id in ids:
            started = time.perf_counter()
            tasks.execute(context, job_id)
            timer.samples[TOTAL].append(time.perf_counter() - started)
    with session_scope(url) as db:
        states = list(db.scalars(select(Job.state).where(Job.id.in_(ids))))
    steps = {label: spread(values) for label, values in timer.samples.items()}
    samples = timer.samples
    steps["execute other (cancel watch)"] = _rest(
        samples,
        TOTAL,
        ("claim", "limit reached", "record", "handler", "on_finish", "workdir: rmtree"),
    )
    steps["handler other (load version, its commit)"] = _rest(
        samples,
        "handler (run_algorithm_job)",
        ("materialise", "build request", "executor", "workdir: mkdtemp", "workdir: prepare"),
    )
    return {"jobs": len(ids), "succeeded": states.count("succeeded"), "steps": steps}


def _rest(samples: dict[str, list[float]], whole: str, parts: tuple[str, ...]) -> dict[str, Any]:
    """The mean time of `whole` not spent in the steps named by `parts` (prefixes)."""
    calls = len(samples.get(whole, []))
    inside = sum(sum(v) for label, v in samples.items() if label.startswith(parts))
    rest = sum(samples.get(whole, [])) - inside
    return {"n": calls, "mean_ms": 1000 * rest / calls if calls else None}
