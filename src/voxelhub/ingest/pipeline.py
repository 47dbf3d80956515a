"""What processing an upload does, file by file: unpack, recognise, store, convert, report.

Each file ends in exactly one outcome (stored, duplicate, rejected or skipped) with a
reason; each step that writes runs in its own savepoint, so a bad file never takes a good
one down with it and never leaves half of itself behind.
"""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

from sqlalchemy.orm import Session

from voxelhub.core.objects import ObjectStore
from voxelhub.ingest.dicom_files import SeriesBatch, store_dicom_file
from voxelhub.ingest.extract import Budget, Member, Problem, archive_kind, extract
from voxelhub.ingest.formats import read_head, recognise
from voxelhub.ingest.formats.base import Recognition
from voxelhub.ingest.images import INTERFACE, KSPACE_INTERFACE, image_title, store_image, store_raw
from voxelhub.ingest.limits import Limits
from voxelhub.ingest.models import UploadFile, UploadSession, UploadState
from voxelhub.ingest.schemas import FileReport, SeriesReport, UploadReport
from voxelhub.ingest.series import attach_series
from voxelhub.ingest.spool import materialise

_SYSTEM_FILES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})


def _skip_reason(path: str) -> str | None:
    parts = path.split("/")
    name = parts[-1].lower()
    if "__MACOSX" in parts or name in _SYSTEM_FILES or name.startswith("._"):
        return "a system file, not an image"
    if name == "dicomdir":
        return "a DICOMDIR index; the files it lists are read on their own"
    return None


def _rejected(problem: Problem) -> FileReport:
    return FileReport(path=problem.path, outcome="rejected", reason=problem.reason)


def expand(
    members: list[Member], *, workdir: Path, limits: Limits
) -> tuple[list[Member], list[FileReport]]:
    """The files of the upload with every top-level zip and tar unpacked in their place."""
    budget = Budget(limits)
    files: list[Member] = []
    reports: list[FileReport] = []
    for index, member in enumerate(members):
        if archive_kind(member.local, read_head(member.local)) is None:
            files.append(member)
            continue
        unpacked = extract(
            member.local, name=member.path, dest=workdir / "unpacked" / str(index), budget=budget
        )
        member.local.unlink()
        files.extend(unpacked.members)
        reports.extend(_rejected(p) for p in unpacked.problems)
    return files, reports


def _data_files(recognised: list[tuple[Member, Recognition]]) -> dict[Path, str]:
    """The data files named by .mhd headers: they are read with their header."""
    return {
        member.local.parent / str(found.details["data_file"]): member.path
        for member, found in recognised
        if found.ok and "data_file" in found.details
    }


def _one_file(
    db: Session,
    store: ObjectStore,
    *,
    session: UploadSession,
    member: Member,
    found: Recognition,
    batches: dict[str, SeriesBatch],
    workdir: Path,
    limits: Limits,
) -> FileReport:
    if found.format == "dicom" and member.local.stat().st_size > limits.max_dicom_bytes:
        reason = f"a DICOM file may have at most {limits.max_dicom_bytes} bytes"
        return FileReport(path=member.path, format=found.format, outcome="rejected", reason=reason)
    if found.format == "dicom":
        return store_dicom_file(
            db, store, archive_id=session.archive_id, member=member, batches=batches
        )
    if found.ok and found.format == "kspace":
        return store_raw(
            db, store, archive_id=session.archive_id, member=member, interface=KSPACE_INTERFACE
        )
    if found.ok:
        return store_image(
            db,
            store,
            archive_id=session.archive_id,
            member=member,
            recognition=found,
            workdir=workdir,
        )
    reason = found.reason
    if member.in_archive and archive_kind(member.local, read_head(member.local)) is not None:
        reason = "an archive inside an archive is not unpacked; upload it on its own"
    return FileReport(path=member.path, format=found.format, outcome="rejected", reason=reason)


def _case_slot(member: Member, found: Recognition) -> tuple[str, str] | None:
    """The (case title, interface) a research image or raw file is stored as; None for
    DICOM and unusable files."""
    if not found.ok or found.format == "dicom":
        return None
    interface = KSPACE_INTERFACE if found.format == "kspace" else INTERFACE
    return image_title(member.path), interface


def _store_all(
    db: Session,
    store: ObjectStore,
    session: UploadSession,
    *,
    files: list[Member],
    workdir: Path,
    limits: Limits,
) -> tuple[list[FileReport], list[SeriesReport]]:
    reports: list[FileReport] = []
    batches: dict[str, SeriesBatch] = {}
    recognised = [(m, recognise(m.local)) for m in files if _skip_reason(m.path) is None]
    data_files = _data_files(recognised)
    for member in files:
        if (skip := _skip_reason(member.path)) is not None:
            reports.append(FileReport(path=member.path, outcome="skipped", reason=skip))
    # Files that differ only in their extension name the same case value: the first one
    # is stored, and a later one would silently replace it.
    slots: dict[tuple[str, str], str] = {}
    for member, found in recognised:
        if member.local in data_files:
            reason = f"the data file of {data_files[member.local]}, read with it"
            reports.append(FileReport(path=member.path, outcome="skipped", reason=reason))
            continue
        slot = _case_slot(member, found)
        if slot is not None and slot in slots:
            reason = (
                f"{slots[slot]} of this upload is stored as the {slot[1]} of case {slot[0]!r} "
                "already; rename one of the two to keep both"
            )
            reports.append(
                FileReport(path=member.path, format=found.format, outcome="rejected", reason=reason)
            )
            continue
        report = _one_file(
            db,
            store,
            session=session,
            member=member,
            found=found,
            batches=batches,
            workdir=workdir,
            limits=limits,
        )
        if slot is not None and report.outcome in ("stored", "duplicate"):
            slots[slot] = member.path
        reports.append(report)
    series = [
        attach_series(db, store, archive_id=session.archive_id, batch=batch)
        for batch in batches.values()
    ]
    return reports, series


def run(
    db: Session,
    store: ObjectStore,
    session: UploadSession,
    *,
    files: list[UploadFile],
    workdir: Path,
    limits: Limits,
) -> UploadReport:
    """Process the received files of `session` in `workdir`; the report of every file."""
    members, problems = materialise(store, session, files=files, dest=workdir / "received")
    expanded, unpack_reports = expand(members, workdir=workdir, limits=limits)
    reports, series = _store_all(db, store, session, files=expanded, workdir=workdir, limits=limits)
    reports = sorted([*map(_rejected, problems), *unpack_reports, *reports], key=lambda r: r.path)
    return _report(session.id, session.archive_id, files=reports, series=series)


def _report(
    upload_id: uuid.UUID,
    archive_id: uuid.UUID,
    *,
    files: list[FileReport],
    series: list[SeriesReport],
) -> UploadReport:
    counts: Counter[str] = Counter(r.outcome for r in files)
    counts.update(f"series_{s.outcome}" for s in series)
    usable = counts["stored"] + counts["duplicate"]
    state = UploadState.done if usable else UploadState.failed
    return UploadReport(
        upload_id=upload_id,
        archive_id=archive_id,
        state=state,
        counts=dict(counts),
        files=files,
        series=series,
    )
