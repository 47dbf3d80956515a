"""HTTP API of archives: create and list them, manage members, cases and their values."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, UploadFile, status
from fastapi.responses import RedirectResponse

from voxelhub.archives import service, values_service
from voxelhub.archives.errors import InvalidValue
from voxelhub.archives.models import Archive, Case, CaseValue
from voxelhub.archives.schemas import (
    ArchiveCreate,
    ArchiveOut,
    CaseCreate,
    CaseOut,
    CasePage,
    DownloadLink,
    MemberOut,
    MemberSet,
    ValueOut,
)
from voxelhub.archives.values import ScalarValue
from voxelhub.auth import audit, permissions
from voxelhub.auth import service as auth_service
from voxelhub.auth.deps import PrincipalDep
from voxelhub.auth.roles import ArchiveRole
from voxelhub.core.deps import DbDep, SettingsDep, StoreDep
from voxelhub.dicom.deidentify import DeidPolicy
from voxelhub.dicom.errors import DicomError

router = APIRouter(prefix="/api/v1/archives", tags=["archives"])
ARCHIVE = service.ARCHIVE


def _archive_dep(at_least: ArchiveRole):  # type: ignore[no-untyped-def]
    """A dependency that loads the archive and checks the caller's role on it."""

    def load(archive_id: uuid.UUID, principal: PrincipalDep, db: DbDep) -> tuple[Archive, str]:
        return service.get_archive(db, principal, archive_id, at_least)

    return load


ViewableArchive = Annotated[tuple[Archive, str], Depends(_archive_dep(ArchiveRole.viewer))]
UploadableArchive = Annotated[tuple[Archive, str], Depends(_archive_dep(ArchiveRole.uploader))]
EditableArchive = Annotated[tuple[Archive, str], Depends(_archive_dep(ArchiveRole.editor))]


def _archive_out(archive: Archive, role: str, count: int) -> ArchiveOut:
    return ArchiveOut(
        id=archive.id,
        name=archive.name,
        description=archive.description,
        created_at=archive.created_at,
        role=role,
        case_count=count,
    )


def _case_out(case: Case, values: list[CaseValue]) -> CaseOut:
    return CaseOut(
        id=case.id,
        archive_id=case.archive_id,
        title=case.title,
        created_at=case.created_at,
        updated_at=case.updated_at,
        values=[ValueOut.model_validate(v) for v in values],
    )


@router.post("", status_code=status.HTTP_201_CREATED)
def create_archive(body: ArchiveCreate, principal: PrincipalDep, db: DbDep) -> ArchiveOut:
    """Create an archive; you become its editor."""
    archive = service.create_archive(db, principal, body.name, description=body.description)
    audit.record(db, principal, "archive.create", object_type=ARCHIVE, object_id=archive.id)
    return _archive_out(archive, ArchiveRole.editor, 0)


@router.get("")
def list_archives(principal: PrincipalDep, db: DbDep) -> list[ArchiveOut]:
    """The archives you have a role on (every archive for administrators)."""
    return [_archive_out(a, role, n) for a, role, n in service.list_archives(db, principal)]


@router.get("/{archive_id}")
def get_archive(loaded: ViewableArchive, db: DbDep) -> ArchiveOut:
    archive, role = loaded
    return _archive_out(archive, role, service.count_cases(db, archive.id))


@router.get("/{archive_id}/members")
def list_members(loaded: ViewableArchive, db: DbDep) -> list[MemberOut]:
    archive, _ = loaded
    return [
        MemberOut(user_id=user.id, username=user.username, role=role)
        for user, role in permissions.members(db, ARCHIVE, archive.id)
    ]


