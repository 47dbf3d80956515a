"""Run container images with podman, under the container contract.

The image sees `/input` (read-only), `/output` and `/opt/ml/model` (read-only); its root file
system is read-only with a private `/tmp`; no network unless the limits allow it; no
capabilities; the memory, CPU and process limits are the container's cgroup's. It runs as the
worker's user, so what it writes to `/output` is the worker's to read.

A run ends `timed_out` or `cancelled` when we kill it (`podman kill`), `out_of_memory` when the
kernel killed it at the memory limit. podman's `State.OOMKilled` is read, but conmon does not
always record it (it did not with runc on cgroup v1), so a container killed by SIGKILL (exit
137) that we did not kill counts as out of memory too. Peak memory is not measured
(`max_rss_mb` is None): the container is conmon's child, not ours.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

from voxelhub.algorithms.contract import ExecutionRequest, ExecutionResult, Outcome, last_line
from voxelhub.algorithms.executors._podman import global_options, has_gpu_cdi, run_options
from voxelhub.algorithms.executors._process import kill_group, result_of, run_name, supervise
from voxelhub.algorithms.executors.errors import ImageError

logger = logging.getLogger(__name__)

_PODMAN_TIMEOUT_S = 60
_SIGKILL_STATUS = 128 + 9
_PODMAN_FAILED = frozenset({125, 126, 127})  # podman or the runtime, not the image's command


class ContainerExecutor:
    """Runs container images with podman."""

    name = "container"

    def __init__(
        self, *, podman: str = "podman", runtime: str | None = None, pids_limit: int = 1024
    ) -> None:
        self.podman = podman
        self.runtime = runtime
        self.pids_limit = pids_limit

    def available(self) -> str | None:
        if shutil.which(self.podman) is None:
            return f"podman is not installed ({self.podman} not found): apt-get install podman"
        return None

    def run(
        self, request: ExecutionRequest, *, cancelled: threading.Event | None = None
    ) -> ExecutionResult:
        image = request.image
        if image is None:
            message = "the container executor needs request.image, the image to run"
            return ExecutionResult(outcome=Outcome.error, message=message)
        problem = self.available() or _gpu_problem(request.limits.gpus)
        if problem:
            return ExecutionResult(outcome=Outcome.error, message=problem)
        name = run_name(request.job_id)
        argv = [
            *self._podman(),
            "run",
            *run_options(request, name=name, pids_limit=self.pids_limit),
            *_image_and_command(image, request.command),
        ]
        try:
            finished = supervise(
                argv,
                env=os.environ,
                time_limit_s=request.limits.time_limit_s,
                cancelled=cancelled,
                stop=lambda proc: self._kill(name, proc),
                # In the job's folder: podman's monitor leaves a file named `oom` in its
                # working folder when the container is killed for memory.
                cwd=request.workdir,
            )
            oom_killed = self._oom_killed(name)
        finally:
            self._remove(name)
        oom = oom_killed or (finished.returncode == _SIGKILL_STATUS and finished.stopped is None)
        result = result_of(finished, request.limits, out_of_memory=oom)
        if (
            result.outcome is Outcome.failed
            and finished.returncode in _PODMAN_FAILED
            and result.message.startswith("Error:")
        ):
            return result.model_copy(update={"outcome": Outcome.error})
        return result

    def _podman(self) -> list[str]:
        return [self.podman, *global_options(self.runtime)]

    def _kill(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        self._call("kill", "--signal=KILL", name)
        kill_group(proc)  # `podman run` itself, in case the container was never started

    def _oom_killed(self, name: str) -> bool:
        state = self._call("inspect", "--type=container", "--format={{.State.OOMKilled}}", name)
        return state.strip() == "true"

    def _remove(self, name: str) -> None:
        self._call("rm", "--force", "--time=0", name)

    def _call(self, *args: str) -> str:
        """Run a podman subcommand; its output, or "" when it fails (logged)."""
        try:
            done = subprocess.run(
                [*self._podman(), *args],
                capture_output=True,
                text=True,
                timeout=_PODMAN_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            logger.warning("podman %s timed out", args[0])
            return ""
        if done.returncode != 0:
            logger.debug("podman %s: %s", " ".join(args), last_line(done.stderr))
            return ""
        return done.stdout


def _gpu_problem(gpus: int) -> str | None:
    if gpus and not has_gpu_cdi():
        return (
            f"no GPU on this host: the limits ask for {gpus} GPU(s), and no CDI spec offers "
            "nvidia.com/gpu (run `nvidia-ctk cdi generate` on a GPU host)"
        )
    return None


def _image_and_command(image: str, command: list[str]) -> list[str]:
    """The image, with `command` replacing its entrypoint and command when given."""
    if not command:
        return [image]
    return [f"--entrypoint={command[0]}", image, *command[1:]]


def load_image(tarball: Path, *, podman: str = "podman") -> str:
    """Load a `docker save` / `podman save` / OCI archive into podman; its image reference."""
    archive_kind(tarball)
    try:
        done = subprocess.run(
            [podman, "load", f"--input={tarball}"], capture_output=True, text=True, check=False
        )
    except FileNotFoundError as err:
        raise ImageError(f"podman is not installed ({podman} not found)") from err
    if done.returncode != 0:
        raise ImageError(f"podman could not load {tarball.name}: {last_line(done.stderr)}")
    loaded = re.findall(r"^Loaded image(?:\(s\))?: *(\S+)", done.stdout, flags=re.MULTILINE)
    if not loaded:
        raise ImageError(f"podman loaded no image from {tarball.name}: {last_line(done.stdout)}")
    return str(loaded[-1].split(",")[0])


def archive_kind(tarball: Path) -> str:
    """The archive's format (docker-archive, oci-archive), by the marker file at its top."""
    try:
        with tarfile.open(tarball, mode="r:*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name == "manifest.json":
                    return "docker-archive"
                if name == "oci-layout":
                    return "oci-archive"
    except (tarfile.TarError, OSError) as err:
        raise ImageError(
            f"{tarball.name} is not a readable tar archive ({err}); upload the output of "
            "`docker save` or `podman save`"
        ) from err
    raise ImageError(
        f"{tarball.name} is a tar archive but not a container image: a `docker save` archive "
        "has manifest.json at its top, an OCI archive has oci-layout; upload the output of "
        "`docker save` or `podman save`, not a root file system or a build context"
    )
