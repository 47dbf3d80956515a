"""Which acquired frame each slice of a volume came from, and labels carried between the
volume's grid and those frames."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from tests.dicom.helpers import enhanced
from voxelhub.dicom import slices
from voxelhub.dicom.synthetic import ct_phantom, phantom_volume
from voxelhub.dicom.volume import series_volume, slice_sources


def test_the_examples_hold() -> None:
    assert doctest.testmod(slices).failed == 0


def test_single_frame_slices_are_their_own_sources_in_stacking_order() -> None:
    series = ct_phantom(slices=4, size=8)
    sources = slice_sources(list(reversed(series)))
    assert [plane.dataset for plane in sources.planes] == series
    assert sources.shape == (4, 8, 8) and not sources.resampled
    assert sources.instances == tuple(series)
    volume = series_volume(series).voxels
    assert np.array_equal(sources.on_frames(volume), volume)


def test_an_enhanced_image_gives_its_frames_in_stacking_order() -> None:
    """The test image lists its frames from the highest slice down."""
    series = ct_phantom(slices=5, size=8)
    image = enhanced(series)
    sources = slice_sources([image])
    assert sources.instances == (image,) and not sources.resampled
    assert [plane.frame_index for plane in sources.planes] == [4, 3, 2, 1, 0]
    frames = image.pixel_array.astype(np.int32) + int(series[0].RescaleIntercept)
    ordered = frames[[plane.frame_index for plane in sources.planes]]
    assert np.array_equal(ordered, phantom_volume(5, 8))


def test_tilted_slices_are_carried_back_onto_their_frames_and_again_onto_the_grid() -> None:
    """Each slice one column right of the one before: the grid is 3 columns wider, and
    slice k's frame starts k columns in."""
    series = ct_phantom(slices=4, size=8, spacing_mm=1.5)
    for index, ds in enumerate(series):
        ds.ImagePositionPatient = [-6.0 + 1.5 * index, -6.0, 2.5 * index]
    converted = series_volume(series)
    sources = slice_sources(series)
    assert sources.shape == converted.voxels.shape == (4, 8, 11) and sources.resampled
    assert np.allclose(sources.offsets, [(0.0, float(k)) for k in range(4)])
    frames = sources.on_frames(converted.voxels)
    assert np.array_equal(frames, phantom_volume(4, 8))
    back = sources.on_grid(frames)
    covered = sources.on_grid(np.ones(frames.shape, dtype=np.uint8)).astype(bool)
    assert np.array_equal(back[covered], converted.voxels[covered])
    assert np.all(back[~covered] == 0) and int(covered.sum()) == 4 * 8 * 8


@pytest.mark.parametrize("offset", [0.0, 0.3, 0.5, 0.7, 1.49, 2.5])
def test_nearest_neighbour_carrying_is_undone_exactly(offset: float) -> None:
    rng = np.random.default_rng(7)
    frames = rng.integers(1, 5, size=(2, 6, 6), dtype=np.uint8)
    offsets = ((0.0, 0.0), (offset, 3.0 - offset))
    grid = slices.on_grid(frames, offsets=offsets, size=(10, 10))
    assert np.array_equal(slices.on_frames(grid, offsets=offsets, frame_shape=(6, 6)), frames)
