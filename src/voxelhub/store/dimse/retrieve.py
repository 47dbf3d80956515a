"""What C-GET and C-MOVE send: the matching instances, rebuilt in a syntax the peer accepts."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from io import BytesIO

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID
from pynetdicom.presentation import PresentationContext
from sqlalchemy import select
from sqlalchemy.orm import Session, defer

from voxelhub.core.objects import ObjectStore
from voxelhub.dicom.join import join_instance
from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from voxelhub.dicom.syntax import can_serve_as
from voxelhub.store import qido
from voxelhub.store.attributes import INSTANCE_TAGS, SERIES_TAGS, STUDY_TAGS
from voxelhub.store.dimse.identifier import Identifier, check_retrieve
from voxelhub.store.imagesets import pixel_of, read_instance
from voxelhub.store.models import Instance, Series, Study

NO_TRANSFER_SYNTAX = "1.2.840.10008.1.1"  # the Verification SOP class
UNCOMPRESSED = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
_COLUMNS = ((STUDY_TAGS, Study), (SERIES_TAGS, Series), (INSTANCE_TAGS, Instance))


def matching_instances(db: Session, ident: Identifier, archive_id: uuid.UUID) -> list[Instance]:
    """The instances a retrieve identifier names, in study, series and instance order."""
    check_retrieve(ident)
    statement = (
        select(Instance)
        .join(Series, Series.id == Instance.series_id)
        .join(Study, Study.id == Series.study_id)
        .where(Instance.archive_id == archive_id)
        .options(defer(Instance.dataset_json))
    )
    for tag, (attr, value) in ident.filters.items():
        for columns, model in _COLUMNS:
            if tag in columns:
                column = getattr(model, columns[tag][2])
                # A retrieve names its entities exactly (PS3.4 C.4.2.2.1: Single Value and
                # List of UID Matching only): PatientID=* must not move the whole archive.
                condition = (
                    qido.match(column, attr, value, fuzzy=False)
                    if attr.vr == "UI"
                    else column == value
                )
                statement = statement.where(condition)
    statement = statement.order_by(
        Study.study_instance_uid, Series.series_number.nulls_last(), Series.series_instance_uid,
        Instance.instance_number.nulls_last(), Instance.sop_instance_uid,
    )  # fmt: skip
    return list(db.scalars(statement))


def accepted_syntaxes(contexts: Iterable[PresentationContext]) -> dict[str, set[str]]:
    """SOP class → transfer syntaxes the peer accepted for receiving it from us."""
    accepted: dict[str, set[str]] = {}
    for cx in contexts:
        if cx.as_scu and cx.transfer_syntax:
            accepted.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
    return accepted


def target_syntax(instance: Instance, accepted: Collection[str]) -> str | None:
    """The syntax to send in, or None when the peer accepted none that fits.

    Preferred: the frames as stored (no transcoding), then a syntax their codestreams are
    also valid in, then the syntax the instance arrived in, then uncompressed.
    """
    stored = instance.frames_transfer_syntax_uid
    if stored in accepted:
        return stored
    for syntax in sorted(accepted):
        if can_serve_as(stored, syntax):
            return syntax
    if instance.transfer_syntax_uid in accepted:
        return instance.transfer_syntax_uid
    if any(syntax in accepted for syntax in UNCOMPRESSED):
        # pynetdicom re-encodes explicit VR as implicit VR where only that was accepted.
        return EXPLICIT_VR_LITTLE_ENDIAN
    return None


def offers(instances: Iterable[Instance]) -> list[tuple[str, str]]:
    """(SOP class, transfer syntax) pairs to propose to a C-MOVE destination, best first."""
    pairs: list[tuple[str, str]] = []
    for instance in instances:
        sop_class = instance.sop_class_uid
        for syntax in (instance.frames_transfer_syntax_uid, instance.transfer_syntax_uid):
            if syntax not in UNCOMPRESSED:
                pairs.append((sop_class, syntax))
        pairs.extend((sop_class, syntax) for syntax in UNCOMPRESSED)
    return list(dict.fromkeys(pairs))


def instance_dataset(store: ObjectStore, instance: Instance, syntax: str) -> Dataset:
    """The instance rebuilt in `syntax`, read back lazily (pixel data stays encoded)."""
    header, frames = read_instance(store, instance)
    body = join_instance(
        header, frames, instance.frames_transfer_syntax_uid,
        target_transfer_syntax=syntax, pixel=pixel_of(instance),
    )  # fmt: skip
    return dcmread(BytesIO(body))


def unsendable(instance: Instance) -> Dataset:
    """A stand-in that pynetdicom counts as a failed sub-operation without sending anything.

    pynetdicom only counts failures of datasets it tried to send; a file meta transfer
    syntax that is no transfer syntax makes the attempt fail before any byte is sent.
    """
    ds = Dataset()
    ds.SOPClassUID = instance.sop_class_uid
    ds.SOPInstanceUID = instance.sop_instance_uid
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(NO_TRANSFER_SYNTAX)
    return ds
