"""What every DIMSE handler shares: who the peer is, status datasets, the audit record."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.events import Event
from sqlalchemy.orm import Session

from voxelhub.auth import audit

ERROR_COMMENT_LENGTH = 64  # (0000,0902) Error Comment is LO

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_WITH_WARNING = 0xFF01  # optional keys were not supported for matching
CANCELLED = 0xFE00
OUT_OF_RESOURCES = 0xA700
SUBOPERATIONS_IMPOSSIBLE = 0xA702  # C-GET/MOVE: out of resources, unable to perform sub-ops
MOVE_DESTINATION_UNKNOWN = 0xA801
DATASET_DOES_NOT_MATCH = 0xA900  # C-FIND: identifier does not match the SOP class
CANNOT_UNDERSTAND = 0xC000  # C-FIND/GET/MOVE: unable to process


@dataclass(frozen=True)
class Peer:
    """The calling AE of an association."""

    calling_ae: str
    address: str

    @classmethod
    def of(cls, event: Event) -> Peer:
        return cls.of_association(event.assoc)

    @classmethod
    def of_association(cls, assoc: Association) -> Peer:
        requestor = assoc.requestor
        return cls(str(requestor.ae_title).strip(), f"{requestor.address}:{requestor.port}")


def status(code: int, comment: str, *, offending: str | None = None) -> Dataset:
    """A status dataset with an Error Comment (truncated to what LO holds) and, where one
    key of the request is at fault, its tag (8 hex digits) as the Offending Element."""
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:ERROR_COMMENT_LENGTH]
    if offending is not None:
        ds.OffendingElement = [int(offending, 16)]
    return ds


def record(db: Session, action: str, archive_id: uuid.UUID, peer: Peer, **detail: Any) -> None:
    """An audit event of the system (DIMSE peers are not users) on the archive."""
    audit.record(
        db, None, action, object_type="archive", object_id=archive_id,
        detail={"calling_ae": peer.calling_ae, "address": peer.address, **detail},
    )  # fmt: skip
