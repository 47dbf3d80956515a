"""NIfTI-1 single files (.nii, and .nii.gz by the gzip magic); NIfTI-2 is recognised and
refused with the reason (ITK cannot read it).

ITK reads a NIfTI file cut short without complaint (the missing voxels become zeros), so
the check also counts the bytes of the data, decompressing a .nii.gz as it goes.

Where the image lies is decided here, not by ITK: the sform when set, else the qform (see
`nifti_transform`, which also says why). `inspect` puts the choice in the details
(`transform`, `spacing`, `origin`, `direction`, `warnings`) and `place` applies it to the
image ITK read.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK

from voxelhub.ingest.formats.base import Format, Recognition
from voxelhub.ingest.formats.itk import header_info, with_suffix
from voxelhub.ingest.formats.nifti_transform import placement

NAME = "nifti"
_GZIP = b"\x1f\x8b"
_N1_SIZE, _N2_SIZE = 348, 540
_N1_SINGLE, _N1_PAIR = b"n+1\0", b"ni1\0"
_N2_SINGLE, _N2_PAIR = b"n+2\0\r\n\x1a\n", b"ni2\0\r\n\x1a\n"


def _header(head: bytes) -> bytes:
    if not head.startswith(_GZIP):
        return head
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, _N2_SIZE)
    except zlib.error:
        return b""


def _sizeof_hdr(header: bytes) -> int:
    little = int.from_bytes(header[0:4], "little")
    return little if little in (_N1_SIZE, _N2_SIZE) else int.from_bytes(header[0:4], "big")


def _magic(header: bytes) -> bytes | None:
    size = _sizeof_hdr(header)
    if size == _N1_SIZE and len(header) >= _N1_SIZE:
        return header[344:348]
    if size == _N2_SIZE and len(header) >= 12:
        return header[4:12]
    return None


def _expected_bytes(header: bytes) -> int | None:
    """vox_offset plus the voxel bytes a NIfTI-1 header declares; None when unusable."""
    if _sizeof_hdr(header) != _N1_SIZE or len(header) < _N1_SIZE:
        return None
    order = "<" if int.from_bytes(header[0:4], "little") == _N1_SIZE else ">"
    dims = [int(v) for v in struct.unpack_from(f"{order}8h", header, 40)]
    bitpix = int(struct.unpack_from(f"{order}h", header, 72)[0])
    offset = int(struct.unpack_from(f"{order}f", header, 108)[0])
    if not 1 <= dims[0] <= 7 or bitpix <= 0 or bitpix % 8:
        return None
    voxels = 1
    for extent in dims[1 : dims[0] + 1]:
        voxels *= max(extent, 1)
    return max(offset, _N1_SIZE) + voxels * (bitpix // 8)


def _data_bytes(path: Path, *, compressed: bool) -> int:
    """The bytes of the file, after decompression; raises EOFError or OSError when cut."""
    if not compressed:
        return path.stat().st_size
    total = 0
    with gzip.open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            total += len(chunk)
    return total


def _truncation(path: Path, head: bytes) -> str | None:
    """Why the data of the file is incomplete, or None when every declared voxel is there."""
    compressed = head.startswith(_GZIP)
    try:
        found = _data_bytes(path, compressed=compressed)
    except (EOFError, OSError, zlib.error) as err:
        return f"the .nii.gz is truncated or corrupt ({err}); upload the file again"
    expected = _expected_bytes(_header(head))
    if expected is not None and found < expected:
        return (
            f"the file holds {found} bytes{' once decompressed' if compressed else ''} but its "
            f"header declares {expected}; the file was cut short, upload it again"
        )
    return None


def sniff(head: bytes) -> bool:
    return _magic(_header(head)) in (_N1_SINGLE, _N1_PAIR, _N2_SINGLE, _N2_PAIR)


def inspect(path: Path, head: bytes) -> Recognition:
    magic = _magic(_header(head))
    if magic in (_N1_PAIR, _N2_PAIR):
        return Recognition.bad(
            NAME, "a NIfTI .hdr/.img pair is not supported; save the image as one .nii file"
        )
    if magic == _N2_SINGLE:
        # ITK (5.4) has no NIfTI-2 reader; its own message names a temporary file.
        return Recognition.bad(
            NAME, "NIfTI-2 files cannot be read yet; save the image as NIfTI-1 (.nii or .nii.gz)"
        )
    return _inspect_nifti1(path, head)


def _inspect_nifti1(path: Path, head: bytes) -> Recognition:
    header = _whole_header(path, compressed=head.startswith(_GZIP))
    if len(header) < _N1_SIZE:
        return Recognition.bad(NAME, "the NIfTI header is cut short; upload the file again")
    placed = placement(header)
    if isinstance(placed, str):
        return Recognition.bad(NAME, placed)
    suffixes = (".nii.gz",) if head.startswith(_GZIP) else (".nii",)
    with with_suffix(path, suffixes) as named:
        found = header_info(NAME, named, image_io="NiftiImageIO")
    if found.ok and (problem := _truncation(path, head)):
        return Recognition.bad(NAME, problem)
    if not found.ok:
        return found
    return Recognition.good(
        NAME,
        **{**found.details, "spacing": [*placed.spacing, *found.details["spacing"][3:]]},
        transform=placed.transform,
        origin=list(placed.origin),
        direction=list(placed.direction),
        warnings=list(placed.warnings),
    )


def _whole_header(path: Path, *, compressed: bool) -> bytes:
    """The first 348 bytes of the (decompressed) file, fewer when it is shorter."""
    try:
        if compressed:
            with gzip.open(path, "rb") as stream:
                return stream.read(_N1_SIZE)
        with path.open("rb") as stream:
            return stream.read(_N1_SIZE)
    except (EOFError, OSError, zlib.error):
        return b""


def place(image: SimpleITK.Image, details: Mapping[str, Any]) -> SimpleITK.Image:
    """`image` as read by ITK, placed by the transform `inspect` chose (see
    `nifti_transform`); its fourth and later axes are kept as ITK read them."""
    dimension = int(image.GetDimension())  # type: ignore[no-untyped-call]
    if dimension < 3 or "origin" not in details:
        return image
    spacing = list(image.GetSpacing())  # type: ignore[no-untyped-call]
    origin = list(image.GetOrigin())  # type: ignore[no-untyped-call]
    direction = np.array(image.GetDirection(), np.float64).reshape(dimension, dimension)  # type: ignore[no-untyped-call]
    spacing[:3] = details["spacing"][:3]
    origin[:3] = details["origin"]
    direction[:3, :3] = np.array(details["direction"], np.float64).reshape(3, 3)
    image.SetSpacing(spacing)  # type: ignore[no-untyped-call]
    image.SetOrigin(origin)  # type: ignore[no-untyped-call]
    image.SetDirection([float(v) for v in direction.ravel()])  # type: ignore[no-untyped-call]
    return image


FORMAT = Format(NAME, sniff, inspect)
