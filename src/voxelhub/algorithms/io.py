"""Materialising a job's inputs under the contract, and collecting what it wrote.

Inputs: DICOM series as Part-10 files in input/<interface>/, files and images as
input/<interface>/<filename>, scalars inline in input/inputs.json. Outputs, by declared
interface: output/<interface>.{mha,tif,tiff,nii.gz,nii,nrrd} (image), output/<interface>.*
(file), output/<interface>.json (json, number, text), output/<interface>/*.dcm (a DICOM
series or SEG, ingested into the image store).
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from voxelhub.algorithms.contract import INPUTS_JSON, InputEntry, InputsManifest
from voxelhub.algorithms.errors import InvalidInputs
from voxelhub.archives import values_service
from voxelhub.archives.models import Case, CaseValue
from voxelhub.archives.values import DicomSeriesValue, ValueKind, as_stored
from voxelhub.core.objects import ObjectStore
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.join import join_instance
from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN, PixelDescription
from voxelhub.store.dicomweb.stow import split_part
from voxelhub.store.imagesets import instances_of, pixel_of, read_instance
from voxelhub.store.ingest import Ingest
from voxelhub.store.models import Instance, Series

IMAGE_SUFFIXES = (".mha", ".tif", ".tiff", ".nii.gz", ".nii", ".nrrd")
MAX_JSON_BYTES = 16 * 1024 * 1024


class OutputError(ValueError):
    """The algorithm wrote something the platform cannot use; the message says what."""


def materialise(
    db: Session,
    store: ObjectStore,
    job_id: uuid.UUID,
    algorithm: str,
    *,
    archive_id: uuid.UUID,
    values: dict[str, dict[str, Any]],
    input_dir: Path,
) -> None:
    """Write every input of the job under `input_dir`, with inputs.json."""
    entries = []
    for interface, ref in values.items():
        kind = ValueKind(ref["kind"])
        if "value" in ref:
            entries.append(InputEntry(interface=interface, kind=kind, value=ref["value"]))
            continue
        row = db.get(CaseValue, uuid.UUID(ref["case_value_id"]))
        if row is None:
            raise InvalidInputs(f"the case value for input {interface!r} was deleted")
        entries.append(
            _materialise_value(
                db, store, row, interface=interface, archive_id=archive_id, input_dir=input_dir
            )
        )
    manifest = InputsManifest(job_id=str(job_id), algorithm=algorithm, inputs=entries)
    (input_dir / INPUTS_JSON).write_text(manifest.model_dump_json(indent=2))


def _materialise_value(
    db: Session,
    store: ObjectStore,
    row: CaseValue,
    *,
    interface: str,
    archive_id: uuid.UUID,
    input_dir: Path,
) -> InputEntry:
    kind = ValueKind(row.kind)
    if kind is ValueKind.dicom_series:
        folder = input_dir / interface
        folder.mkdir(parents=True, exist_ok=True)
        _write_series(db, store, archive_id, row.value["series_instance_uid"], folder)
        return InputEntry(interface=interface, kind=kind, path=interface)
    if kind in (ValueKind.image, ValueKind.file):
        name = str(row.value.get("filename") or "file")
        target = input_dir / interface / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            for chunk in store.stream(row.object_keys[0]):
                out.write(chunk)
        return InputEntry(interface=interface, kind=kind, path=f"{interface}/{name}")
    scalar = row.value.get("value", row.value.get("text"))
    return InputEntry(interface=interface, kind=kind, value=scalar)


def _write_series(
    db: Session, store: ObjectStore, archive_id: uuid.UUID, series_uid: str, folder: Path
) -> None:
    series = db.scalar(
        select(Series).where(
            Series.archive_id == archive_id, Series.series_instance_uid == series_uid
        )
    )
    if series is None:
        raise InvalidInputs(f"series {series_uid} is not in the job's archive")
    instances = list(instances_of(db, series.id))
    if not instances:
        return

    def write(instance: Instance, pixel: PixelDescription | None) -> None:
        header, frames = read_instance(store, instance)
        data = join_instance(
            header,
            frames,
            instance.frames_transfer_syntax_uid,
            target_transfer_syntax=EXPLICIT_VR_LITTLE_ENDIAN,
            pixel=pixel,
        )
        (folder / f"{instance.sop_instance_uid}.dcm").write_bytes(data)

    # Decoding the stored frames (HTJ2K) is most of the work and releases the GIL: one
    # instance per core at a time. The rows are read here; the threads touch no session.
    work = [(instance, pixel_of(instance)) for instance in instances]
    with ThreadPoolExecutor(max_workers=min(len(work), os.cpu_count() or 1)) as pool:
        for done in [pool.submit(write, instance, pixel) for instance, pixel in work]:
            done.result()


def collect(
    db: Session,
    store: ObjectStore,
    case: Case,
    *,
    algorithm: str,
    outputs: list[dict[str, Any]],
    output_dir: Path,
) -> dict[str, Any]:
    """Store every declared output as a value of the case; OutputError if one is unusable."""
    collected: dict[str, Any] = {}
    for spec in outputs:
        interface, kind = spec["interface"], ValueKind(spec["kind"])
        target = f"{algorithm}.{interface}"
        if kind is ValueKind.dicom_series:
            collected[interface] = _collect_dicom(db, store, case, target, output_dir / interface)
        elif kind in (ValueKind.image, ValueKind.file):
            collected[interface] = _collect_file(
                db,
                store,
                case,
                target=target,
                interface=interface,
                kind=kind,
                output_dir=output_dir,
            )
        else:
            collected[interface] = _collect_scalar(
                db,
                store,
                case,
                target=target,
                interface=interface,
                kind=kind,
                output_dir=output_dir,
            )
    return collected


def _inside(output_dir: Path, path: Path) -> Path:
    resolved = path.resolve()
    if not resolved.is_relative_to(output_dir.resolve()) or path.is_symlink():
        raise OutputError(f"{path.name} points outside /output; outputs must be plain files")
    return resolved


def _collect_file(
    db: Session,
    store: ObjectStore,
    case: Case,
    *,
    target: str,
    interface: str,
    kind: ValueKind,
    output_dir: Path,
) -> dict[str, Any]:
    candidates = sorted(p for p in output_dir.glob(f"{interface}.*") if p.is_file())
    if kind is ValueKind.image:
        candidates = [p for p in candidates if p.name.lower().endswith(IMAGE_SUFFIXES)]
    if not candidates:
        wanted = (
            "/output/"
            + interface
            + (".mha (or .tif, .nii.gz)" if kind is ValueKind.image else ".<ext>")
        )
        raise OutputError(f"the algorithm wrote no {kind} output {interface!r}: expected {wanted}")
    path = _inside(output_dir, candidates[0])
    with path.open("rb") as data:
        row = values_service.put_file(db, store, case, target, filename=path.name, data=data)
    return {"case_value": str(row.id), "interface": target, "kind": row.kind}


def _collect_scalar(
    db: Session,
    store: ObjectStore,
    case: Case,
    *,
    target: str,
    interface: str,
    kind: ValueKind,
    output_dir: Path,
) -> dict[str, Any]:
    body = read_scalar(output_dir, interface=interface, kind=kind)
    row = values_service.set_scalar(db, store, case, target, body)
    return {"case_value": str(row.id), "interface": target, "kind": row.kind}


def read_scalar(output_dir: Path, *, interface: str, kind: ValueKind) -> dict[str, Any]:
    """The value a scalar output holds (/output/<interface>.json), as a case value's body;
    OutputError if it is missing or not of its kind."""
    path = output_dir / f"{interface}.json"
    try:
        value = json.loads(_read_plain_file(output_dir, path, kind=kind, interface=interface))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OutputError(f"/output/{interface}.json is not valid JSON: {err}") from err
    if kind is ValueKind.number and (not isinstance(value, int | float) or isinstance(value, bool)):
        raise OutputError(f"/output/{interface}.json must hold a number, not {value!r:.60}")
    if kind in (ValueKind.text, ValueKind.report) and not isinstance(value, str):
        raise OutputError(f"/output/{interface}.json must hold a JSON string")
    if kind is ValueKind.report:
        return {"kind": kind, "text": value}
    return {"kind": kind, "value": value}


def _read_plain_file(output_dir: Path, path: Path, *, kind: ValueKind, interface: str) -> str:
    """The text of /output/<interface>.json, a plain file directly in `output_dir`.

    One open that follows no link and one fstat: `_inside`'s two resolves look up every
    folder of both paths, more than a trivial run's own work. Only for a name of one
    component (an interface name is one); any other goes through `_inside`.
    """
    missing = f"the algorithm wrote no {kind} output: expected /output/{interface}.json"
    if "/" in interface or interface.startswith("."):
        if not path.is_file():
            raise OutputError(missing)
        _inside(output_dir, path)
        if path.stat().st_size > MAX_JSON_BYTES:
            raise OutputError(f"/output/{interface}.json is larger than 16 MiB")
        return path.read_text()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError as err:
        raise OutputError(missing) from err
    except OSError as err:  # ELOOP: a symbolic link
        raise OutputError(
            f"{path.name} points outside /output; outputs must be plain files"
        ) from err
    found = os.fstat(fd)
    if not stat.S_ISREG(found.st_mode):
        os.close(fd)
        raise OutputError(missing)
    with open(fd, "rb") as data:
        if found.st_size > MAX_JSON_BYTES:
            raise OutputError(f"/output/{interface}.json is larger than 16 MiB")
        return data.read().decode()


def _collect_dicom(
    db: Session, store: ObjectStore, case: Case, target: str, folder: Path
) -> dict[str, Any]:
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    if not files:
        raise OutputError(f"the algorithm wrote no DICOM files under /output/{folder.name}/")
    ingest = Ingest(db, store, case.archive_id)
    stored = []
    descriptions: dict[str, tuple[str, str]] = {}  # series UID → (modality, description)
    for path in files:
        try:
            split = split_part(_inside(folder.parent, path).read_bytes())
        except DicomError as err:
            raise OutputError(f"/output/{folder.name}/{path.name}: {err.message}") from err
        stored.append(ingest.add(split))
        keys = split.keys
        descriptions.setdefault(
            keys.series_instance_uid, (str(keys.modality), keys.series_description)
        )
    ingest.finish()
    series_uids = sorted({s.series_instance_uid for s in stored})
    # The case value names one series (the first by UID) and counts only its instances;
    # the job's output lists every series written (one per echo of an MR, say).
    first_uid = series_uids[0]
    modality, description = descriptions[first_uid]
    described = DicomSeriesValue(
        study_instance_uid=next(
            s.study_instance_uid for s in stored if s.series_instance_uid == first_uid
        ),
        series_instance_uid=first_uid,
        modality=modality,
        number_of_instances=sum(s.series_instance_uid == first_uid for s in stored),
        series_description=description,
    )
    row = values_service.set_series(db, store, case, target, as_stored(described))
    return {
        "case_value": str(row.id),
        "interface": target,
        "kind": row.kind,
        "series_instance_uids": series_uids,
    }
