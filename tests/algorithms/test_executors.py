"""The executors, run for real: built-ins on a thread, packages in bubblewrap, images in podman."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import tarfile
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import needs_bwrap
from voxelhub.algorithms.contract import ExecutionRequest, ExecutionResult, Limits, Outcome
from voxelhub.algorithms.executors import _memory, _podman, load_executor
from voxelhub.algorithms.executors._entry import entry_command
from voxelhub.algorithms.executors.builtin import (
    BuiltinExecutor,
    builtin_names,
    register_builtin,
)
from voxelhub.algorithms.executors.container import ContainerExecutor, archive_kind, load_image
from voxelhub.algorithms.executors.errors import ExecutorError, ImageError, PackageError
from voxelhub.algorithms.executors.sandbox import SandboxExecutor

needs_podman = pytest.mark.skipif(
    shutil.which("podman") is None, reason="podman is not installed (apt-get install podman)"
)


def _leftovers(marker: str) -> list[int]:
    """Processes whose command line holds `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if entry.name.isdigit() and marker.encode() in cmdline:
            found.append(int(entry.name))
    return found


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port on the host's loopback that nothing from a sandbox should reach."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    yield server
    server.close()


def _accepted_nothing(server: socket.socket) -> bool:
    try:
        connection, _ = server.accept()
    except BlockingIOError:
        return True
    connection.close()
    return False


# Built-ins ---------------------------------------------------------------------------------


def _threshold(input_dir: Path, output_dir: Path, model_dir: Path) -> None:
    inputs = json.loads((input_dir / "inputs.json").read_text())
    value = inputs["inputs"][0]["value"]
    (output_dir / "result.json").write_text(json.dumps({"double": 2 * value}))


def _broken(input_dir: Path, output_dir: Path, model_dir: Path) -> None:
    raise ValueError("threshold must be positive, got -1")


_RELEASE = threading.Event()


def _hangs(input_dir: Path, output_dir: Path, model_dir: Path) -> None:
    _RELEASE.wait(60)


register_builtin("test-threshold", _threshold)
register_builtin("test-broken", _broken)
register_builtin("test-hangs", _hangs)


@pytest.fixture
def release_hung() -> Iterator[None]:
    _RELEASE.clear()
    yield
    _RELEASE.set()  # let the abandoned thread finish


def test_builtin_writes_its_output(workdir: Path) -> None:
    request = ExecutionRequest(job_id="b1", workdir=workdir, entrypoint="test-threshold")
    result = BuiltinExecutor().run(request)
    assert result.outcome is Outcome.succeeded, result
    assert json.loads((workdir / "output" / "result.json").read_text()) == {"double": 14}
    assert {"test-threshold", "test-broken"} <= set(builtin_names())


def test_builtin_exception_fails_with_its_message(workdir: Path) -> None:
    request = ExecutionRequest(job_id="b2", workdir=workdir, entrypoint="test-broken")
    result = BuiltinExecutor().run(request)
    assert result.outcome is Outcome.failed
    assert result.message == "threshold must be positive, got -1"
    assert "Traceback" in result.stderr_tail and "_broken" in result.stderr_tail


@pytest.mark.usefixtures("release_hung")
def test_builtin_hang_times_out(workdir: Path) -> None:
    limits = Limits(time_limit_s=0.3)
    request = ExecutionRequest(job_id="b3", workdir=workdir, entrypoint="test-hangs", limits=limits)
    result = BuiltinExecutor().run(request)
    assert result.outcome is Outcome.timed_out
    assert "0.3 s" in result.message


@pytest.mark.usefixtures("release_hung")
def test_builtin_cancelled(workdir: Path) -> None:
    cancelled = threading.Event()
    threading.Timer(0.2, cancelled.set).start()
    request = ExecutionRequest(job_id="b4", workdir=workdir, entrypoint="test-hangs")
    assert BuiltinExecutor().run(request, cancelled=cancelled).outcome is Outcome.cancelled


def _thread_name(input_dir: Path, output_dir: Path, model_dir: Path) -> None:
    current = threading.current_thread()
    (output_dir / "thread.json").write_text(json.dumps([current.ident, current.name]))


register_builtin("test-thread-name", _thread_name)


@pytest.mark.usefixtures("release_hung")
def test_builtin_threads_are_reused_and_a_hung_one_is_not(workdir: Path) -> None:
    def run(job_id: str, entrypoint: str, limits: Limits | None = None) -> ExecutionResult:
        (workdir / "output").mkdir(exist_ok=True)
        request = ExecutionRequest(
            job_id=job_id, workdir=workdir, entrypoint=entrypoint, limits=limits or Limits()
        )
        return BuiltinExecutor().run(request)

    def thread() -> list[Any]:
        return list(json.loads((workdir / "output" / "thread.json").read_text()))

    assert run("t1", "test-thread-name").outcome is Outcome.succeeded
    first, name = thread()
    assert name == "builtin-test-thread-name-t1"
    # Earlier tests' abandoned threads may be idle too, and any idle thread takes the next
    # job: it must be one of them (alive, so no new thread has its ident), not a new one.
    idle = {t.ident for t in threading.enumerate() if t.name == "builtin"}
    assert first in idle
    assert run("t2", "test-thread-name").outcome is Outcome.succeeded
    assert thread()[0] in idle  # a kept thread, not one started per job

    assert run("t3", "test-hangs", Limits(time_limit_s=0.2)).outcome is Outcome.timed_out
    assert run("t4", "test-thread-name").outcome is Outcome.succeeded  # not stuck behind it
    assert thread()[1] == "builtin-test-thread-name-t4"


def test_builtin_unknown_name_is_an_error(workdir: Path) -> None:
    request = ExecutionRequest(job_id="b5", workdir=workdir, entrypoint="no-such-thing")
    result = BuiltinExecutor().run(request)
    assert result.outcome is Outcome.error
    assert "no-such-thing" in result.message and "test-threshold" in result.message


def test_builtin_name_cannot_be_taken_twice() -> None:
    register_builtin("test-threshold", _threshold)  # the same function again is fine
    with pytest.raises(ValueError, match="already registered"):
        register_builtin("test-threshold", _broken)


def test_executors_load_by_name() -> None:
    assert load_executor("builtin").name == "builtin"
    assert load_executor("sandbox").name == "sandbox"
    assert load_executor("container").name == "container"
    with pytest.raises(ExecutorError, match="no executor named 'gpu-farm'"):
        load_executor("gpu-farm")


# Sandbox -----------------------------------------------------------------------------------


def _package(workdir: Path, source: str) -> Path:
    package = workdir.parent / "package"
    package.mkdir(exist_ok=True)
    (package / "main.py").write_text(textwrap.dedent(source))
    return package


def _sandbox(workdir: Path, source: str, **limits: float) -> ExecutionResult:
    request = ExecutionRequest(
        job_id="s", workdir=workdir, package_dir=_package(workdir, source), limits=Limits(**limits)
    )
    return SandboxExecutor().run(request)


def _probe(workdir: Path) -> dict[str, str]:
    return dict(json.loads((workdir / "output" / "probe.json").read_text()))


@needs_bwrap
def test_sandbox_runs_a_package(workdir: Path) -> None:
    result = _sandbox(
        workdir,
        """
        import json
        import numpy  # from the platform's environment
        inputs = json.load(open("/input/inputs.json"))
        value = inputs["inputs"][0]["value"]
        json.dump({"double": int(numpy.int64(value) * 2)}, open("/output/result.json", "w"))
        print("done")
        """,
    )
    assert result.outcome is Outcome.succeeded, result.stderr_tail
    assert result.exit_code == 0
    assert result.stdout_tail == "done\n"
    assert json.loads((workdir / "output" / "result.json").read_text()) == {"double": 14}
    assert result.max_rss_mb is not None and 5 < result.max_rss_mb < 500


@needs_bwrap
def test_sandbox_writes_nowhere_but_output(workdir: Path) -> None:
    (workdir / "input" / "scan.txt").write_text("original")
    secret = workdir.parent / "secret.txt"
    secret.write_text("the worker's")
    result = _sandbox(
        workdir,
        f"""
        import json
        probe = {{}}
        for path in ["/opt/algorithm/x", "/input/scan.txt", "/opt/ml/model/x", "/usr/x"]:
            try:
                open(path, "w").write("changed")
                probe[path] = "written"
            except OSError as err:
                probe[path] = err.strerror
        try:
            probe["secret"] = open({str(secret)!r}).read()
        except OSError as err:
            probe["secret"] = err.strerror
        json.dump(probe, open("/output/probe.json", "w"))
        """,
    )
    assert result.outcome is Outcome.succeeded, result.stderr_tail
    probe = _probe(workdir)
    assert probe.pop("secret") == "No such file or directory"
    assert set(probe.values()) == {"Read-only file system"}
    assert (workdir / "input" / "scan.txt").read_text() == "original"
    assert not (workdir.parent / "package" / "x").exists()


@needs_bwrap
def test_sandbox_environment_is_its_own(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXELHUB_SECRET_KEY", "worker-only")
    package = _package(
        workdir,
        """
        import json, os
        json.dump(dict(os.environ), open("/output/probe.json", "w"))
        """,
    )
    request = ExecutionRequest(
        job_id="s", workdir=workdir, package_dir=package, env={"SERIES_COUNT": "3"}
    )
    assert SandboxExecutor().run(request).outcome is Outcome.succeeded
    environment = _probe(workdir)
    assert environment["SERIES_COUNT"] == "3"
    assert "VOXELHUB_SECRET_KEY" not in environment


@needs_bwrap
def test_sandbox_has_no_network(workdir: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    result = _sandbox(
        workdir,
        f"""
        import json, socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=5)
            probe = {{"connect": "connected"}}
        except OSError as err:
            probe = {{"connect": type(err).__name__}}
        json.dump(probe, open("/output/probe.json", "w"))
        """,
    )
    assert result.outcome is Outcome.succeeded, result.stderr_tail
    assert _probe(workdir)["connect"] == "ConnectionRefusedError"
    assert _accepted_nothing(listener)


@needs_bwrap
@pytest.mark.parametrize("mechanism", ["host", "rlimit"])
def test_sandbox_out_of_memory(
    workdir: Path, mechanism: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if mechanism == "rlimit":  # as on a host where no cgroup is writable
        monkeypatch.setattr(_memory, "_cgroup_v1", lambda *args: None)
        monkeypatch.setattr(_memory, "_cgroup_v2", lambda *args: None)
    result = _sandbox(
        workdir,
        """
        block = b"x" * (2560 * 1024 * 1024)  # ten times the limit, every page touched
        print("allocated", len(block))
        """,
        memory_mb=256,
    )
    assert result.outcome is Outcome.out_of_memory, result
    assert "256 MB" in result.message
    assert "allocated" not in result.stdout_tail


@needs_bwrap
def test_sandbox_time_limit_kills_everything(workdir: Path) -> None:
    marker = f"voxelhub-test-{uuid.uuid4().hex}"
    result = _sandbox(
        workdir,
        f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", {marker!r}])
        print("waiting", flush=True)
        time.sleep(120)
        """,
        time_limit_s=1.5,
    )
    assert result.outcome is Outcome.timed_out
    assert "1.5 s" in result.message
    assert result.stdout_tail == "waiting\n"
    assert result.duration_s < 10
    assert _leftovers(marker) == []


@needs_bwrap
def test_sandbox_exit_status_and_last_stderr_line(workdir: Path) -> None:
    result = _sandbox(
        workdir,
        """
        import sys
        print("loading the model", file=sys.stderr)
        print("the model file /opt/ml/model/weights.pt is missing", file=sys.stderr)
        sys.exit(3)
        """,
    )
    assert result.outcome is Outcome.failed
    assert result.exit_code == 3
    assert result.message == "the model file /opt/ml/model/weights.pt is missing"


@needs_bwrap
def test_sandbox_cancelled(workdir: Path) -> None:
    request = ExecutionRequest(
        job_id="s", workdir=workdir, package_dir=_package(workdir, "import time; time.sleep(60)")
    )
    cancelled = threading.Event()
    threading.Timer(0.5, cancelled.set).start()
    started = time.monotonic()
    result = SandboxExecutor().run(request, cancelled=cancelled)
    assert result.outcome is Outcome.cancelled
    assert time.monotonic() - started < 10


@needs_bwrap
def test_sandbox_keeps_only_a_tail_of_the_log(workdir: Path) -> None:
    result = _sandbox(workdir, "for i in range(200_000): print(f'line {i}')")
    assert result.outcome is Outcome.succeeded
    assert len(result.stdout_tail) <= 64 * 1024
    assert result.stdout_tail.endswith("line 199999\n")


@needs_bwrap
def test_sandbox_runs_a_python_package_with_dash_m(workdir: Path) -> None:
    package = workdir.parent / "package"
    (package / "segmenter").mkdir(parents=True)
    (package / "segmenter" / "__init__.py").write_text("")
    (package / "segmenter" / "__main__.py").write_text(
        "open('/output/ran.txt', 'w').write(__spec__.name)"
    )
    request = ExecutionRequest(job_id="s", workdir=workdir, package_dir=package)
    assert SandboxExecutor().run(request).outcome is Outcome.succeeded
    assert (workdir / "output" / "ran.txt").read_text() == "segmenter.__main__"


def test_sandbox_without_an_entry_point_is_an_error(workdir: Path) -> None:
    package = workdir.parent / "package"
    package.mkdir()
    (package / "model.py").write_text("")
    request = ExecutionRequest(job_id="s", workdir=workdir, package_dir=package)
    result = SandboxExecutor().run(request)
    assert result.outcome is Outcome.error
    assert "no entry point" in result.message


def test_monai_bundle_command(workdir: Path) -> None:
    bundle = workdir.parent / "bundle"
    (bundle / "configs").mkdir(parents=True)
    (bundle / "models").mkdir()
    (bundle / "configs" / "inference.json").write_text("{}")
    request = ExecutionRequest(job_id="s", workdir=workdir, package_dir=bundle)
    if importlib.util.find_spec("monai") is None:
        with pytest.raises(PackageError, match=r"MONAI bundle.*install monai"):
            entry_command(request)
    else:
        command = entry_command(request)
        assert command[1:5] == ["-m", "monai.bundle", "run", "--bundle_root"]
        assert "/opt/algorithm/configs/inference.json" in command


# Containers --------------------------------------------------------------------------------


def _container(
    workdir: Path, image: str, script: str, **limits: float
) -> tuple[ExecutionResult, ExecutionRequest]:
    request = ExecutionRequest(
        job_id="c",
        workdir=workdir,
        image=image,
        command=["python3", "-c", textwrap.dedent(script)],
        limits=Limits(**limits),
    )
    return ContainerExecutor().run(request), request


def _containers_named(prefix: str) -> str:
    listing = subprocess.run(
        ["podman", "ps", "--all", "--format={{.Names}}", f"--filter=name={prefix}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return listing.stdout.strip()


@pytest.mark.slow
@needs_podman
def test_container_runs_an_uploaded_image(workdir: Path, container_image: str) -> None:
    result, _ = _container(
        workdir,
        container_image,
        """
        import json, os
        inputs = json.load(open("/input/inputs.json"))
        result = {"double": 2 * inputs["inputs"][0]["value"], "uid": os.getuid()}
        json.dump(result, open("/output/result.json", "w"))
        print("done")
        """,
    )
    assert result.outcome is Outcome.succeeded, result.stderr_tail
    assert result.stdout_tail == "done\n"
    written = workdir / "output" / "result.json"
    assert json.loads(written.read_text()) == {"double": 14, "uid": os.getuid()}
    assert written.stat().st_uid == os.getuid()
    assert _containers_named("voxelhub-c-") == ""


@pytest.mark.slow
@needs_podman
def test_container_is_read_only_and_offline(workdir: Path, container_image: str) -> None:
    (workdir / "input" / "scan.txt").write_text("original")
    result, _ = _container(
        workdir,
        container_image,
        """
        import json, socket
        probe = {}
        for path in ["/x", "/input/scan.txt", "/opt/ml/model/x"]:
            try:
                open(path, "w").write("changed")
                probe[path] = "written"
            except OSError as err:
                probe[path] = err.strerror
        try:
            socket.create_connection(("192.0.2.1", 80), timeout=5)  # TEST-NET-1
            probe["network"] = "connected"
        except OSError as err:
            probe["network"] = err.strerror
        open("/tmp/scratch", "w").write("tmp is writable")
        json.dump(probe, open("/output/probe.json", "w"))
        """,
    )
    assert result.outcome is Outcome.succeeded, result.stderr_tail
    probe = _probe(workdir)
    assert probe.pop("network") == "Network is unreachable"
    assert set(probe.values()) == {"Read-only file system"}
    assert (workdir / "input" / "scan.txt").read_text() == "original"


@pytest.mark.slow
@needs_podman
def test_container_time_limit(workdir: Path, container_image: str) -> None:
    result, _ = _container(
        workdir, container_image, "import time; print('waiting', flush=True); time.sleep(120)",
        time_limit_s=2,
    )  # fmt: skip
    assert result.outcome is Outcome.timed_out
    assert "2 s" in result.message
    assert result.duration_s < 30
    assert _containers_named("voxelhub-c-") == ""


@pytest.mark.slow
@needs_podman
def test_container_out_of_memory(workdir: Path, container_image: str) -> None:
    result, _ = _container(
        workdir, container_image, "block = b'x' * (2560 * 1024 * 1024)", memory_mb=256
    )
    assert result.outcome is Outcome.out_of_memory, result
    assert "256 MB" in result.message


@pytest.mark.slow
@needs_podman
def test_container_exit_status_and_message(workdir: Path, container_image: str) -> None:
    result, _ = _container(
        workdir, container_image, "import sys; sys.exit('no DICOM series in /input')"
    )
    assert result.outcome is Outcome.failed
    assert result.exit_code == 1
    assert result.message == "no DICOM series in /input"


@pytest.mark.slow
@needs_podman
def test_container_cancelled(workdir: Path, container_image: str) -> None:
    request = ExecutionRequest(
        job_id="c", workdir=workdir, image=container_image, command=["sleep", "60"]
    )
    cancelled = threading.Event()
    threading.Timer(1.0, cancelled.set).start()
    result = ContainerExecutor().run(request, cancelled=cancelled)
    assert result.outcome is Outcome.cancelled
    assert _containers_named("voxelhub-c-") == ""


@needs_podman
def test_container_unknown_image_is_an_error(workdir: Path) -> None:
    request = ExecutionRequest(job_id="c", workdir=workdir, image="localhost/voxelhub-absent:1")
    result = ContainerExecutor().run(request)
    assert result.outcome is Outcome.error
    assert "voxelhub-absent" in result.message


def test_container_gpu_without_gpu_is_an_error(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_podman, "CDI_DIRS", (tmp_path / "no-cdi",))
    request = ExecutionRequest(workdir=workdir, job_id="c", image="x", limits=Limits(gpus=1))
    result = ContainerExecutor().run(request)
    assert result.outcome is Outcome.error
    assert result.message.startswith("no GPU on this host")


def test_load_image_refuses_what_is_not_an_image(tmp_path: Path) -> None:
    not_tar = tmp_path / "weights.bin"
    not_tar.write_bytes(os.urandom(4096))
    with pytest.raises(ImageError, match="not a readable tar archive"):
        load_image(not_tar)
    rootfs = tmp_path / "rootfs.tar"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text("ID=debian\n")
    with tarfile.open(rootfs, "w") as tar:
        tar.add(tmp_path / "etc", arcname="./etc")
    with pytest.raises(ImageError, match="not a container image"):
        load_image(rootfs)


def test_archive_kind_reads_the_marker(tmp_path: Path) -> None:
    for marker, kind in [("manifest.json", "docker-archive"), ("oci-layout", "oci-archive")]:
        (tmp_path / marker).write_text("{}")
        archive = tmp_path / f"{kind}.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(tmp_path / marker, arcname=marker)
        assert archive_kind(archive) == kind
