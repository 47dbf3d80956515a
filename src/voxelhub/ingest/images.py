"""Research images of an upload (NIfTI, MetaImage, NRRD, TIFF) as case values. Flushes only.

Each image becomes the `image` value of a case titled by its path without the extension
(`sub-01/T1w.nii.gz` → case `sub-01/T1w`). NIfTI, NRRD and .mhd+data become one
compressed .mha (what the ML side reads), a NIfTI placed by the transform its header
check chose (`formats.nifti`); .mha and TIFF are kept as they came. The same
image sent again is reported as a duplicate and not stored twice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import uuid
from pathlib import Path

import SimpleITK
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from voxelhub.archives import values_service
from voxelhub.core.errors import VoxelhubError
from voxelhub.core.objects import ObjectStore
from voxelhub.ingest import cases
from voxelhub.ingest.errors import IngestError
from voxelhub.ingest.extract import Member
from voxelhub.ingest.formats import nifti
from voxelhub.ingest.formats.base import Recognition
from voxelhub.ingest.formats.itk import with_suffix
from voxelhub.ingest.schemas import FileReport

logger = logging.getLogger(__name__)

INTERFACE = "image"
_SUFFIXES = re.compile(r"\.(nii\.gz|nii|mha|mhd|nrrd|tiff?)$", re.IGNORECASE)
_READ_SUFFIX = {"nifti": (".nii", ".nii.gz"), "nrrd": (".nrrd",), "metaimage": (".mha", ".mhd")}
_TIFF_TYPE = "image/tiff"
_MHA_TYPE = "application/octet-stream"


def image_title(path: str) -> str:
    """The case title for an image: its path without the image extension."""
    return _SUFFIXES.sub("", path) or path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _is_gzip(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(2) == b"\x1f\x8b"


def _short(err: Exception) -> str:
    """The message of an error; ITK's span many lines, of which the last says what failed."""
    if isinstance(err, VoxelhubError):
        return err.message
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"


def _read_image(path: Path, recognition: Recognition) -> SimpleITK.Image:
    """The whole image, which also proves that every voxel the header declares is there."""
    suffixes = _READ_SUFFIX[str(recognition.format)]
    if recognition.format == "nifti" and _is_gzip(path):
        suffixes = (".nii.gz",)
    with with_suffix(path, suffixes) as named:
        try:
            return SimpleITK.ReadImage(str(named))
        except RuntimeError as err:
            if recognition.format != "metaimage":
                raise
            # MetaIO reports a short read as "No such file or directory".
            data = recognition.details.get("data_file")
            where = f"its data file {data}" if data else "the file"
            raise IngestError(
                f"the voxel data could not be read: {where} holds fewer bytes than the header "
                "declares or is corrupt (cut short on the way?); upload it again"
            ) from err


def _as_stored_file(member: Member, recognition: Recognition, workdir: Path) -> tuple[Path, str]:
    """The file to store and its content type: the original, or an MHA converted from it."""
    stem = Path(image_title(member.path)).name or "image"
    if recognition.format == "tiff":
        return member.local, _TIFF_TYPE
    image = _read_image(member.local, recognition)
    if recognition.format == "nifti":
        image = nifti.place(image, recognition.details)
    if recognition.format == "metaimage" and "data_file" not in recognition.details:
        return member.local, _MHA_TYPE
    # NIfTI/NRRD header fields MHA cannot hold would only print warnings.
    for key in image.GetMetaDataKeys():  # type: ignore[no-untyped-call]
        image.EraseMetaData(key)  # type: ignore[no-untyped-call]
    target = workdir / f"{stem}.mha"
    SimpleITK.WriteImage(image, str(target), useCompression=True)
    return target, _MHA_TYPE


def _filename(member: Member, stored: Path, recognition: Recognition) -> str:
    stem = Path(image_title(member.path)).name or "image"
    if recognition.format == "tiff":
        return stem + (".tiff" if member.path.lower().endswith(".tiff") else ".tif")
    return stored.name if stored.suffix == ".mha" else f"{stem}.mha"


def _put_once(
    db: Session,
    store: ObjectStore,
    base: FileReport,
    *,
    archive_id: uuid.UUID,
    interface: str,
    source: Path,
    filename: str,
    content_type: str,
    what: str,
    key_prefix: str | None = None,
) -> FileReport:
    """Store `source` as the `interface` file value of its case, unless that value already
    holds the same bytes (then a duplicate is reported). Raises what storing raises."""
    digest = _sha256(source)
    with db.begin_nested():
        case = cases.case_titled(db, archive_id, image_title(base.path))
        current = cases.value_at(db, case, interface)
        if current is not None and current.value.get("sha256") == digest:
            outcome, reason, value_id = "duplicate", f"this {what} is stored already", current.id
        else:
            with source.open("rb") as data:
                row = values_service.put_file(
                    db,
                    store,
                    case,
                    interface,
                    filename=filename,
                    data=data,
                    content_type=content_type,
                    **({} if key_prefix is None else {"key_prefix": key_prefix}),
                )
            outcome, reason, value_id = "stored", None, row.id
    update = {"outcome": outcome, "case_id": case.id, "interface": interface, "value_id": value_id}
    return base.model_copy(update=update if reason is None else {**update, "reason": reason})


KSPACE_INTERFACE = "kspace"


def store_raw(
    db: Session, store: ObjectStore, *, archive_id: uuid.UUID, member: Member, interface: str
) -> FileReport:
    """Store raw data (MRI k-space), losslessly recompressed into the raw-data tier (the
    settings `raw_data_prefix` and `raw_data_compression`), as the `interface` file value of
    its case."""
    from voxelhub.core.settings import get_settings
    from voxelhub.recon.errors import ReconError
    from voxelhub.recon.repack import repack

    base = FileReport(path=member.path, format="kspace", outcome="stored")
    settings = get_settings()
    # Never beside the source: that may be a watched drop folder.
    handle, name = tempfile.mkstemp(prefix="voxelhub-raw-", suffix=".h5")
    os.close(handle)
    packed = Path(name)
    try:
        repack(member.local, packed, codec=settings.raw_data_compression)
        return _put_once(
            db,
            store,
            base,
            archive_id=archive_id,
            interface=interface,
            source=packed,
            filename=Path(member.path).name,
            content_type="application/x-hdf5",
            what="file",
            key_prefix=settings.raw_data_prefix,
        )
    except (OSError, VoxelhubError, SQLAlchemyError, ReconError) as err:
        logger.warning("storing raw data %s failed", member.path, exc_info=True)
        return base.model_copy(update={"outcome": "rejected", "reason": _short(err)})
    finally:
        packed.unlink(missing_ok=True)


def store_image(
    db: Session,
    store: ObjectStore,
    *,
    archive_id: uuid.UUID,
    member: Member,
    recognition: Recognition,
    workdir: Path,
) -> FileReport:
    """Store one recognised, valid research image as the `image` value of its case."""
    base = FileReport(
        path=member.path,
        format=recognition.format,
        outcome="stored",
        warnings=list(recognition.details.get("warnings", ())),
    )
    try:
        source, content_type = _as_stored_file(member, recognition, workdir)
        return _put_once(
            db,
            store,
            base,
            archive_id=archive_id,
            interface=INTERFACE,
            source=source,
            filename=_filename(member, source, recognition),
            content_type=content_type,
            what="image",
        )
    except (RuntimeError, OSError, VoxelhubError, SQLAlchemyError) as err:
        logger.warning("storing image %s failed", member.path, exc_info=True)
        return base.model_copy(update={"outcome": "rejected", "reason": _short(err)})
