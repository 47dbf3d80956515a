"""Figures of the job benchmarks: percentiles, and where a py-spy profile of a worker goes."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

PY_SPY = str(Path(sys.executable).with_name("py-spy"))

# Each phase of a job in the worker's main thread, by the first of these frames found in a
# stack. The order matters: a finish inside `execute` is a finish, not "execute other".
JOB_PHASES: tuple[tuple[str, str], ...] = (
    ("claim with its limit checks (lock, UPDATE, commit)", "claim (voxelhub/jobs/engine.py"),
    ("limit reached (waiting_for_limits)", "waiting_for_limits (voxelhub/jobs/engine.py"),
    ("materialise (io.materialise)", "materialise (voxelhub/algorithms/io.py"),
    ("workdir (mkdtemp, prepare, rmtree)", "prepare_workdir ("),
    ("workdir (mkdtemp, prepare, rmtree)", "mkdtemp ("),
    ("workdir (mkdtemp, prepare, rmtree)", "rmtree ("),
    ("executor (thread start + join)", "BuiltinExecutor.run ("),
    ("collect (io.collect, in the finish transaction)", "collect (voxelhub/algorithms/io.py"),
    ("collect (io.collect, in the finish transaction)", "store (voxelhub/algorithms/runner.py"),
    ("finish (UPDATE … RETURNING)", "finish (voxelhub/jobs/engine.py"),
    ("record the end (session, commit)", "record (voxelhub/jobs/tasks.py"),
    ("on_finish (webhooks.notify: loads the job again)", "notify (voxelhub/algorithms/webhooks.py"),
    ("cancel watch (register, unregister)", "add (voxelhub/jobs/tasks.py"),
    ("cancel watch (register, unregister)", "remove (voxelhub/jobs/tasks.py"),
    (
        "handler other (load version + algorithm)",
        "run_algorithm_job (voxelhub/algorithms/runner.py",
    ),
)
# Outside a job: the Celery machinery around it and the consumer loop.
LOOP_PHASES: tuple[tuple[str, str], ...] = (
    ("celery task wrapper (trace, ack)", "trace_task ("),
    ("celery task wrapper (trace, ack)", "Request.execute_using_pool ("),
    (
        "broker: kombu SQLAlchemy transport (poll SELECT … FOR UPDATE, commit)",
        "kombu/transport/sqlalchemy",
    ),
    ("broker: kombu Redis transport", "kombu/transport/redis"),
    ("celery consumer (receive, build request)", "celery/worker/consumer"),
)
BROKER = "broker/consumer loop, other"
# The innermost frame while a worker waits for a message: kombu's polling sleep (the
# virtual transports) or the event loop's epoll (Redis). A process that was woken but
# waits for a CPU still shows this frame, so on a busy machine it is not all idle time.
WAITING = "waiting for a message (idle, or woken and waiting for a CPU)"
WAIT_FRAMES = ("Transport.drain_events (kombu/transport/virtual/base.py", "_epoll.poll (")
# The embedded transport waiting for a NOTIFY (or its fallback interval), anywhere below.
NOTIFY_WAIT = "Transport._wait (voxelhub/jobs/broker.py"
EXECUTE = "execute (voxelhub/jobs/tasks.py:"


def _execute_lines() -> tuple[int, ...]:
    """Lines of `tasks.execute` that open a session of their own."""
    import inspect

    from voxelhub.jobs import tasks

    lines, start = inspect.getsourcelines(tasks.execute)
    return tuple(start + i for i, line in enumerate(lines) if "session_scope(" in line)


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values_s: list[float]) -> dict[str, Any]:
    """p50/p95/p99/max/mean in milliseconds of a list of seconds."""
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else None,
        "mean_ms": sum(ms) / len(ms) if ms else None,
    }


class Profiler:
    """py-spy on some processes, idle samples included, raw stacks written to `folder`."""

    def __init__(
        self, pids: list[int], folder: Path, *, subprocesses: bool = False, rate: int = 100
    ) -> None:
        self.pids, self.folder, self.subprocesses, self.rate = pids, folder, subprocesses, rate
        self.procs: list[subprocess.Popen[bytes]] = []
        self.files: list[Path] = []

    def __enter__(self) -> Profiler:
        self.folder.mkdir(parents=True, exist_ok=True)
        for pid in self.pids:
            path = self.folder / f"worker-{pid}.raw"
            command = [
                PY_SPY, "record", "--pid", str(pid), "--rate", str(self.rate), "--idle",
                "--threads", "--format", "raw", "--output", str(path),
            ]  # fmt: skip
            if self.subprocesses:
                command.append("--subprocesses")
            log = (self.folder / f"py-spy-{pid}.log").open("wb")
            self.procs.append(subprocess.Popen(command, stdout=log, stderr=log))
            self.files.append(path)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


_THREAD = re.compile(r"^(?:process \d+:[^;]*;)?thread \((\d+)\)(?::\s*([^;]*))?;?")


def _phase(stack: str, transactions: tuple[int, ...]) -> str:
    for label, frame in JOB_PHASES:
        if frame in stack:
            return label
    if EXECUTE in stack:
        return _in_execute(stack.split(EXECUTE, 1)[1], transactions)
    if NOTIFY_WAIT in stack or stack.rsplit(";", 1)[-1].startswith(WAIT_FRAMES):
        return WAITING
    for label, frame in LOOP_PHASES:
        if frame in stack:
            return label
    return BROKER


def _in_execute(below: str, transactions: tuple[int, ...]) -> str:
    """Directly in `execute`: the commit of its one session (after a claim that was refused:
    `waiting_for_limits`); the claim and the record of the end have their own phases."""
    line_text, _, callees = below.partition(";")
    line = int(line_text.split(")", 1)[0] or 0)
    if callees.startswith("Session.get ("):
        return "load job (db.get)"
    if callees.startswith("_GeneratorContextManager.__exit__") and line in transactions:
        return "limit reached (its commit)"
    return "execute other"


def worker_profile(files: list[Path]) -> dict[str, Any]:
    """Shares of the worker main threads' samples by job phase, and what other threads did.

    With `--idle` every sample of a main thread is wall time, so a share times the run's
    wall time per job and worker is that phase's time per job. Processes of a prefork pool
    each have a main thread; all are summed.
    """
    main: Counter[str] = Counter()
    other: Counter[str] = Counter()
    transactions = _execute_lines()
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            match = _THREAD.match(stack)
            name = (match.group(2) or "").strip() if match else ""
            if name == "MainThread":
                main[_phase(stack, transactions)] += n
            else:
                kind = re.sub(r"^Thread-\d+ \((\w+)\)$", r"\1", name)
                kind = re.sub(r"-[0-9a-f-]{36}$", "", kind) or "unnamed"
                other[kind] += n
    total = sum(main.values())
    return {
        "main_thread_samples": total,
        "main_thread_share": {k: v / total for k, v in main.most_common()} if total else {},
        "other_thread_samples": dict(other.most_common(12)),
    }
