"""Running an algorithm job on a worker: materialise, execute, collect, clean up."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import tarfile
import tempfile
import threading
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from sqlalchemy.orm import Session

from voxelhub.algorithms import io, quick_outputs
from voxelhub.algorithms.contract import (
    ExecutionRequest,
    ExecutionResult,
    Executor,
    Limits,
    Outcome,
    prepare_workdir,
)
from voxelhub.algorithms.executors.errors import ExecutorError
from voxelhub.algorithms.models import Algorithm, AlgorithmVersion
from voxelhub.algorithms.warm import warm_executor_for
from voxelhub.archives.models import Case
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.jobs import engine
from voxelhub.jobs.models import Job

logger = logging.getLogger(__name__)

_image_lock = threading.Lock()
_loaded_images: dict[str, str] = {}


def executor_for(kind: str) -> Executor:
    if kind == "builtin":
        from voxelhub.algorithms.executors.builtin import BuiltinExecutor

        return BuiltinExecutor()
    if kind == "package":
        from voxelhub.algorithms.executors.sandbox import SandboxExecutor

        return SandboxExecutor()
    from voxelhub.algorithms.executors.container import ContainerExecutor

    return ContainerExecutor()


def _unpack_package(runtime: Runtime, key: str, target: Path) -> Path:
    archive = target.parent / "package-archive"
    with archive.open("wb") as out:
        for chunk in runtime.store.stream(key):
            out.write(chunk)
    target.mkdir()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
                    raise io.OutputError(f"the package holds an unsafe path {member!r}")
            zipped.extractall(target)
    else:
        with tarfile.open(archive) as tarred:
            tarred.extractall(target, filter="data")
    archive.unlink()
    entries = list(target.iterdir())
    # A package zipped with its top folder: run from inside that folder.
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else target


def _image_for(runtime: Runtime, version: AlgorithmVersion, workdir: Path) -> str | None:
    if version.image is None or version.package_key is None:
        return version.image
    with _image_lock:
        loaded = _loaded_images.get(version.package_key)
        if loaded is None:
            from voxelhub.algorithms.executors.container import load_image

            tarball = workdir / "image.tar"
            with tarball.open("wb") as out:
                for chunk in runtime.store.stream(version.package_key):
                    out.write(chunk)
            try:
                loaded = load_image(tarball)
            except ExecutorError as err:
                raise io.OutputError(f"the container image could not be loaded: {err}") from err
            finally:
                tarball.unlink(missing_ok=True)
            _loaded_images[version.package_key] = loaded
    return loaded


def _request(
    runtime: Runtime, job: Job, version: AlgorithmVersion, workdir: Path
) -> ExecutionRequest:
    package_dir = None
    if version.kind == "package" and version.package_key:
        package_dir = _unpack_package(runtime, version.package_key, workdir / "package")
    command = (
        shlex.split(version.entrypoint) if version.kind != "builtin" and version.entrypoint else []
    )
    return ExecutionRequest(
        job_id=str(job.id),
        workdir=workdir,
        command=command,
        image=_image_for(runtime, version, workdir) if version.kind == "container" else None,
        package_dir=package_dir,
        entrypoint=version.entrypoint if version.kind == "builtin" else None,
        limits=Limits.of_resources(version.resources),
    )


_version_lock = threading.Lock()
_versions: dict[uuid.UUID, tuple[AlgorithmVersion, str]] = {}


def _version_of(db: Session, job: Job) -> tuple[AlgorithmVersion, str] | None:
    """The job's version and its algorithm's slug; cached, since a version never changes."""
    with _version_lock:
        cached = _versions.get(job.version_id)
    if cached is not None:
        return cached
    version = db.get(AlgorithmVersion, job.version_id)
    algorithm = db.get(Algorithm, job.algorithm_id)
    if version is None or algorithm is None:
        return None
    db.expunge(version)
    with _version_lock:
        _versions[job.version_id] = (version, algorithm.slug)
    return version, algorithm.slug


def _failure(result: ExecutionResult) -> engine.Finish:
    state = engine.CANCELLED if result.outcome is Outcome.cancelled else engine.FAILED
    return engine.Finish(
        state,
        result.outcome.value,
        result.message or result.outcome.value,
        exit_code=result.exit_code,
        log=result.stderr_tail,
        resources=_resources(result),
    )


def _resources(result: ExecutionResult) -> dict[str, Any]:
    return {"duration_s": round(result.duration_s, 3), "max_rss_mb": result.max_rss_mb}


# Memory-backed scratch space: creating and removing a working folder there takes well
# under a millisecond, on a disk file system often ten or more (the journal's writes).
MEMORY_SCRATCH = Path("/dev/shm")


def memory_scratch() -> str | None:
    """/dev/shm when this host has a writable one, else None (the default temp folder)."""
    ok = MEMORY_SCRATCH.is_dir() and os.access(MEMORY_SCRATCH, os.W_OK | os.X_OK)
    return str(MEMORY_SCRATCH) if ok else None


def _scratch_for(job: Job) -> str | None:
    """Memory for a built-in whose inputs are all inline (small, and no files to copy)."""
    cached = _versions.get(job.version_id)
    if cached is None or cached[0].kind != "builtin" or any("value" not in v for v in _values(job)):
        return None
    return memory_scratch()


class _NoSession:
    """Where a job needs no database: anything asked of it is a mistake, said at once."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no session here: {name} was asked for a job that needs none")


