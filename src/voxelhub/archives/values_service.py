"""Setting, reading and removing the typed values of a case. Flushes, never commits.

File bytes are written to the object store under a fresh key before the row is flushed;
the object a replaced or deleted value pointed to is removed only after the commit, so a
failed request never loses what was stored before.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
import uuid
from typing import BinaryIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from voxelhub.archives.errors import InvalidValue, ValueNotFound
from voxelhub.archives.models import Case, CaseValue
from voxelhub.archives.values import (
    FILE_KINDS,
    FileValue,
    ImageValue,
    ValueKind,
    as_stored,
    kind_for_filename,
)
from voxelhub.core.db import after_commit, utcnow
from voxelhub.core.objects import ObjectStore

INTERFACE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}$")
_FILENAME_BAD = re.compile(r"[^A-Za-z0-9._ -]+")


def check_interface(interface: str) -> str:
    if not INTERFACE.match(interface):
        raise InvalidValue(
            f"{interface!r} is not a valid interface name: use lower-case letters, digits, "
            "'.', '_' and '-', starting with a letter or digit (e.g. 'ct-image')"
        )
    return interface


def safe_filename(filename: str) -> str:
    """The last path component, with characters outside a portable set replaced."""
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].strip() or "file"
    return _FILENAME_BAD.sub("_", base)[:200]


def _delete_after_commit(db: Session, store: ObjectStore, keys: list[str]) -> None:
    if not keys:
        return

    def remove() -> None:
        for key in keys:
            store.delete(key)

    after_commit(db, remove)


def _replace(
    db: Session, store: ObjectStore, case: Case, interface: str, new: CaseValue
) -> CaseValue:
    # Writers of one case take turns (two jobs writing the same output would both see the
    # old row, both delete it, and one insert would fail).
    db.execute(select(Case.id).where(Case.id == case.id).with_for_update())
    old = db.scalar(
        select(CaseValue).where(CaseValue.case_id == case.id, CaseValue.interface == interface)
    )
    if old is not None:
        stale = list(old.object_keys)
        db.delete(old)
        db.flush()
        _delete_after_commit(db, store, stale)
    db.add(new)
    case.updated_at = utcnow()
    db.flush()
    return new


def set_scalar(
    db: Session, store: ObjectStore, case: Case, interface: str, value: dict[str, object]
) -> CaseValue:
    """Set a number, text, report or JSON value (already validated by its schema)."""
    check_interface(interface)
    kind = ValueKind(str(value["kind"]))
    if kind in FILE_KINDS:
        raise InvalidValue(f"a {kind} value is uploaded as a file, not sent as JSON")
    row = CaseValue(case_id=case.id, interface=interface, kind=kind, value=value, object_keys=[])
    return _replace(db, store, case, interface, row)


def set_series(
    db: Session, store: ObjectStore, case: Case, interface: str, value: dict[str, object]
) -> CaseValue:
    """Name a DICOM series of the image store as a value of the case."""
    check_interface(interface)
    row = CaseValue(case_id=case.id, interface=interface, kind=ValueKind.dicom_series,
                    value=value, object_keys=[])  # fmt: skip
    return _replace(db, store, case, interface, row)


class _HashingReader:
    """Wraps a file object, hashing and counting what passes through."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        chunk = self._raw.read(n)
        self.sha256.update(chunk)
        self.size += len(chunk)
        return chunk


def put_file(
    db: Session,
    store: ObjectStore,
    case: Case,
    interface: str,
    *,
    filename: str,
    data: BinaryIO,
    content_type: str | None = None,
    key_prefix: str = "archives",
) -> CaseValue:
    """Store a file or image value, streaming its bytes into the object store (under
    `key_prefix`: another prefix puts the bytes in a tier of their own, e.g. raw data)."""
    check_interface(interface)
    name = safe_filename(filename)
    ctype = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    value_id = uuid.uuid4()
    key = f"{key_prefix}/{case.archive_id}/cases/{case.id}/{interface}/{value_id}/{name}"
    reader = _HashingReader(data)
    store.put(key, reader, content_type=ctype)  # type: ignore[arg-type]
    # Should the transaction fail, the object has no row; the orphan sweep removes it.
    kind = kind_for_filename(name)
    model = ImageValue if kind is ValueKind.image else FileValue
    described = model(filename=name, content_type=ctype, size=reader.size,
                      sha256=reader.sha256.hexdigest())  # fmt: skip
    row = CaseValue(
        id=value_id,
        case_id=case.id,
        interface=interface,
        kind=kind,
        value=as_stored(described),
        object_keys=[key],
        size_bytes=reader.size,
    )
    return _replace(db, store, case, interface, row)


def get_value(db: Session, case: Case, interface: str) -> CaseValue:
    row = db.scalar(
        select(CaseValue).where(CaseValue.case_id == case.id, CaseValue.interface == interface)
    )
    if row is None:
        raise ValueNotFound(f"case {case.title!r} has no value {interface!r}")
    return row


def delete_value(db: Session, store: ObjectStore, case: Case, interface: str) -> None:
    row = get_value(db, case, interface)
    keys = list(row.object_keys)
    db.delete(row)
    case.updated_at = utcnow()
    db.flush()
    _delete_after_commit(db, store, keys)


def delete_case(db: Session, store: ObjectStore, case: Case) -> None:
    prefix = f"archives/{case.archive_id}/cases/{case.id}/"
    elsewhere = [  # values kept under another prefix (the raw-data tier)
        key
        for keys in db.scalars(select(CaseValue.object_keys).where(CaseValue.case_id == case.id))
        for key in keys
        if not key.startswith(prefix)
    ]
    db.delete(case)
    db.flush()

    def remove() -> None:
        store.delete_prefix(prefix)
        for key in elsewhere:
            store.delete(key)

    after_commit(db, remove)
