"""Worker supervision: real child processes that exit, restarted with backoff, given up on."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from voxelhub.jobs import supervisor
from voxelhub.jobs.supervisor import Supervisor, backoff_s, describe_exit, read_state


def _child(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code])


def _until(check: object, supervised: Supervisor, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        supervised.check()
        if check():  # type: ignore[operator]
            return
        time.sleep(0.02)
    pytest.fail(f"not reached in {timeout}s: {supervised.slots}")


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "BACKOFF_START_S", 0.05)
    monkeypatch.setattr(supervisor, "BACKOFF_MAX_S", 0.2)


@pytest.mark.parametrize(
    ("failures", "expected"), [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (5, 16.0), (9, 30.0)]
)
def test_backoff_doubles_up_to_its_maximum(failures: int, expected: float) -> None:
    assert backoff_s(failures) == expected


@pytest.mark.parametrize(
    ("code", "expected"), [(0, "exit code 0"), (3, "exit code 3"), (-9, "killed by SIGKILL")]
)
def test_exits_are_described(code: int, expected: str) -> None:
    assert describe_exit(code) == expected


def test_a_dead_worker_is_restarted_and_reported(tmp_path: Path, quick_backoff: None) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    # Dies at once the first time, then stays up: like a worker killed once.
    code = (
        "import os, sys, time, pathlib\n"
        f"d = pathlib.Path({str(runs)!r})\n"
        "(d / str(os.getpid())).touch()\n"
        "sys.exit(7) if len(list(d.iterdir())) == 1 else time.sleep(60)\n"
    )
    supervised = Supervisor(lambda: _child(code), 1, home=tmp_path)
    supervised.start()
    try:
        first = supervised.slots[0].pid
        _until(lambda: supervised.slots[0].restarts == 1, supervised)
        slot = supervised.slots[0]
        assert slot.pid != first and slot.last_exit == "exit code 7" and not slot.given_up
        state = read_state(tmp_path)
        assert state is not None
        assert state["workers"][0]["restarts"] == 1
        assert state["workers"][0]["last_exit"] == "exit code 7"
    finally:
        for proc in supervised.stop():
            proc.kill()
            proc.wait()
    assert read_state(tmp_path) is None, "a stopped supervisor leaves no state behind"


def test_repeated_fast_failures_give_up_loudly(
    tmp_path: Path, quick_backoff: None, caplog: pytest.LogCaptureFixture
) -> None:
    starts: list[int] = []

    def start() -> subprocess.Popen[bytes]:
        proc = _child("import sys; sys.exit(2)")
        starts.append(proc.pid)
        return proc

    supervised = Supervisor(start, 1, home=tmp_path)
    supervised.start()
    try:
        _until(lambda: supervised.slots[0].given_up, supervised)
        assert len(starts) == supervisor.MAX_FAST_FAILURES
        for _ in range(10):  # given up: no more starts
            supervised.check()
        assert len(starts) == supervisor.MAX_FAST_FAILURES
        assert "not restarting it again" in caplog.text
        state = read_state(tmp_path)
        assert state is not None and state["workers"][0]["given_up"] is True
    finally:
        supervised.stop()
