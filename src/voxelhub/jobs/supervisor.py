"""Keeps the worker processes of `voxelhub serve` running: restart with backoff, give up loudly.

A worker that exits while serve runs (a crash, the OOM killer, SIGKILL) is started again
after a delay that doubles with each quick failure (1 s, 2 s, 4 s … at most 30 s). A worker
that ran for a while before it died starts a fresh count. After `MAX_FAST_FAILURES` exits in
a row, each within `FAST_FAILURE_S` of its start, the slot is given up: restarting would only
repeat the same failure, so serve logs an error and `/healthz` reports the slot as failed.

The state is written to `<home>/run/workers.json` (atomically) so that every web process,
not only the one that supervises, can report it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MAX_FAST_FAILURES = 5
FAST_FAILURE_S = 10.0
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
POLL_S = 0.5
STATE_FILE = Path("run") / "workers.json"

Start = Callable[[], "subprocess.Popen[bytes]"]


@dataclass
class Slot:
    """One worker position: its current process and how it has fared."""

    index: int
    pid: int | None = None
    started_at: float = 0.0
    restarts: int = 0
    fast_failures: int = 0
    last_exit: str | None = None
    given_up: bool = False
    restart_at: float | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "pid": self.pid,
            "running": self.proc is not None and self.proc.poll() is None,
            "restarts": self.restarts,
            "fast_failures": self.fast_failures,
            "last_exit": self.last_exit,
            "given_up": self.given_up,
        }


def describe_exit(code: int) -> str:
    """`exit code 1` or `killed by SIGKILL` (Popen reports a signal as its negative)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def backoff_s(fast_failures: int) -> float:
    """The wait before the next start after `fast_failures` quick exits in a row."""
    if fast_failures <= 0:
        return BACKOFF_START_S
    return float(min(BACKOFF_START_S * 2 ** (fast_failures - 1), BACKOFF_MAX_S))


class Supervisor:
    """Starts `count` workers with `start` and keeps them running until `stop`."""

    def __init__(self, start: Start, count: int, *, home: Path) -> None:
        self._start = start
        self.slots = [Slot(index=i) for i in range(count)]
        self.state_path = home / STATE_FILE
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        with self._lock:
            for slot in self.slots:
                self._launch(slot)
            self._write()
        self._thread.start()

    def processes(self) -> list[subprocess.Popen[bytes]]:
        with self._lock:
            return [s.proc for s in self.slots if s.proc is not None]

    def _launch(self, slot: Slot) -> None:
        slot.proc = self._start()
        slot.pid, slot.started_at, slot.restart_at = slot.proc.pid, time.monotonic(), None

    def check(self) -> None:
        """One round: note exits, restart the slots whose backoff is over."""
        now = time.monotonic()
        changed = False
        with self._lock:
            if self._stopping.is_set():
                return
            for slot in self.slots:
                changed |= self._check_slot(slot, now)
            if changed:
                self._write()

    def _check_slot(self, slot: Slot, now: float) -> bool:
        if slot.given_up:
            return False
        if slot.restart_at is not None:
            if now < slot.restart_at:
                return False
            self._launch(slot)
            slot.restarts += 1
            logger.warning("worker %d restarted (pid %s)", slot.index, slot.pid)
            return True
        if slot.proc is None or slot.proc.poll() is None:
            return False
        ran_s = now - slot.started_at
        slot.last_exit = describe_exit(slot.proc.returncode)
        slot.fast_failures = slot.fast_failures + 1 if ran_s < FAST_FAILURE_S else 1
        if slot.fast_failures >= MAX_FAST_FAILURES:
            slot.given_up, slot.pid = True, None
            logger.error(
                "worker %d failed %d times in a row within %.0f s of starting (last: %s); "
                "not restarting it again: see the worker's log above, fix the cause and "
                "restart serve",
                slot.index,
                slot.fast_failures,
                FAST_FAILURE_S,
                slot.last_exit,
            )
            return True
        wait = backoff_s(slot.fast_failures)
        slot.restart_at = now + wait
        logger.warning(
            "worker %d (pid %s) stopped after %.1f s (%s); restarting it in %.0f s",
            slot.index,
            slot.pid,
            ran_s,
            slot.last_exit,
            wait,
        )
        return True

    def _run(self) -> None:
        while not self._stopping.wait(POLL_S):
            try:
                self.check()
            except Exception:  # the supervisor must outlive any one failed restart
                logger.error("worker supervision failed once; retrying", exc_info=True)

    def stop(self) -> list[subprocess.Popen[bytes]]:
        """Stop supervising (no more restarts); returns the processes still to stop."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        with self._lock:
            procs = [s.proc for s in self.slots if s.proc is not None]
        self.state_path.unlink(missing_ok=True)
        return procs

    def _write(self) -> None:
        state = {"pid": os.getpid(), "workers": [s.public() for s in self.slots]}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.state_path.with_suffix(".tmp")
        partial.write_text(json.dumps(state))
        partial.replace(self.state_path)


def read_state(home: Path) -> dict[str, Any] | None:
    """What the supervisor of this home last wrote, or None when none runs."""
    path = home / STATE_FILE
    try:
        state: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    try:
        os.kill(int(state["pid"]), 0)
    except (OSError, KeyError, ValueError, TypeError):
        return None  # left by a serve that was killed; nobody supervises now
    return state
