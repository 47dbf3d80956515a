"""Supervise one child process: bounded log tails, a deadline, cancellation, its peak memory.

Shared by the sandbox and container executors, which differ only in the command they start
and in how they stop it.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import IO

from voxelhub.algorithms.contract import ExecutionResult, Limits, Outcome, last_line
from voxelhub.algorithms.executors._launch import launcher_argv, read_report
from voxelhub.algorithms.executors._memory import MemoryLimit

TAIL_BYTES = 64 * 1024
_POLL_S = 0.05
_READER_JOIN_S = 5.0


class StopReason(StrEnum):
    timed_out = "timed_out"
    cancelled = "cancelled"


@dataclass(frozen=True)
class Finished:
    """How a supervised process ended."""

    returncode: int  # negative: killed by that signal (subprocess's convention)
    stopped: StopReason | None  # set when we stopped it, whatever its exit status says
    stdout_tail: str
    stderr_tail: str
    duration_s: float
    max_rss_mb: float | None


class _Tail:
    """The last `limit` bytes of a stream, read on a thread so the child never blocks on a pipe."""

    def __init__(self, stream: IO[bytes], limit: int = TAIL_BYTES) -> None:
        self._stream = stream
        self._limit = limit
        self._buffer = bytearray()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        fd = self._stream.fileno()
        while chunk := os.read(fd, 65536):
            self._buffer += chunk
            if len(self._buffer) > 2 * self._limit:
                del self._buffer[: -self._limit]

    def text(self) -> str:
        # A grandchild that escaped the kill may hold the pipe open; give up on it after a while.
        self._thread.join(_READER_JOIN_S)
        return bytes(self._buffer[-self._limit :]).decode("utf-8", errors="replace")


def run_name(job_id: str) -> str:
    """A unique name for one run of a job (cgroup, container): characters every tool accepts."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", job_id)[:64]
    return f"voxelhub-{safe}-{secrets.token_hex(4)}"


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's process group (it was started in a session of its own)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def supervise(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    time_limit_s: float,
    cancelled: threading.Event | None = None,
    stop: Callable[[subprocess.Popen[bytes]], None] = kill_group,
    memory: MemoryLimit | None = None,
    cwd: Path | None = None,
) -> Finished:
    """Run `argv` to completion, or `stop` it at the deadline or when `cancelled` is set.

    With `memory`, it runs through the launcher under that limit, and its peak RSS is measured.
    `cwd` is where it runs (else the worker's own folder).
    """
    report_r, report_w = os.pipe()
    if memory is not None:
        argv = launcher_argv(
            argv, report_fd=report_w, cgroup_procs=memory.cgroup_procs, rlimit_as=memory.rlimit_as
        )
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
            pass_fds=(report_w,) if memory is not None else (),
            cwd=cwd,
        )
    except OSError:
        os.close(report_r)
        raise
    finally:
        os.close(report_w)
    assert proc.stdout is not None and proc.stderr is not None  # PIPE was asked for
    stdout, stderr = _Tail(proc.stdout), _Tail(proc.stderr)
    stopped = _wait(proc, started + time_limit_s, cancelled, stop)
    kill_group(proc)  # whatever it left behind in its group, while its zombie holds the id
    proc.returncode = os.waitstatus_to_exitcode(os.waitpid(proc.pid, 0)[1])
    out, err = stdout.text(), stderr.text()
    proc.stdout.close()
    proc.stderr.close()
    return Finished(
        returncode=proc.returncode,
        stopped=stopped,
        stdout_tail=out,
        stderr_tail=err,
        duration_s=time.monotonic() - started,
        max_rss_mb=read_report(report_r),
    )


def _wait(
    proc: subprocess.Popen[bytes],
    deadline: float,
    cancelled: threading.Event | None,
    stop: Callable[[subprocess.Popen[bytes]], None],
) -> StopReason | None:
    """Wait for the child to exit, leaving it unreaped; why we stopped it, if we did."""
    stopped: StopReason | None = None
    while True:
        flags = os.WEXITED | os.WNOWAIT | (os.WNOHANG if stopped is None else 0)
        if os.waitid(os.P_PID, proc.pid, flags) is not None:
            return stopped
        if stopped is None and cancelled is not None and cancelled.is_set():
            stopped = StopReason.cancelled
        elif stopped is None and time.monotonic() >= deadline:
            stopped = StopReason.timed_out
        if stopped is not None:
            stop(proc)
        elif cancelled is not None:
            cancelled.wait(_POLL_S)
        else:
            time.sleep(_POLL_S)


def result_of(finished: Finished, limits: Limits, *, out_of_memory: bool) -> ExecutionResult:
    """The contract's result for a supervised run."""
    outcome, message = _outcome(finished, limits, out_of_memory=out_of_memory)
    return ExecutionResult(
        outcome=outcome,
        exit_code=finished.returncode,
        message=message,
        stdout_tail=finished.stdout_tail,
        stderr_tail=finished.stderr_tail,
        duration_s=finished.duration_s,
        max_rss_mb=finished.max_rss_mb,
    )


def _outcome(finished: Finished, limits: Limits, *, out_of_memory: bool) -> tuple[Outcome, str]:
    if finished.stopped is StopReason.cancelled:
        return Outcome.cancelled, "cancelled"
    if finished.stopped is StopReason.timed_out:
        return Outcome.timed_out, (
            f"timed out: still running after the time limit of {limits.time_limit_s:g} s"
        )
    if out_of_memory:
        return Outcome.out_of_memory, (
            f"out of memory: the algorithm needed more than its memory limit of "
            f"{limits.memory_mb} MB"
        )
    if finished.returncode == 0:
        return Outcome.succeeded, ""
    return Outcome.failed, last_line(finished.stderr_tail) or _exit_status(finished.returncode)


def _exit_status(returncode: int) -> str:
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"