@router.put("/{archive_id}/members")
def set_member(
    body: MemberSet, loaded: EditableArchive, principal: PrincipalDep, db: DbDep
) -> MemberOut:
    """Give a user a role on the archive (or change it)."""
    archive, _ = loaded
    user = auth_service.get_user(db, body.username)
    service.set_member(db, archive.id, user, body.role)
    audit.record(
        db,
        principal,
        "archive.member.set",
        object_type=ARCHIVE,
        object_id=archive.id,
        detail={"username": user.username, "role": body.role},
    )
    return MemberOut(user_id=user.id, username=user.username, role=body.role)


@router.delete("/{archive_id}/members/{username}", status_code=status.HTTP_204_NO_CONTENT)
def remove_member(
    username: str, loaded: EditableArchive, principal: PrincipalDep, db: DbDep
) -> None:
    archive, _ = loaded
    user = auth_service.get_user(db, username)
    service.remove_member(db, archive.id, user)
    audit.record(
        db,
        principal,
        "archive.member.remove",
        object_type=ARCHIVE,
        object_id=archive.id,
        detail={"username": username},
    )


@router.get("/{archive_id}/cases")
def list_cases(
    loaded: ViewableArchive,
    principal: PrincipalDep,
    db: DbDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> CasePage:
    archive, _ = loaded
    total, rows = service.list_cases(db, archive.id, offset=offset, limit=limit)
    audit.record(
        db,
        principal,
        "archive.cases.read",
        object_type=ARCHIVE,
        object_id=archive.id,
        detail={"offset": offset, "limit": limit, "returned": len(rows)},
    )
    return CasePage(
        total=total, offset=offset, limit=limit, items=[_case_out(c, v) for c, v in rows]
    )


@router.post("/{archive_id}/cases", status_code=status.HTTP_201_CREATED)
def create_case(
    body: CaseCreate, loaded: UploadableArchive, principal: PrincipalDep, db: DbDep
) -> CaseOut:
    archive, _ = loaded
    case = service.create_case(db, archive.id, body.title)
    audit.record(db, principal, "case.create", object_type="case", object_id=case.id)
    return _case_out(case, [])


@router.get("/{archive_id}/cases/{case_id}")
def get_case(
    case_id: uuid.UUID, loaded: ViewableArchive, principal: PrincipalDep, db: DbDep
) -> CaseOut:
    archive, _ = loaded
    case = service.get_case(db, archive.id, case_id)
    audit.record(db, principal, "case.read", object_type="case", object_id=case.id)
    return _case_out(case, service.values_of(db, [case.id]).get(case.id, []))


@router.delete("/{archive_id}/cases/{case_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_case(
    case_id: uuid.UUID,
    loaded: EditableArchive,
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
) -> None:
    archive, _ = loaded
    case = service.get_case(db, archive.id, case_id)
    values_service.delete_case(db, store, case)
    audit.record(db, principal, "case.delete", object_type="case", object_id=case_id)


@router.put("/{archive_id}/cases/{case_id}/values/{interface}")
def set_value(
    case_id: uuid.UUID,
    interface: str,
    value: Annotated[ScalarValue, Body()],
    loaded: UploadableArchive,
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
) -> ValueOut:
    """Set a number, text, report or JSON value of a case."""
    archive, _ = loaded
    case = service.get_case(db, archive.id, case_id)
    row = values_service.set_scalar(db, store, case, interface, value.model_dump(mode="json"))
    audit.record(
        db,
        principal,
        "value.write",
        object_type="case",
        object_id=case.id,
        detail={"interface": interface, "kind": row.kind},
    )
    return ValueOut.model_validate(row)


@router.put("/{archive_id}/cases/{case_id}/files/{interface}")
def upload_value(
    case_id: uuid.UUID,
    interface: str,
    file: UploadFile,
    loaded: UploadableArchive,
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
) -> ValueOut:
    """Upload a file or image (MHA, NIfTI, TIFF…) as a value of a case (multipart `file`)."""
    archive, _ = loaded
    case = service.get_case(db, archive.id, case_id)
    if not file.filename:
        raise InvalidValue("the multipart part 'file' needs a filename")
    row = values_service.put_file(
        db,
        store,
        case,
        interface,
        filename=file.filename,
        data=file.file,
        content_type=file.content_type,
    )
    detail = {"interface": interface, "kind": row.kind, "size": row.size_bytes}
    audit.record(db, principal, "value.write", object_type="case", object_id=case.id, detail=detail)
    return ValueOut.model_validate(row)


@router.delete(
    "/{archive_id}/cases/{case_id}/values/{interface}", status_code=status.HTTP_204_NO_CONTENT
)
def delete_value(
    case_id: uuid.UUID,
    interface: str,
    loaded: UploadableArchive,
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
) -> None:
    archive, _ = loaded
    case = service.get_case(db, archive.id, case_id)
    values_service.delete_value(db, store, case, interface)
    audit.record(
        db,
        principal,
        "value.delete",
        object_type="case",
        object_id=case.id,
        detail={"interface": interface},
    )


@router.get("/{archive_id}/cases/{case_id}/values/{interface}/download", response_model=None)
def download_value(
    case_id: uuid.UUID,
    interface: str,
    request: Request,
    loaded: ViewableArchive,
    principal: PrincipalDep,
    db: DbDep,
    store: StoreDep,
    settings: SettingsDep,
    redirect: bool = True,
) -> RedirectResponse | DownloadLink:
    """A short-lived signed URL for a file value (a redirect, or JSON with `redirect=false`)."""
    archive, _ = loaded
    case = service.get_case(db, archive.id, case_id)
    row = values_service.get_value(db, case, interface)
    if not row.object_keys:
        raise InvalidValue(f"{interface!r} is a {row.kind} value; read it from the case JSON")
    filename = str(row.value.get("filename") or row.object_keys[0].rsplit("/", 1)[-1])
    url = store.signed_url(
        row.object_keys[0], expires_in=settings.signed_url_seconds, filename=filename
    )
    if url.startswith("/"):
        url = str(request.base_url).rstrip("/") + url
    audit.record(
        db,
        principal,
        "value.download",
        object_type="case",
        object_id=case.id,
        detail={"interface": interface},
    )
    if redirect:
        return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT)
    return DownloadLink(url=url, expires_in=settings.signed_url_seconds)


