"""Where a NIfTI-1 image lies: its sform or its qform, chosen as the standard says.

A NIfTI-1 header can place the image twice: the qform (a rotation, voxel sizes and an
offset, `qform_code` > 0) and the sform (a general affine, `sform_code` > 0). nifti1.h
means the qform for where the scanner put the voxels and the sform, "if present", for
their place in some standard space, and names no winner; so when the two disagree,
readers disagree. nibabel (`affine`, `get_best_affine`) and FSL use the sform; ITK 5.4
(SimpleITK) uses the sform only when its code is 1 (scanner) or there is no qform, else
the qform, and takes the voxel sizes from pixdim even when the sform's differ. voxelhub
decides for itself, the same way whatever reads the file, as nibabel does:

- the sform when `sform_code` > 0;
- else the qform when `qform_code` > 0;
- else neither (`transform` "none", with a warning): voxel sizes from pixdim, at the
  origin along x, y and z, as ITK reads it.

A sform with shear (axes not at right angles) cannot be a volume's direction: then the qform
is used, with a warning, or the image is refused when it has none. A warning also names both
transforms when both are set and place the image more than `AGREEMENT_MM` apart.

>>> import struct
>>> header = bytearray(348)
>>> struct.pack_into("<i", header, 0, 348)
>>> struct.pack_into("<8f", header, 76, 1.0, 2.0, 2.0, 2.0, 1, 1, 1, 1)
>>> struct.pack_into("<2h", header, 252, 0, 1)  # no qform, a scanner sform
>>> struct.pack_into("<12f", header, 280, 2, 0, 0, 10, 0, 2, 0, 20, 0, 0, 2, 30)
>>> found = placement(bytes(header))
>>> found.transform, found.spacing, found.origin
('sform', (2.0, 2.0, 2.0), (-10.0, -20.0, 30.0))
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

# Both transforms may place every corner of the image this far apart (float32 rounding).
AGREEMENT_MM = 0.01
# Axes more than this far from a right angle (as the cosine between them) are shear.
_SHEAR_COSINE = 1e-4
_CODES = {1: "scanner", 2: "aligned", 3: "Talairach", 4: "MNI 152", 5: "template"}
# NIfTI is RAS+, ITK (and DICOM) LPS+.
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])

Transform = Literal["sform", "qform", "none"]


@dataclass(frozen=True)
class Placement:
    """Where the image lies in ITK's terms (LPS, mm), which transform said so, and what a
    person should know about the choice.

    `direction` is row-major, its columns the directions of the first three voxel axes.
    """

    transform: Transform
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Header:
    dims: tuple[int, int, int]
    pixdim: tuple[float, ...]
    qform_code: int
    sform_code: int
    quatern: tuple[float, float, float]
    qoffset: tuple[float, float, float]
    srows: tuple[float, ...]


def _parsed(header: bytes) -> _Header:
    order = "<" if int.from_bytes(header[0:4], "little") == 348 else ">"
    dims = struct.unpack_from(f"{order}8h", header, 40)
    return _Header(
        dims=tuple(max(int(d), 1) for d in dims[1:4]),  # type: ignore[arg-type]
        pixdim=struct.unpack_from(f"{order}8f", header, 76),
        qform_code=int(struct.unpack_from(f"{order}h", header, 252)[0]),
        sform_code=int(struct.unpack_from(f"{order}h", header, 254)[0]),
        quatern=struct.unpack_from(f"{order}3f", header, 256),
        qoffset=struct.unpack_from(f"{order}3f", header, 268),
        srows=struct.unpack_from(f"{order}12f", header, 280),
    )


def placement(header: bytes) -> Placement | str:
    """Where the NIfTI-1 `header` (its first 348 bytes) places the image, or why it cannot."""
    parsed = _parsed(header)
    qform = _qform(parsed) if parsed.qform_code > 0 else None
    sform = np.array(parsed.srows, np.float64).reshape(3, 4) if parsed.sform_code > 0 else None
    if qform is not None and not np.all(np.isfinite(qform)):
        if sform is None:
            return f"the qform ({_code(parsed.qform_code)}) holds values that are not numbers"
        qform = None  # the sform places the image; nothing to compare it with
    if sform is not None and (problem := _unusable(sform)):
        what = f"the sform ({_code(parsed.sform_code)}) {problem}"
        if qform is None:
            return (
                f"{what}, and there is no usable qform to use instead; save the image with a "
                "sform that is a rotation, voxel sizes and an offset (resample a sheared one, "
                "for example with FSL's flirt -applyxfm) and upload it again"
            )
        return _placed("qform", qform, warnings=(f"{what}; the qform was used instead",))
    if sform is not None:
        warnings: tuple[str, ...] = ()
        if qform is not None and (apart := _distance(qform, sform, parsed.dims)) > AGREEMENT_MM:
            warnings = (
                f"the sform ({_code(parsed.sform_code)}) and the qform "
                f"({_code(parsed.qform_code)}) place the image up to {apart:.2f} mm apart; "
                "the sform was used, as nibabel and FSL do (readers that take the qform, "
                "as ITK does unless the sform code is 1, place it differently)",
            )
        return _placed("sform", sform, warnings=warnings)
    if qform is not None:
        return _placed("qform", qform)
    return _unplaced(parsed)


def _unplaced(parsed: _Header) -> Placement:
    """Neither transform set: ITK's reading, axes along x, y, z from the origin (nibabel
    flips x and centres the image)."""
    spacing = np.diag([_size(v) for v in parsed.pixdim[1:4]])
    return _placed(
        "none",
        np.column_stack([spacing, np.zeros(3)]),
        warnings=(
            "the header sets neither a qform nor an sform (both codes 0), so it does not say "
            "where the image lies; it was placed at the origin along the x, y and z axes, as "
            "ITK reads it (nibabel places it differently)",
        ),
        lps=True,
    )


def _code(code: int) -> str:
    return f"code {code}, {_CODES.get(code, 'unknown')}"


def _size(pixdim: float) -> float:
    # nifti1_io reads a voxel size that is not positive as 1 (its qform would be singular).
    return float(pixdim) if pixdim > 0 else 1.0


def _qform(header: _Header) -> npt.NDArray[np.float64]:
    """The 3x4 RAS affine of the qform (nifti1.h, method 2)."""
    b, c, d = (float(v) for v in header.quatern)
    a = math.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    rotation = np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b],
        ]
    )
    qfac = -1.0 if header.pixdim[0] < 0 else 1.0
    sizes = [_size(v) for v in header.pixdim[1:4]]
    linear = rotation @ np.diag([sizes[0], sizes[1], qfac * sizes[2]])
    return np.column_stack([linear, np.array(header.qoffset, np.float64)])


def _unusable(affine: npt.NDArray[np.float64]) -> str | None:
    """Why the affine cannot be a volume's spacing, direction and origin, if it cannot."""
    if not np.all(np.isfinite(affine)):
        return "holds values that are not numbers, which no volume can be placed by"
    norms = np.linalg.norm(affine[:, :3], axis=0)
    if np.any(norms == 0):
        return "is singular (an axis of length 0), which no volume can be placed by"
    axes = affine[:, :3] / norms
    cosine = float(np.abs(axes.T @ axes - np.eye(3)).max())
    if cosine <= _SHEAR_COSINE:
        return None
    degrees = 90.0 - math.degrees(math.acos(min(1.0, cosine)))
    return (
        f"has shear (axes {degrees:.2f} degrees from square), which a volume's direction "
        "cannot hold"
    )


def _distance(
    one: npt.NDArray[np.float64], other: npt.NDArray[np.float64], dims: tuple[int, int, int]
) -> float:
    """The farthest apart the two affines put any corner voxel of the image (mm)."""
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in dims], indexing="ij")).reshape(3, -1)
    points = np.vstack([corners, np.ones(corners.shape[1])])
    return float(np.linalg.norm((one - other) @ points, axis=0).max())


def _placed(
    transform: Transform,
    affine: npt.NDArray[np.float64],
    *,
    warnings: tuple[str, ...] = (),
    lps: bool = False,
) -> Placement:
    lps_affine = affine if lps else _RAS_TO_LPS @ affine
    spacing = np.linalg.norm(lps_affine[:, :3], axis=0)
    direction = lps_affine[:, :3] / spacing
    return Placement(
        transform=transform,
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        origin=(float(lps_affine[0, 3]), float(lps_affine[1, 3]), float(lps_affine[2, 3])),
        direction=tuple(float(v) for v in direction.ravel()),
        warnings=warnings,
    )
