"""Grids of SimpleITK images: comparing, co-registering and resampling them.

Everything here works in physical space (LPS millimetres), so images of one patient taken
with different fields of view, spacings or orientations land on one reference grid.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import SimpleITK

from voxelhub.segment.errors import SegmentError

_TOLERANCE = 1e-4
_MIN_OVERLAP = 0.05


def same_grid(image: SimpleITK.Image, reference: SimpleITK.Image) -> bool:
    """Whether two images have the same size, spacing, origin and direction."""
    return bool(
        image.GetSize() == reference.GetSize()  # type: ignore[no-untyped-call]
        and np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=_TOLERANCE)  # type: ignore[no-untyped-call]
        and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=_TOLERANCE)  # type: ignore[no-untyped-call]
        and np.allclose(image.GetDirection(), reference.GetDirection(), atol=_TOLERANCE)  # type: ignore[no-untyped-call]
    )


def _corners(image: SimpleITK.Image) -> npt.NDArray[np.float64]:
    size = image.GetSize()  # type: ignore[no-untyped-call]
    return np.array(
        [
            image.TransformContinuousIndexToPhysicalPoint([c - 0.5 for c in corner])  # type: ignore[no-untyped-call]
            for corner in itertools.product(*[(0.0, float(n)) for n in size])
        ]
    )


def overlap_fraction(image: SimpleITK.Image, reference: SimpleITK.Image) -> float:
    """The fraction of the reference's bounding box (LPS axes) that `image` also covers."""
    a, b = _corners(image), _corners(reference)
    low = np.maximum(a.min(axis=0), b.min(axis=0))
    high = np.minimum(a.max(axis=0), b.max(axis=0))
    shared = float(np.prod(np.clip(high - low, 0.0, None)))
    whole = float(np.prod(b.max(axis=0) - b.min(axis=0)))
    return shared / whole if whole > 0 else 0.0


def resample_like(
    image: SimpleITK.Image,
    reference: SimpleITK.Image,
    *,
    interpolator: int = SimpleITK.sitkLinear,
    default: float = 0.0,
) -> SimpleITK.Image:
    """`image` resampled onto the grid of `reference` (identity transform)."""
    if same_grid(image, reference):
        return image
    identity = SimpleITK.Transform()  # type: ignore[no-untyped-call]
    pixel = image.GetPixelID()  # type: ignore[no-untyped-call]
    return SimpleITK.Resample(image, reference, identity, interpolator, default, pixel)


def coregister(images: Sequence[SimpleITK.Image], names: Sequence[str]) -> list[SimpleITK.Image]:
    """All images on the first one's grid; refuses images that do not overlap it.

    The images must already share one patient coordinate system (one frame of reference);
    nothing is registered by content, only resampled by geometry.
    """
    reference = images[0]
    aligned = [SimpleITK.Cast(reference, SimpleITK.sitkFloat32)]  # type: ignore[no-untyped-call]
    for image, name in zip(images[1:], names[1:], strict=True):
        fraction = overlap_fraction(image, reference)
        if fraction < _MIN_OVERLAP:
            raise SegmentError(
                f"covers {fraction:.0%} of the region of {names[0]!r}; the inputs of one "
                "case must show the same anatomy in one frame of reference. Check that the "
                "series belong to the same study and session.",
                source=name,
            )
        aligned.append(resample_like(SimpleITK.Cast(image, SimpleITK.sitkFloat32), reference))  # type: ignore[no-untyped-call]
    return aligned


def reorient(image: SimpleITK.Image, axcodes: str | None) -> SimpleITK.Image:
    """`image` with its axes permuted/flipped to point towards `axcodes` (nibabel's sense).

    "RAS" means the array's first axis increases towards the patient's right, as in
    MONAI's `Orientationd(axcodes="RAS")`; SimpleITK names that orientation "RAS" too.
    """
    if not axcodes:
        return image
    return SimpleITK.DICOMOrient(image, axcodes.upper())  # type: ignore[no-any-return, no-untyped-call]


def resample_to_spacing(
    image: SimpleITK.Image,
    spacing: Sequence[float] | None,
    *,
    interpolator: int = SimpleITK.sitkLinear,
) -> SimpleITK.Image:
    """`image` on a grid with `spacing` (x, y, z mm) covering the same region."""
    if spacing is None or np.allclose(image.GetSpacing(), spacing, atol=_TOLERANCE):  # type: ignore[no-untyped-call]
        return image
    old_size, old_spacing = np.array(image.GetSize()), np.array(image.GetSpacing())  # type: ignore[no-untyped-call]
    new_spacing = np.array([float(s) for s in spacing])
    new_size = np.maximum(np.round(old_size * old_spacing / new_spacing), 1).astype(int)
    # Keep the grid's centre where it was, like MONAI's Spacingd does.
    direction = np.array(image.GetDirection()).reshape(3, 3)  # type: ignore[no-untyped-call]
    centre = np.array(image.GetOrigin()) + direction @ (old_spacing * (old_size - 1) / 2.0)  # type: ignore[no-untyped-call]
    origin = centre - direction @ (new_spacing * (new_size - 1) / 2.0)
    return SimpleITK.Resample(
        image,
        [int(n) for n in new_size],
        SimpleITK.Transform(),  # type: ignore[no-untyped-call]
        interpolator,
        [float(v) for v in origin],
        [float(v) for v in new_spacing],
        image.GetDirection(),  # type: ignore[no-untyped-call]
        0.0,
        image.GetPixelID(),  # type: ignore[no-untyped-call]
    )


def to_channels_xyz(images: Sequence[SimpleITK.Image]) -> npt.NDArray[np.float32]:
    """(C, X, Y, Z) float32 array of images on one grid, MONAI's layout."""
    return np.stack(
        [SimpleITK.GetArrayViewFromImage(image).transpose(2, 1, 0) for image in images]
    ).astype(np.float32)


def image_from_xyz(array: npt.NDArray[np.generic], grid: SimpleITK.Image) -> SimpleITK.Image:
    """A SimpleITK image of an (X, Y, Z) array placed on `grid`."""
    image = SimpleITK.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.CopyInformation(grid)  # type: ignore[no-untyped-call]
    return image
