"""Segmentation metrics in physical units: Dice, IoU, HD95 and average surface distance.

Arrays are (z, y, x) as SimpleITK gives them; `spacing` is (x, y, z) millimetres as
SimpleITK's `GetSpacing()`. Surfaces are the mask voxels with a face-neighbour outside
the mask; distances are Euclidean between surface voxel centres (scipy's exact distance
transform with the voxel spacing).

Empty masks are handled explicitly: both empty → Dice 1, IoU 1, distances 0; one empty →
Dice 0, IoU 0 and the distances are undefined (None).

>>> a = np.zeros((1, 1, 10), dtype=bool); a[0, 0, 2] = True
>>> b = np.zeros_like(a); b[0, 0, 5] = True
>>> evaluate(a, b, spacing=(2.0, 1.0, 1.0))["hd95_mm"]
6.0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt
from scipy import ndimage

Mask = npt.NDArray[np.bool_]


def dice(prediction: Mask, truth: Mask) -> float:
    """2|A∩B| / (|A|+|B|); 1 when both are empty."""
    total = int(prediction.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * int(np.sum(prediction & truth)) / total


def iou(prediction: Mask, truth: Mask) -> float:
    """Intersection over union; 1 when both are empty."""
    union = int(np.sum(prediction | truth))
    return 1.0 if union == 0 else int(np.sum(prediction & truth)) / union


def surface(mask: Mask) -> Mask:
    """The voxels of `mask` with a face-neighbour outside it (the volume's edge is outside)."""
    padded = np.pad(mask, 1)
    inner = ndimage.binary_erosion(padded, structure=ndimage.generate_binary_structure(3, 1))
    return np.asarray((padded & ~inner)[1:-1, 1:-1, 1:-1])


def surface_distances(
    source: Mask, target: Mask, spacing: Sequence[float]
) -> npt.NDArray[np.float64]:
    """Distance (mm) from every surface voxel of `source` to the surface of `target`."""
    sampling = tuple(float(s) for s in reversed(spacing))
    to_target = ndimage.distance_transform_edt(~surface(target), sampling=sampling)
    return np.asarray(to_target[surface(source)], dtype=np.float64)


def evaluate(
    prediction: npt.NDArray[np.generic],
    truth: npt.NDArray[np.generic],
    spacing: Sequence[float],
) -> dict[str, float | None]:
    """Dice, IoU, HD95 (mm) and ASSD (mm) of two binary masks (non-zero = inside).

    HD95 is the larger of the two directed 95th percentiles of surface distances (as
    MONAI's `compute_hausdorff_distance(percentile=95)`); ASSD averages all surface
    distances of both directions.
    """
    a, b = np.asarray(prediction) != 0, np.asarray(truth) != 0
    if a.shape != b.shape:
        raise ValueError(f"prediction {a.shape} and truth {b.shape} differ in shape.")
    if len(spacing) != a.ndim:
        raise ValueError(f"spacing {tuple(spacing)} needs one value per axis ({a.ndim}).")
    result: dict[str, float | None] = {"dice": dice(a, b), "iou": iou(a, b)}
    if not a.any() and not b.any():
        return {**result, "hd95_mm": 0.0, "assd_mm": 0.0}
    if not a.any() or not b.any():
        return {**result, "hd95_mm": None, "assd_mm": None}
    forward, backward = surface_distances(a, b, spacing), surface_distances(b, a, spacing)
    hd95 = max(float(np.percentile(forward, 95)), float(np.percentile(backward, 95)))
    assd = float((forward.sum() + backward.sum()) / (forward.size + backward.size))
    return {**result, "hd95_mm": hd95, "assd_mm": assd}


def evaluate_labels(
    prediction: npt.NDArray[np.integer],
    truth: npt.NDArray[np.integer],
    spacing: Sequence[float],
    labels: Iterable[int] | Mapping[int, str],
) -> dict[str, dict[str, float | None]]:
    """`evaluate` per label of two label maps, keyed by label name (or number)."""
    names = labels if isinstance(labels, Mapping) else {int(v): str(v) for v in labels}
    return {
        name: evaluate(prediction == value, truth == value, spacing)
        for value, name in names.items()
    }