@contextlib.contextmanager
def _session_if_needed(runtime: Runtime, job: Job) -> Iterator[Session]:
    if job.version_id in _versions and all("value" in v for v in _values(job)):
        yield cast(Session, _NoSession())
        return
    with session_scope(runtime.database_url) as db:
        yield db


def _values(job: Job) -> Iterable[dict[str, Any]]:
    values: dict[str, dict[str, Any]] = job.inputs.get("values", {})
    return values.values()


def run_algorithm_job(runtime: Runtime, job: Job, cancelled: threading.Event) -> engine.Finish:
    """The job handler of every algorithm job (built-in, package or container).

    A run that succeeded returns a Finish whose `store` collects the outputs in the
    transaction that records the end of the job (one transaction, not two), and whose
    `cleanup` removes the working folder once that is done.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"vxh-job-{job.id}-", dir=_scratch_for(job)))
    keep = False
    try:
        prepare_workdir(workdir)
        # A job whose version is cached and whose inputs are all inline needs no session
        # (making and closing one costs more than a trivial built-in's run).
        with _session_if_needed(runtime, job) as db:
            found = _version_of(db, job)
            if found is None:
                return engine.Finish(engine.FAILED, "error", "the algorithm version was deleted")
            version, slug = found
            io.materialise(
                db,
                runtime.store,
                job.id,
                slug,
                archive_id=job.archive_id,
                values=job.inputs.get("values", {}),
                input_dir=workdir / "input",
            )
            outputs = list(version.outputs)
            request = _request(runtime, job, version, workdir)
            # MONAI bundles segmenting images run on a warm sandboxed process (model loaded).
            warm = warm_executor_for(version.package_key, request)
        result = (warm or executor_for(version.kind)).run(request, cancelled=cancelled)
        if result.outcome is not Outcome.succeeded:
            return _failure(result)
        keep = True
        return _succeeded(runtime, job, result, slug=slug, outputs=outputs, workdir=workdir)
    except io.OutputError as err:
        return engine.Finish(engine.FAILED, "bad_output", str(err))
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _succeeded(
    runtime: Runtime,
    job: Job,
    result: ExecutionResult,
    *,
    slug: str,
    outputs: list[dict[str, Any]],
    workdir: Path,
) -> engine.Finish:
    """The end of a run that succeeded, with what stores its outputs and then cleans up.

    Scalar outputs only: they are read (and checked) here, and stored with the end of the
    job in one round trip (`quick_outputs`); `store` remains for when that cannot be done.
    """
    done = engine.Finish(
        engine.SUCCEEDED,
        "succeeded",
        exit_code=result.exit_code,
        log=result.stdout_tail + result.stderr_tail,
        resources=_resources(result),
    )
    finish = replace(
        done,
        store=_collector(runtime, job, done, slug=slug, outputs=outputs, workdir=workdir),
        cleanup=lambda: shutil.rmtree(workdir, ignore_errors=True),
    )
    if not quick_outputs.all_scalar(outputs):
        return finish
    try:
        read = quick_outputs.read_outputs(workdir / "output", algorithm=slug, outputs=outputs)
    except io.OutputError as err:
        return replace(finish, state=engine.FAILED, outcome="bad_output", message=str(err),
                       store=None)  # fmt: skip
    return replace(
        finish,
        outputs=quick_outputs.collected(read),
        writes=quick_outputs.writes(runtime.store, job.case_id, read),
    )


def _collector(
    runtime: Runtime,
    job: Job,
    done: engine.Finish,
    *,
    slug: str,
    outputs: list[dict[str, Any]],
    workdir: Path,
) -> Callable[[Session], engine.Finish]:
    """The `store` step of a run that succeeded: its outputs become values of the case."""

    def store(db: Session) -> engine.Finish:
        case = db.get(Case, job.case_id)
        if case is None:
            failed = engine.Finish(engine.FAILED, "error", "the job's case was deleted")
            raise engine.Rejected(failed)
        try:
            collected = io.collect(
                db,
                runtime.store,
                case,
                algorithm=slug,
                outputs=outputs,
                output_dir=workdir / "output",
            )
        except io.OutputError as err:
            bad = replace(done, state=engine.FAILED, outcome="bad_output", message=str(err))
            raise engine.Rejected(bad) from err
        return replace(done, outputs=collected)

    return store
