"""Warm bundles: a long-lived sandboxed process per MONAI bundle, its model kept loaded.

A bundle's configs can run arbitrary code, so its model is never loaded into the API or
worker process. Instead `WarmBundle` starts the platform's segmentation entry point with
`--serve` inside the same bubblewrap sandbox as a job (`executors._bwrap`), loads the model
once and then hands it one request after another through an exchange folder (bound at
`/input` read-only and `/output`) and one JSON line each way on stdin/stdout. `WarmBundles`
keeps at most a few of them, closing the least recently used; a process that dies or runs
past its time limit is killed and started again on the next request.

Memory is bounded with RLIMIT_AS through the launcher of `executors._launch` (no cgroup:
the process outlives any one request).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from voxelhub.algorithms.contract import (
    ExecutionRequest,
    ExecutionResult,
    Limits,
    Outcome,
    prepare_workdir,
)
from voxelhub.algorithms.executors._bwrap import PACKAGE_MOUNT, bwrap_argv
from voxelhub.algorithms.executors._entry import SEGMENT_ENTRY

logger = logging.getLogger(__name__)

_HOST_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


class WarmError(RuntimeError):
    """The warm bundle could not start or answer; the message says why."""


class WarmTimeout(WarmError):
    """A request ran past the time limit (the process was killed)."""


class WarmCancelled(WarmError):
    """A request was cancelled (the process was killed)."""


class WarmBundle:
    """One sandboxed process with one bundle's model loaded."""

    def __init__(self, package_dir: Path, *, limits: Limits, bwrap: str = "bwrap") -> None:
        self.package_dir = package_dir
        self.limits = limits
        self.exchange = Path(tempfile.mkdtemp(prefix="vxh-warm-"))
        prepare_workdir(self.exchange)
        # A copy of its own: the job that started it removes its unpacked package.
        bundle = shutil.copytree(package_dir, self.exchange / "bundle")
        self._lock = threading.Lock()
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr = (self.exchange / "stderr.log").open("w+b")
        request = ExecutionRequest(
            job_id=f"warm-{uuid.uuid4().hex[:8]}",
            workdir=self.exchange,
            package_dir=bundle,
            limits=limits,
            command=[sys.executable, "-m", SEGMENT_ENTRY, "--serve", PACKAGE_MOUNT],
        )
        binary = shutil.which(bwrap)
        if binary is None:
            raise WarmError(f"bubblewrap is not installed ({bwrap} not found)")
        argv = bwrap_argv(request, request.command, bwrap=binary)
        # bwrap's --die-with-parent follows the thread that started it, not the process: a
        # request's thread (idle pool threads end) or a start ahead ends long before the
        # process should, so one long-lived thread starts them all.
        self.proc = (
            _spawner()
            .submit(
                subprocess.Popen,
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                env=_HOST_ENV,
                preexec_fn=_rlimit(limits.memory_mb),
            )
            .result()
        )
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()
        ready = self._answer(limits.time_limit_s)
        if not ready.get("ready"):
            self.close()
            raise WarmError(str(ready.get("error") or "the bundle did not start"))
        self.name = str(ready.get("name", ""))

    def _read(self, stream: IO[bytes] | None) -> None:
        if stream is None:
            return
        for raw in stream:
            self._lines.put(raw.decode(errors="replace"))
        self._lines.put(None)

    def _answer(self, timeout_s: float, cancelled: threading.Event | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise WarmTimeout(f"the bundle did not answer within {timeout_s:g} s")
            if cancelled is not None and cancelled.is_set():
                self.close()
                raise WarmCancelled("cancelled")
            try:
                line = self._lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                raise WarmError(f"the bundle's process ended: {self._last_stderr()}")
            try:
                answer = json.loads(line)
            except json.JSONDecodeError:
                continue  # something the bundle printed
            if isinstance(answer, dict):
                return answer

    def _last_stderr(self) -> str:
        self._stderr.seek(0)
        lines = [ln for ln in self._stderr.read().decode(errors="replace").splitlines() if ln]
        return lines[-1][:1000] if lines else "no message"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def segment(
        self, input_dir: Path, output_dir: Path, *, cancelled: threading.Event | None = None
    ) -> dict[str, Any]:
        """Segment the inputs under `input_dir` (the contract's layout) into `output_dir`."""
        name = uuid.uuid4().hex
        with self._lock:
            if not self.alive:
                raise WarmError(f"the bundle's process ended: {self._last_stderr()}")
            staged_in, staged_out = self.exchange / "input" / name, self.exchange / "output" / name
            shutil.copytree(input_dir, staged_in)
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write((json.dumps({"request": name}) + "\n").encode())
                self.proc.stdin.flush()
                answer = self._answer(self.limits.time_limit_s, cancelled)
                if not answer.get("ok"):
                    raise WarmError(str(answer.get("error") or "the bundle failed"))
                output_dir.mkdir(parents=True, exist_ok=True)
                for item in staged_out.iterdir():
                    shutil.move(item, output_dir / item.name)
                return dict(answer.get("timings") or {})
            finally:
                shutil.rmtree(staged_in, ignore_errors=True)
                shutil.rmtree(staged_out, ignore_errors=True)

    def memory_mb(self) -> float:
        """Resident memory of the sandboxed process and its children, in MB (0 when ended)."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0
        for process in processes:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total / 2**20

    def close_when_idle(self) -> None:
        """Close once the request in progress (if any) is answered, without waiting for it."""

        def close() -> None:
            with self._lock:
                self.close()

        threading.Thread(target=close, name="warm-close", daemon=True).start()

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._stderr.close()
        shutil.rmtree(self.exchange, ignore_errors=True)


_spawn: ThreadPoolExecutor | None = None
_spawn_lock = threading.Lock()


def _spawner() -> ThreadPoolExecutor:
    """The one thread that starts warm processes; it lives as long as this process."""
    global _spawn  # noqa: PLW0603 - one per process
    with _spawn_lock:
        if _spawn is None:
            _spawn = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warm-spawn")
        return _spawn


def _rlimit(memory_mb: int) -> Any:
    def apply() -> None:
        import resource

        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


class WarmBundles:
    """At most `capacity` warm bundles by key (e.g. the package's object key), LRU."""

    def __init__(self, capacity: int = 2) -> None:
        self.capacity = capacity
        self._bundles: OrderedDict[str, WarmBundle] = OrderedDict()
        self._lock = threading.Lock()
        self._starting: set[str] = set()
        self._starting_lock = threading.Lock()
        self.starts = 0

    def get(self, key: str, package_dir: Any, *, limits: Limits) -> WarmBundle:
        """The warm bundle under `key`; `package_dir()` gives its folder when it must start."""
        with self._lock:
            warm = self._bundles.get(key)
            if warm is not None and warm.alive:
                self._bundles.move_to_end(key)
                return warm
            if warm is not None:
                warm.close()
                del self._bundles[key]
            warm = WarmBundle(package_dir(), limits=limits)
            self.starts += 1
            self._bundles[key] = warm
            while len(self._bundles) > self.capacity:
                _, oldest = self._bundles.popitem(last=False)
                oldest.close()
            return warm

    def prewarm(self, key: str, package_dir: Any, *, limits: Limits) -> bool:
        """Start the bundle under `key` in the background, unless it is warm or starting.

        For work that is on its way (a series a trigger will hand to this bundle is still
        arriving): the start overlaps the arrival, and the job's `get` waits for it to
        finish instead of starting a second process. Never blocks; False when nothing new
        was started.
        """
        if self.capacity < 1:
            return False
        with self._starting_lock:
            warm = self._bundles.get(key)
            if key in self._starting or (warm is not None and warm.alive):
                return False
            self._starting.add(key)

        def start() -> None:
            try:
                self.get(key, package_dir, limits=limits)
            except Exception:
                logger.warning("the bundle %s could not be started ahead", key, exc_info=True)
            finally:
                with self._starting_lock:
                    self._starting.discard(key)

        threading.Thread(target=start, name="warm-prewarm", daemon=True).start()
        return True

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._bundles)

    def close(self) -> None:
        with self._lock:
            for warm in self._bundles.values():
                warm.close()
            self._bundles.clear()


_warm: WarmBundles | None = None


def warm_bundles() -> WarmBundles:
    """The process's warm bundles (capacity from VOXELHUB_WARM_BUNDLES, default 2)."""
    global _warm  # noqa: PLW0603 - one set of warm processes per process
    if _warm is None:
        _warm = WarmBundles(int(os.environ.get("VOXELHUB_WARM_BUNDLES", "2")))
    return _warm


class WarmBundleExecutor:
    """Runs a bundle job on a warm bundle (keyed by `key`, e.g. the package's object key)."""

    name = "warm-bundle"

    def __init__(self, key: str, bundles: WarmBundles | None = None) -> None:
        self.key = key
        self.bundles = bundles or warm_bundles()

    def available(self) -> str | None:
        return None if shutil.which("bwrap") else "bubblewrap is not installed"

    def run(
        self, request: ExecutionRequest, *, cancelled: threading.Event | None = None
    ) -> ExecutionResult:
        package_dir = request.package_dir
        if package_dir is None:
            return ExecutionResult(outcome=Outcome.error, message="no package to run")
        started = time.monotonic()

        def result(outcome: Outcome, message: str = "", **extra: Any) -> ExecutionResult:
            return ExecutionResult(
                outcome=outcome, message=message, duration_s=time.monotonic() - started, **extra
            )

        try:
            warm = self.bundles.get(self.key, lambda: package_dir, limits=request.limits)
            timings = warm.segment(request.input_dir, request.output_dir, cancelled=cancelled)
        except WarmCancelled:
            return result(Outcome.cancelled, "cancelled")
        except WarmTimeout as err:
            return result(Outcome.timed_out, str(err))
        except WarmError as err:
            return result(Outcome.failed, str(err), exit_code=2, stderr_tail=str(err))
        line = json.dumps({"timings": timings, "warm": True})
        return result(Outcome.succeeded, exit_code=0, stdout_tail=line + "\n")


def warm_executor_for(key: str | None, request: ExecutionRequest) -> WarmBundleExecutor | None:
    """A warm executor when the request is a bundle job on images and warm bundles are on."""
    from voxelhub.algorithms.executors._entry import takes_images

    package = request.package_dir
    if key is None or package is None or warm_bundles().capacity < 1 or request.command:
        return None
    if not ((package / "configs").is_dir() and (package / "models").is_dir()):
        return None
    return WarmBundleExecutor(key) if takes_images(request) else None
