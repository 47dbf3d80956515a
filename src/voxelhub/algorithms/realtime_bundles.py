"""Real-time invocation of MONAI bundle algorithms, on a warm sandboxed process.

`POST /api/v1/algorithms/{slug}/invoke` on a package version that is a MONAI bundle
answers within the request: the bundle is unpacked once per API process (by its package's
object key), its model stays loaded in a `WarmBundle` (its own sandboxed process), and each
call writes the inputs, segments and reads back the outputs an answer can carry (JSON such
as `volumes`, images such as `mask`, base64). DICOM outputs (SEG, SR) go into the store only
through jobs, so a real-time call leaves them out. Multi-model endpoints
(`algorithms.endpoint_bundles`) run their bundle models through the same `run_bundle`, on
warm bundles of their own kept under the endpoint's memory budget.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from voxelhub.algorithms.contract import Limits
from voxelhub.algorithms.models import Algorithm, AlgorithmVersion
from voxelhub.algorithms.realtime import (
    REALTIME_OUTPUTS,
    AlgorithmFailed,
    read_outputs,
    stage_inputs,
)
from voxelhub.algorithms.warm import WarmBundle, WarmError, warm_bundles
from voxelhub.archives.values import ValueKind
from voxelhub.auth.service import Principal
from voxelhub.core.errors import BadRequest
from voxelhub.core.objects import ObjectStore

_unpacked: dict[str, Path] = {}
_lock = threading.Lock()


def is_bundle(folder: Path) -> bool:
    return (folder / "configs").is_dir() and (folder / "models").is_dir()


def unpacked(store: ObjectStore, key: str) -> Path:
    """The package under `key`, unpacked once per process (its top folder if it has one)."""
    with _lock:
        found = _unpacked.get(key)
        if found is not None and found.is_dir():
            return found
        root = Path(tempfile.mkdtemp(prefix="vxh-rt-bundle-"))
        archive = root / "package"
        with archive.open("wb") as out:
            for chunk in store.stream(key):
                out.write(chunk)
        target = root / "unpacked"
        target.mkdir()
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                for member in zipped.namelist():
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise BadRequest(f"the package holds an unsafe path {member!r}")
                zipped.extractall(target)
        else:
            with tarfile.open(archive) as tarred:
                tarred.extractall(target, filter="data")
        archive.unlink()
        entries = list(target.iterdir())
        folder = entries[0] if len(entries) == 1 and entries[0].is_dir() else target
        _unpacked[key] = folder
        return folder


def bundle_version(store: ObjectStore, algorithm: Algorithm, version: AlgorithmVersion) -> Path:
    """The unpacked MONAI bundle of a package version; BadRequest when it is not one."""
    if version.kind != "package" or version.package_key is None:
        raise BadRequest(f"{algorithm.slug!r} has no package to run")
    bundle = unpacked(store, version.package_key)
    if not is_bundle(bundle):
        raise BadRequest(
            f"{algorithm.slug!r} is a package but not a MONAI bundle: real-time and "
            "multi-model endpoints run built-ins and bundles; start a job for other packages"
        )
    return bundle


def limits_of(version: AlgorithmVersion) -> Limits:
    """The version's limits, as its jobs get them (a warm process serves both)."""
    return Limits.of_resources(version.resources)


def run_bundle(
    db: Session,
    store: ObjectStore,
    principal: Principal,
    algorithm: Algorithm,
    *,
    version: AlgorithmVersion,
    inputs: dict[str, Any],
    warm: Callable[[], WarmBundle],
) -> dict[str, Any]:
    """Segment the given inputs on the warm bundle `warm()` gives; the answerable outputs."""
    answerable = [o for o in version.outputs if ValueKind(o["kind"]) in REALTIME_OUTPUTS]
    workdir = Path(tempfile.mkdtemp(prefix="vxh-rt-"))
    try:
        stage_inputs(
            db, store, principal, algorithm, version=version, inputs=inputs, workdir=workdir
        )
        try:
            warm().segment(workdir / "input", workdir / "output")
        except WarmError as err:
            raise AlgorithmFailed(f"{algorithm.slug} failed: {err}") from err
        return read_outputs(answerable, workdir / "output")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def invoke_bundle(
    db: Session,
    store: ObjectStore,
    principal: Principal,
    algorithm: Algorithm,
    *,
    version: AlgorithmVersion,
    inputs: dict[str, Any],
) -> dict[str, Any]:
    """Segment the given inputs with the bundle version now, on the process's warm bundles."""
    bundle = bundle_version(store, algorithm, version)
    key = str(version.package_key)

    def warm() -> WarmBundle:
        return warm_bundles().get(key, lambda: bundle, limits=limits_of(version))

    return run_bundle(db, store, principal, algorithm, version=version, inputs=inputs, warm=warm)