@router.get("/{archive_id}/deidentification")
def get_deidentification(loaded: ViewableArchive) -> dict[str, Any] | None:
    """The de-identification applied to DICOM stored into this archive (null: none)."""
    archive, _ = loaded
    return archive.deid_policy


@router.put("/{archive_id}/deidentification")
def set_deidentification(
    policy: Annotated[dict[str, Any], Body()],
    loaded: EditableArchive,
    principal: PrincipalDep,
    db: DbDep,
) -> dict[str, Any]:
    """De-identify DICOM on ingest by the PS3.15 basic profile, with these options.

    Options: retain_dates, shift_dates (dates moved back by a keyed number of days per
    patient, intervals kept; not with retain_dates), retain_uids, retain_device_identity,
    retain_patient_characteristics, retain_descriptors, clean_private, patient_id,
    patient_name. UIDs are remapped consistently per archive. What is already stored is
    not changed.
    """
    archive, _ = loaded
    try:
        parsed = DeidPolicy.from_json(policy)
    except DicomError as err:
        raise InvalidValue(err.message) from err
    archive.deid_policy = parsed.to_json()
    audit.record(
        db,
        principal,
        "archive.deidentification.set",
        object_type=ARCHIVE,
        object_id=archive.id,
        detail=archive.deid_policy,
    )
    return archive.deid_policy


@router.delete("/{archive_id}/deidentification", status_code=status.HTTP_204_NO_CONTENT)
def clear_deidentification(loaded: EditableArchive, principal: PrincipalDep, db: DbDep) -> None:
    archive, _ = loaded
    archive.deid_policy = None
    audit.record(
        db, principal, "archive.deidentification.clear", object_type=ARCHIVE, object_id=archive.id
    )
