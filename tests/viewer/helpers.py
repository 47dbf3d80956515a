"""A ball imaged by a gantry-tilted CT, and where the viewer's regular grid places its pixels."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from tests.dicom.helpers import ball, sampled_series
from voxelhub.dicom.synthetic import AIR, BONE

# A ball 7 mm in radius, imaged with the gantry tilted 20 degrees about x: 13 slices of
# 32 x 32 one-millimetre pixels, the table moving 2.5 mm along z from one to the next.
CENTRE, RADIUS = (1.0, -2.0, 16.0), 7.0
SLICES, SIZE, TABLE_MM, DEGREES = 13, 32, 2.5, 20.0
CORNER = np.array([-16.0, -16.0, 0.0])
_COSINE, _SINE = float(np.cos(np.radians(DEGREES))), float(np.sin(np.radians(DEGREES)))
ORIENTATION = (1.0, 0.0, 0.0, 0.0, _COSINE, _SINE)
ROW_COSINE, COLUMN_COSINE = np.array(ORIENTATION[:3]), np.array(ORIENTATION[3:])
NORMAL = np.cross(ROW_COSINE, COLUMN_COSINE)
# Slices lie 2.5 mm * cos(20°) apart along their normal, each 2.5 mm * sin(20°) = 0.86 mm
# further along its columns than the one before: the grid reformats are cut from is the
# slices' 32 rows widened by the 12 slices' shifts, ceil(12 * 0.86) = 11 rows.
SLICE_MM = TABLE_MM * _COSINE
GRID_ROWS = 43
# The column of the slices (and of the grid) through the ball's centre: x = -16 + 17.
CENTRE_COLUMN = 17


def tilted_ball() -> list[Dataset]:
    """The ball as the tilted CT images it, slice k at the table position 2.5 k mm."""
    positions = [np.add(CORNER, (0.0, 0.0, TABLE_MM * k)) for k in range(SLICES)]
    return sampled_series(ball(CENTRE, RADIUS), orientation=ORIENTATION, positions=positions,
                          size=SIZE, spacing_mm=1.0)  # fmt: skip


def grid_position(k: npt.ArrayLike, row: npt.ArrayLike, column: npt.ArrayLike) -> npt.NDArray[Any]:
    """Where voxel (k, row, column) of the regular grid lies (LPS, mm).

    The grid's axes are the slices' row and column cosines and their normal; its first
    voxel is the first slice's first pixel (the slices shift towards later rows).
    """
    k, row, column = (np.asarray(v, dtype=np.float64)[..., np.newaxis] for v in (k, row, column))
    return CORNER + k * SLICE_MM * NORMAL + row * COLUMN_COSINE + column * ROW_COSINE


def assert_shows_the_ball(
    values: npt.NDArray[Any], positions: npt.NDArray[np.float64], *, reach: float
) -> None:
    """Each pixel whose point lies clear of the ball's surface by more than `reach` mm
    shows what lies there: bone inside, air outside."""
    distance = np.linalg.norm(positions - np.array(CENTRE), axis=-1)
    inside, outside = distance < RADIUS - reach, distance > RADIUS + reach
    assert np.count_nonzero(inside) > 20
    assert np.allclose(values[inside], BONE, atol=0.5), values[inside]
    assert np.allclose(values[outside], AIR, atol=0.5), values[outside]
