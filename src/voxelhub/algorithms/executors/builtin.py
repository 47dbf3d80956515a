"""Run the platform's own algorithms in the worker process.

A built-in is a function `fn(input_dir, output_dir, model_dir)` registered under a name; a job
names it in `ExecutionRequest.entrypoint`. It gets the host paths of the job's working
directory and must write only under `output_dir` (the worker never changes directory, so
relative paths would land in the worker's own directory).

Built-ins are trusted code: they run on a thread in the worker, share its memory and see no
memory limit. The time limit and cancellation are enforced by no longer waiting: a thread
cannot be killed, so a hung built-in keeps running in the background (and holds whatever it
holds) while the job is already reported `timed_out` or `cancelled`. Write built-ins that
finish.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from voxelhub.algorithms.contract import ExecutionRequest, ExecutionResult, Outcome
from voxelhub.algorithms.executors._process import TAIL_BYTES

logger = logging.getLogger(__name__)

BuiltinFn = Callable[[Path, Path, Path], None]

_REGISTRY: dict[str, BuiltinFn] = {}
_POLL_S = 0.05


def register_builtin(name: str, fn: BuiltinFn) -> None:
    """Make `fn` runnable as the built-in algorithm `name`."""
    if not name:
        raise ValueError("a built-in algorithm needs a non-empty name")
    registered = _REGISTRY.get(name)
    if registered is not None and registered is not fn:
        raise ValueError(f"built-in algorithm {name!r} is already registered ({registered!r})")
    _REGISTRY[name] = fn


def builtin_names() -> list[str]:
    """The registered built-in algorithms, sorted."""
    return sorted(_REGISTRY)


@dataclass
class _Outcome:
    """What the built-in's thread left behind."""

    error: BaseException | None = None
    traceback: str = ""
    finished: threading.Event = field(default_factory=threading.Event)


class _Runners:
    """The threads built-ins run on, kept for the next job: starting and joining a thread
    per job cost more than a trivial built-in. A thread whose built-in hangs stays with it;
    a job that finds no idle thread starts a new one."""

    def __init__(self) -> None:
        self._tasks: queue.SimpleQueue[tuple[BuiltinFn, ExecutionRequest, _Outcome]] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, fn: BuiltinFn, request: ExecutionRequest, done: _Outcome) -> None:
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1
        if start:
            # Daemon: a hung built-in must not keep the worker from exiting.
            threading.Thread(target=self._serve, name="builtin", daemon=True).start()
        self._tasks.put((fn, request, done))

    def _serve(self) -> None:
        while True:
            fn, request, done = self._tasks.get()
            threading.current_thread().name = f"builtin-{request.entrypoint}-{request.job_id}"
            _call(fn, request, done)
            threading.current_thread().name = "builtin"
            with self._lock:  # idle before the job hears it ended, so the next one finds it
                self._idle += 1
            done.finished.set()


_runners = _Runners()


class BuiltinExecutor:
    """Runs registered built-in algorithms on a thread of the worker."""

    name = "builtin"

    def available(self) -> str | None:
        return None

    def run(
        self, request: ExecutionRequest, *, cancelled: threading.Event | None = None
    ) -> ExecutionResult:
        fn = _REGISTRY.get(request.entrypoint or "")
        if fn is None:
            known = ", ".join(builtin_names()) or "none"
            return ExecutionResult(
                outcome=Outcome.error,
                message=f"no built-in algorithm named {request.entrypoint!r} (registered: {known})",
            )
        started = time.monotonic()
        done = _Outcome()
        _runners.submit(fn, request, done)
        stopped = _wait(done.finished, started + request.limits.time_limit_s, cancelled)
        duration = time.monotonic() - started
        if stopped is not None:
            logger.warning("built-in %s left running: %s", request.entrypoint, stopped.value)
            return ExecutionResult(
                outcome=stopped, message=_stop_message(stopped, request), duration_s=duration
            )
        return _result(done, duration)


def _call(fn: BuiltinFn, request: ExecutionRequest, done: _Outcome) -> None:
    try:
        fn(request.input_dir, request.output_dir, request.model_dir)
    except BaseException as err:  # every failure of the algorithm is reported
        done.error = err
        done.traceback = traceback.format_exc()


def _wait(
    finished: threading.Event, deadline: float, cancelled: threading.Event | None
) -> Outcome | None:
    while True:
        if finished.wait(min(_POLL_S, max(0.0, deadline - time.monotonic()))):
            return None
        if cancelled is not None and cancelled.is_set():
            return Outcome.cancelled
        if time.monotonic() >= deadline:
            return Outcome.timed_out


def _stop_message(stopped: Outcome, request: ExecutionRequest) -> str:
    if stopped is Outcome.cancelled:
        return "cancelled"
    return f"timed out: still running after the time limit of {request.limits.time_limit_s:g} s"


def _result(done: _Outcome, duration: float) -> ExecutionResult:
    if done.error is None:
        return ExecutionResult(outcome=Outcome.succeeded, duration_s=duration)
    outcome = Outcome.out_of_memory if isinstance(done.error, MemoryError) else Outcome.failed
    message = str(done.error) or type(done.error).__name__
    return ExecutionResult(
        outcome=outcome,
        message=message,
        stderr_tail=done.traceback[-TAIL_BYTES:],
        duration_s=duration,
    )
