"""Real-time invocation: a built-in algorithm answers within the request, on a warm process.

The API process keeps the built-ins imported (and whatever models they cache), so the only
overhead beyond the algorithm's own time is writing the inputs and reading the outputs.
"""

from __future__ import annotations

import base64
import binascii
import json
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from voxelhub.algorithms import io, service
from voxelhub.algorithms.contract import (
    INPUTS_JSON,
    ExecutionRequest,
    InputEntry,
    InputsManifest,
    Limits,
    Outcome,
    prepare_workdir,
)
from voxelhub.algorithms.errors import InvalidInputs
from voxelhub.algorithms.models import Algorithm, AlgorithmVersion
from voxelhub.algorithms.runner import memory_scratch
from voxelhub.archives import service as archives
from voxelhub.archives.values import ValueKind
from voxelhub.auth.roles import ArchiveRole
from voxelhub.auth.service import Principal
from voxelhub.core.errors import BadRequest, VoxelhubError
from voxelhub.core.objects import ObjectStore

REALTIME_OUTPUTS = {
    ValueKind.json,
    ValueKind.number,
    ValueKind.text,
    ValueKind.image,
    ValueKind.file,
}


class AlgorithmFailed(VoxelhubError):
    status_code = 422
    code = "algorithm_failed"


def _write_input(
    db: Session,
    store: ObjectStore,
    principal: Principal,
    *,
    spec: dict[str, Any],
    given: Any,
    input_dir: Path,
) -> InputEntry:
    interface, kind = spec["interface"], ValueKind(spec["kind"])
    if kind is ValueKind.dicom_series:
        if not isinstance(given, dict) or "archive_id" not in given:
            raise InvalidInputs(f"input {interface!r} takes {{archive_id, series_instance_uid}}")
        archive_id = uuid.UUID(str(given["archive_id"]))
        archives.get_archive(db, principal, archive_id, ArchiveRole.viewer)
        folder = input_dir / interface
        folder.mkdir(parents=True)
        io._write_series(db, store, archive_id, str(given.get("series_instance_uid")), folder)
        return InputEntry(interface=interface, kind=kind, path=interface)
    if kind in (ValueKind.image, ValueKind.file):
        if not isinstance(given, dict) or "data" not in given:
            raise InvalidInputs(f"input {interface!r} takes {{filename, data (base64)}}")
        name = io_safe_name(str(given.get("filename") or interface))
        target = input_dir / interface / name
        target.parent.mkdir(parents=True)
        try:
            target.write_bytes(base64.b64decode(given["data"], validate=True))
        except (binascii.Error, ValueError) as err:
            raise InvalidInputs(f"input {interface!r}: data is not base64") from err
        return InputEntry(interface=interface, kind=kind, path=f"{interface}/{name}")
    return InputEntry(
        interface=interface, kind=kind, value=service._check_scalar(interface, kind, given)
    )


def io_safe_name(name: str) -> str:
    from voxelhub.archives.values_service import safe_filename

    return safe_filename(name)


def read_outputs(outputs: list[dict[str, Any]], output_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for spec in outputs:
        interface, kind = spec["interface"], ValueKind(spec["kind"])
        if kind in (ValueKind.image, ValueKind.file):
            found = sorted(p for p in output_dir.glob(f"{interface}.*") if p.is_file())
            if not found:
                raise AlgorithmFailed(f"the algorithm wrote no output {interface!r}")
            result[interface] = {
                "filename": found[0].name,
                "data": base64.b64encode(found[0].read_bytes()).decode(),
            }
            continue
        path = output_dir / f"{interface}.json"
        try:
            result[interface] = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise AlgorithmFailed(f"output {interface!r} is missing or not JSON: {err}") from err
    return result


def stage_inputs(
    db: Session,
    store: ObjectStore,
    principal: Principal,
    algorithm: Algorithm,
    *,
    version: AlgorithmVersion,
    inputs: dict[str, Any],
    workdir: Path,
) -> None:
    """Write the call's inputs under `workdir` by the container contract (all are required)."""
    missing = [i["interface"] for i in version.inputs if i["interface"] not in inputs]
    if missing:
        raise InvalidInputs(f"missing input(s): {', '.join(missing)}")
    prepare_workdir(workdir)
    entries = [
        _write_input(
            db,
            store,
            principal,
            spec=spec,
            given=inputs[spec["interface"]],
            input_dir=workdir / "input",
        )
        for spec in version.inputs
    ]
    manifest = InputsManifest(job_id="realtime", algorithm=algorithm.slug, inputs=entries)
    (workdir / "input" / INPUTS_JSON).write_text(manifest.model_dump_json())


def invoke(
    db: Session,
    store: ObjectStore,
    principal: Principal,
    algorithm: Algorithm,
    inputs: dict[str, Any],
) -> dict[str, Any]:
    """Run a built-in algorithm now and return its outputs."""
    from voxelhub.algorithms.catalog import register_builtins
    from voxelhub.algorithms.executors.builtin import BuiltinExecutor, builtin_names

    service.require_use(db, principal, algorithm)
    version = service.latest_version(db, algorithm)
    if version is not None and version.kind == "package":
        from voxelhub.algorithms.realtime_bundles import invoke_bundle

        return invoke_bundle(db, store, principal, algorithm, version=version, inputs=inputs)
    if version is None or version.kind != "builtin":
        raise BadRequest(
            f"{algorithm.slug!r} is not a built-in algorithm: real-time endpoints "
            "run built-ins; start a job for packages and containers"
        )
    if version.entrypoint not in builtin_names():
        register_builtins()
    unusable = [
        o["interface"] for o in version.outputs if ValueKind(o["kind"]) not in REALTIME_OUTPUTS
    ]
    if unusable:
        raise BadRequest(
            f"{algorithm.slug!r} writes {', '.join(unusable)} into the store: start a job for it"
        )
    workdir = Path(tempfile.mkdtemp(prefix="vxh-rt-", dir=memory_scratch()))
    try:
        stage_inputs(
            db, store, principal, algorithm, version=version, inputs=inputs, workdir=workdir
        )
        limits = Limits(time_limit_s=float(version.resources.get("time_limit_s", 60)))
        result = BuiltinExecutor().run(
            ExecutionRequest(
                job_id="realtime",
                workdir=workdir,
                entrypoint=version.entrypoint,
                limits=limits,
            )
        )
        if result.outcome is not Outcome.succeeded:
            raise AlgorithmFailed(f"{algorithm.slug} {result.outcome.value}: {result.message}")
        return read_outputs(list(version.outputs), workdir / "output")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
