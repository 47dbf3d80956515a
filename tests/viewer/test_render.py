"""The pure render core: planes, slabs, window, square-mm resampling, labels, ROI statistics."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest
from pydicom.dataset import Dataset

from tests.viewer.helpers import (
    CENTRE,
    CENTRE_COLUMN,
    COLUMN_COSINE,
    DEGREES,
    GRID_ROWS,
    RADIUS,
    ROW_COSINE,
    SIZE,
    SLICE_MM,
    SLICES,
    assert_shows_the_ball,
    grid_position,
    tilted_ball,
)
from voxelhub.dicom.synthetic import AIR, BONE, RESCALE_INTERCEPT
from voxelhub.dicom.volume import series_volume
from voxelhub.viewer.render import planes
from voxelhub.viewer.render.display import ImageFormat, encode, output_grid, window
from voxelhub.viewer.render.geometry import (
    AXIAL_COSINES,
    Plane,
    SliceInfo,
    VolumeGeometry,
    plan_volume,
)
from voxelhub.viewer.render.labels import SegFrame, label_volume
from voxelhub.viewer.render.planes import Mode, RenderError, Volume, cut, slab_range, to_voxel
from voxelhub.viewer.render.stats import Shape, roi_stats

# Axial slices going up (+z, towards the head): slice k at z = 3k mm.
AXIAL_UP = VolumeGeometry(
    dims=(4, 3, 2),
    spacing=(3.0, 2.0, 1.0),
    origin=(0.0, 0.0, 0.0),
    row_cosine=(1.0, 0.0, 0.0),
    column_cosine=(0.0, 1.0, 0.0),
    normal=(0.0, 0.0, 1.0),
)


def numbered() -> Volume:
    """Voxel (k, r, c) holds 100k + 10r + c."""
    k, r, c = np.mgrid[0:4, 0:3, 0:2]
    return Volume((100 * k + 10 * r + c).astype(np.int16), AXIAL_UP)


def axial_slices(z_values: list[float], **changes: object) -> list[SliceInfo]:
    base = {"orientation": AXIAL_COSINES, "pixel_spacing": (0.5, 0.5), "rows": 4, "columns": 4}
    return [
        SliceInfo(position=(0.0, 0.0, z), **{**base, **changes})  # type: ignore[arg-type]
        for z in z_values
    ]


def test_plan_orders_slices_along_the_normal() -> None:
    plan = plan_volume(axial_slices([4.0, 0.0, 2.0, 6.0]))
    assert plan.valid and plan.order == (1, 2, 0, 3)
    assert plan.geometry is not None
    assert plan.geometry.dims == (4, 4, 4) and plan.geometry.spacing == (2.0, 0.5, 0.5)
    assert plan.geometry.origin == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("slices", "reason"),
    [
        (axial_slices([0.0]), "single image"),
        (axial_slices([0.0, 2.0, 6.0]), "not evenly spaced"),
        (axial_slices([0.0, 0.0]), "same position"),
        (axial_slices([0.0, 2.0]) + axial_slices([4.0], rows=8), "different sizes"),
        (
            axial_slices([0.0, 2.0]) + axial_slices([4.0], orientation=(0, 1, 0, 0, 0, -1)),
            "different orientations",
        ),
        (axial_slices([0.0, 2.0], pixel_spacing=None), "PixelSpacing"),
        (axial_slices([0.0, 2.0], frames=3), "multi-frame"),
        (
            # Shifted within its plane out of line with the others: no gantry tilt does that.
            [
                *axial_slices([0.0, 2.0]),
                SliceInfo((3.0, 0.0, 4.0), AXIAL_COSINES, (0.5, 0.5), 4, 4),
            ],
            "not in proportion to their distance along the normal",
        ),
    ],
)
def test_plan_says_why_images_form_no_volume(slices: list[SliceInfo], reason: str) -> None:
    plan = plan_volume(slices)
    assert not plan.valid and plan.reason is not None and reason in plan.reason
    assert plan.order == tuple(range(len(slices)))


def test_axial_is_as_stored() -> None:
    image = cut(numbered(), Plane.AXIAL, 2, mode=Mode.SLICE, slab_mm=0)
    assert image.values.tolist() == [[200, 201], [210, 211], [220, 221]]
    assert image.spacing == (2.0, 1.0)


def test_reformatted_planes_have_the_head_at_the_top() -> None:
    coronal = cut(numbered(), Plane.CORONAL, 1, mode=Mode.SLICE, slab_mm=0)
    # rows: slices from the top (k=3, the highest z) down; columns: image columns.
    assert coronal.values.tolist() == [[310, 311], [210, 211], [110, 111], [10, 11]]
    assert coronal.spacing == (3.0, 1.0)
    sagittal = cut(numbered(), Plane.SAGITTAL, 1, mode=Mode.SLICE, slab_mm=0)
    assert sagittal.values.tolist() == [
        [301, 311, 321],
        [201, 211, 221],
        [101, 111, 121],
        [1, 11, 21],
    ]
    assert sagittal.spacing == (3.0, 2.0)
    labels = AXIAL_UP.orientation_labels()
    assert labels["axial"] == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    assert labels["coronal"] == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
    assert labels["sagittal"] == {"top": "S", "bottom": "I", "left": "A", "right": "P"}


def test_voxel_and_position_under_a_reformatted_pixel() -> None:
    assert to_voxel(AXIAL_UP, Plane.CORONAL, 1, 0, 1) == (3, 1, 1)
    assert to_voxel(AXIAL_UP, Plane.SAGITTAL, 1, 3, 2) == (0, 2, 1)
    assert AXIAL_UP.position_mm((3, 1, 1)) == (1.0, 2.0, 9.0)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (Mode.MIP, [[210, 211], [220, 221]]),
        (Mode.MINIP, [[10, 11], [20, 21]]),
        (Mode.AVG, [[110, 111], [120, 121]]),
    ],
)
def test_slab_projections(mode: Mode, expected: list[list[int]]) -> None:
    # A 9 mm slab at 3 mm spacing: slices 0, 1, 2 around slice 1; rows 1..2 checked.
    image = cut(numbered(), Plane.AXIAL, 1, mode=mode, slab_mm=9.0)
    assert image.values[1:].tolist() == expected


def test_slab_in_a_reformatted_plane_and_at_the_edge() -> None:
    # Coronal slab of 4 mm at 2 mm row spacing: rows 1 and 2 around row 1 (even counts go up).
    image = cut(numbered(), Plane.CORONAL, 1, mode=Mode.MIP, slab_mm=4.0)
    assert image.values[:, 0].tolist() == [320, 220, 120, 20]
    sagittal = cut(numbered(), Plane.SAGITTAL, 0, mode=Mode.MINIP, slab_mm=2.0)
    assert sagittal.values[0].tolist() == [300, 310, 320]  # columns 0 and 1: the min is column 0
    sagittal = cut(numbered(), Plane.SAGITTAL, 0, mode=Mode.MIP, slab_mm=2.0)
    assert sagittal.values[3].tolist() == [1, 11, 21]
    assert slab_range(0, 4, slab_mm=9.0, spacing_mm=3.0) == (0, 2)
    assert slab_range(3, 4, slab_mm=9.0, spacing_mm=3.0) == (2, 4)


@pytest.mark.parametrize(
    ("dtype", "order"), [(np.int16, "C"), (np.uint16, "C"), (np.float32, "C"), (np.int16, "F")]
)
@pytest.mark.parametrize("plane", [Plane.CORONAL, Plane.SAGITTAL])
@pytest.mark.parametrize("mode", list(Mode))
def test_slabs_across_rows_and_columns_match_numpy(
    dtype: type[np.generic], order: str, plane: Plane, mode: Mode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every width of slab, narrow to the whole volume, near the edges and in the middle,
    over more slices than are projected at a time, is what numpy makes of the same voxels."""
    monkeypatch.setattr(planes, "_COPY_BYTES", 8192)  # a few slices at a time
    rng = np.random.default_rng(7)
    shape = (37, 29, 45)
    low, high = (-1024, 3072) if dtype is np.int16 else (0, 4096)
    data = np.asarray(rng.integers(low, high, size=shape).astype(dtype), order=order)
    geometry = VolumeGeometry(shape, (2.0, 0.5, 0.5), (0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1))
    volume = Volume(data, geometry, slope=0.5, intercept=-10.0)
    axis = geometry.axis(plane)
    reference = {
        Mode.SLICE: lambda block: np.take(block, (block.shape[axis] - 1) // 2, axis=axis),
        Mode.MIP: lambda block: block.max(axis=axis),
        Mode.MINIP: lambda block: block.min(axis=axis),
        Mode.AVG: lambda block: block.astype(np.float64).mean(axis=axis),
    }[mode]
    for columns in (1, 2, 5, 24, 25, 40, shape[axis], 2 * shape[axis]):
        for index in (0, 6, shape[axis] // 2, shape[axis] - 1):
            image = cut(volume, plane, index, mode=mode, slab_mm=0.5 * columns)
            start, stop = index, index + 1
            if mode is not Mode.SLICE:
                start, stop = slab_range(index, shape[axis], slab_mm=0.5 * columns,
                                         spacing_mm=0.5)  # fmt: skip
            block = data[:, start:stop] if axis == 1 else data[:, :, start:stop]
            expected = (reference(block) * 0.5 - 10.0)[::-1]  # head up
            assert image.values.dtype == np.float32
            assert np.allclose(image.values, expected, rtol=0, atol=1e-3), (columns, index)
            if mode is not Mode.AVG:
                assert np.array_equal(image.values, expected.astype(np.float32))


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("mode", [Mode.MIP, Mode.MINIP, Mode.AVG])
def test_sagittal_slabs_of_a_gantry_tilted_series_match_numpy(
    order: str, mode: Mode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each slice's columns within a tilted sagittal slab, narrow to wider than the slices,
    cut off at either edge, over more slices than are copied at a time, project as numpy
    projects them."""
    monkeypatch.setattr(planes, "_COPY_BYTES", 4096)  # a few slices at a time
    rng = np.random.default_rng(11)
    data = np.asarray(rng.integers(-1024, 3072, size=(23, 17, 40), dtype=np.int16), order=order)
    across = 0.7 * np.arange(23)  # the slices shift 0.7 columns each
    reduce = {Mode.MIP: np.max, Mode.MINIP: np.min, Mode.AVG: np.mean}[mode]
    for width in (1, 3, 24, 25, 40, 60):
        for start in (-80, -20, 0, 7, 30, 50, 80):  # -80, 80: beyond every slice
            bounds = (start - across, start + width - across)
            lines, inside = planes._slab_lines(data, bounds, 2, mode)
            for k in range(len(data)):
                low = max(0, int(np.floor(bounds[0][k] + 0.5)))
                high = min(40, int(np.floor(bounds[1][k] + 0.5)))
                assert inside[k] == (low < high), (width, start, k)
                if low < high:
                    expected = reduce(data[k, :, low:high], axis=1)
                    assert np.allclose(lines[k], expected, rtol=0, atol=1e-3), (width, start, k)
                    if mode is not Mode.AVG:
                        assert np.array_equal(lines[k], expected), (width, start, k)


def test_rescale_applies_after_projection() -> None:
    volume = Volume(numbered().data.astype(np.uint16), AXIAL_UP, slope=2.0, intercept=-1000.0)
    image = cut(volume, Plane.AXIAL, 3, mode=Mode.SLICE, slab_mm=0)
    assert image.values[0].tolist() == [-400.0, -398.0]


def test_index_outside_the_plane_is_refused() -> None:
    with pytest.raises(RenderError, match=r"use 0\.\.2"):
        cut(numbered(), Plane.CORONAL, 3, mode=Mode.SLICE, slab_mm=0)


def test_window_level() -> None:
    values = np.array([[-1000, -160.5, 40, 239.5, 3000]], dtype=np.float32)
    assert window(values, center=40, width=400).tolist() == [[0, 0, 127, 255, 255]]
    assert window(values, center=40, width=400, invert=True).tolist() == [[255, 255, 128, 0, 0]]
    with pytest.raises(RenderError):
        window(values, center=0, width=0)


def test_resampling_gives_square_millimetre_pixels() -> None:
    # 4 rows of 3 mm by 6 columns of 1 mm: 12 x 6 mm, shown 12 px high at 1 mm per pixel.
    image = np.arange(24).reshape(4, 6)
    grid = output_grid(image.shape, (3.0, 1.0), 12)
    assert grid.shape == (12, 6) and grid.pixel_mm == 1.0
    resampled = grid.apply(image)
    assert resampled[:, 0].tolist() == [0, 0, 0, 6, 6, 6, 12, 12, 12, 18, 18, 18]
    assert resampled[0].tolist() == [0, 1, 2, 3, 4, 5]
    half = output_grid(image.shape, (3.0, 1.0), 6)
    assert half.shape == (6, 3) and half.pixel_mm == 2.0
    # output pixel centres at 1, 3, 5, ... mm fall in rows 0, 1, 1, 2, 3, 3 and column 1
    assert half.apply(image)[:, 0].tolist() == [1, 7, 7, 13, 19, 19]
    assert half.source(5, 2) == (3, 5)
    same = output_grid((8, 8), (0.5, 0.5), 8)
    assert same.identity and same.pixel_mm == 0.5
    with pytest.raises(RenderError):
        output_grid((8, 8), (0.5, 0.5), 4096)


@pytest.mark.parametrize("image_format", list(ImageFormat))
def test_encoding_round_trips(image_format: ImageFormat) -> None:
    image = (np.arange(64 * 48) % 251).astype(np.uint8).reshape(48, 64)
    data = encode(image, image_format)
    decoded = imagecodecs.imread(data)
    assert decoded.shape[:2] == (48, 64)
    if image_format is ImageFormat.PNG:
        assert np.array_equal(decoded, image)


def test_labels_align_by_reference_and_by_position() -> None:
    mask = np.zeros((3, 2), dtype=bool)
    mask[1, 1] = True
    full = np.ones((3, 2), dtype=bool)
    frames = [
        SegFrame(segment=1, mask=full, referenced_sop_instance_uid="1.2.3"),
        SegFrame(segment=3, mask=mask, position=(0.0, 0.0, 6.0)),
        SegFrame(segment=2, mask=full, position=(0.0, 0.0, 6.0)),
    ]
    labels = label_volume(AXIAL_UP, frames, {"1.2.3": 1})
    assert labels[1].tolist() == [[1, 1], [1, 1], [1, 1]]
    assert labels[2].tolist() == [[2, 2], [2, 3], [2, 2]]  # the highest number wins
    assert labels[0].max() == 0 and labels[3].max() == 0
    off_grid = SegFrame(segment=1, mask=full, position=(0.0, 0.0, 4.5))
    with pytest.raises(RenderError, match="does not lie on a slice"):
        label_volume(AXIAL_UP, [off_grid], {})


def test_roi_statistics_on_the_rendered_grid() -> None:
    values = np.arange(25, dtype=np.float32).reshape(5, 5)
    rect = roi_stats(values, (3, 3, 1, 1), shape=Shape.RECT, pixel_mm=2.0)
    assert (rect.n, rect.mean, rect.min, rect.max, rect.area_mm2) == (9, 12.0, 6.0, 18.0, 36.0)
    ellipse = roi_stats(values, (0, 0, 4, 4), shape=Shape.ELLIPSE, pixel_mm=1.0)
    assert ellipse.n == 13 and ellipse.mean == 12.0  # the disc of radius 2 about the centre
    with pytest.raises(RenderError, match="leaves"):
        roi_stats(values, (0, 0, 5, 4), shape=Shape.RECT, pixel_mm=1.0)


def viewed(series: list[Dataset]) -> Volume:
    """The volume the viewer cuts images from: the slices as stored, in volume order."""
    plan = plan_volume(
        [
            SliceInfo(
                position=tuple(float(v) for v in ds.ImagePositionPatient),  # type: ignore[arg-type]
                orientation=tuple(float(v) for v in ds.ImageOrientationPatient),
                pixel_spacing=(float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])),
                rows=int(ds.Rows),
                columns=int(ds.Columns),
            )
            for ds in series
        ]
    )
    assert plan.geometry is not None, plan.reason
    data = np.stack([series[k].pixel_array for k in plan.order])
    first = series[0]
    return Volume(data, plan.geometry, float(first.RescaleSlope), float(first.RescaleIntercept))


def test_reformats_of_a_gantry_tilted_series_show_the_true_shape() -> None:
    """The sagittal image through a ball imaged by a tilted gantry shows a round cross-section
    where the ball is, as the resampled volume of the series holds it, not a sheared one."""
    series = tilted_ball()
    volume = viewed(series[::-1])
    geometry = volume.geometry
    assert geometry.tilt is not None and geometry.tilt.degrees == pytest.approx(DEGREES)
    assert geometry.dims == (SLICES, SIZE, SIZE)
    sizes = [geometry.plane_size(plane) for plane in Plane]
    assert sizes == [SLICES, GRID_ROWS, SIZE]
    sagittal = cut(volume, Plane.SAGITTAL, CENTRE_COLUMN, mode=Mode.SLICE, slab_mm=0)
    assert sagittal.values.shape == (SLICES, GRID_ROWS)
    assert sagittal.spacing == pytest.approx((SLICE_MM, 1.0))
    # Head up: image row y shows slice 12 - y; image column x shows row x of the grid.
    y, x = np.indices(sagittal.values.shape)
    positions = grid_position(SLICES - 1 - y, x, CENTRE_COLUMN)
    assert_shows_the_ball(sagittal.values, positions, reach=np.sqrt(2))
    # Pixel for pixel the voxels of the volume an upload makes of the series.
    converted = series_volume(series)
    expected = converted.voxels[::-1, :, CENTRE_COLUMN]
    assert np.allclose(sagittal.values, expected, atol=0.5)
    # A pixel of the reformat lies where the volume's geometry puts its voxel.
    voxel = to_voxel(geometry, Plane.SAGITTAL, CENTRE_COLUMN, 5, 20)
    assert geometry.position_mm(voxel) == pytest.approx(tuple(grid_position(7, 20, 17)))


@pytest.mark.parametrize(
    ("plane", "index", "mode", "slab_mm"),
    [
        (Plane.CORONAL, 19, Mode.SLICE, 0.0),  # grid row 19 lies 0.4 mm from the centre
        (Plane.CORONAL, 19, Mode.MIP, 3.0),
        (Plane.SAGITTAL, CENTRE_COLUMN, Mode.MIP, 7.0),
    ],
)
def test_reformats_and_slabs_of_a_gantry_tilted_series_show_the_ball_round(
    plane: Plane, index: int, mode: Mode, slab_mm: float
) -> None:
    """An image or slab through the ball's centre shows a disc of its radius about it."""
    image = cut(viewed(tilted_ball()), plane, index, mode=mode, slab_mm=slab_mm)
    y, x = np.indices(image.values.shape)
    grid = (index, x) if plane is Plane.CORONAL else (x, index)
    assert_shows_the_ball(image.values, grid_position(SLICES - 1 - y, *grid), reach=np.sqrt(2))


def test_axial_images_of_a_gantry_tilted_series_are_its_slices() -> None:
    series = tilted_ball()
    volume = viewed(series)
    for k in (0, 6, 12):
        axial = cut(volume, Plane.AXIAL, k, mode=Mode.SLICE, slab_mm=0)
        assert np.array_equal(
            axial.values, series[k].pixel_array.astype(np.float32) + RESCALE_INTERCEPT
        )
        # Each pixel lies where its slice says.
        corner = np.array(series[k].ImagePositionPatient, dtype=np.float64)
        expected = corner + 3 * COLUMN_COSINE + 4 * ROW_COSINE
        assert volume.geometry.position_mm((k, 3, 4)) == pytest.approx(tuple(expected))
    # A slab through every slice, seen from the middle one, projects the ball along the
    # normal: a disc about where the ball's centre lies in that slice's plane.
    mip = cut(volume, Plane.AXIAL, 6, mode=Mode.MIP, slab_mm=100.0)
    offset = np.array(CENTRE) - np.array(series[6].ImagePositionPatient, dtype=np.float64)
    rows, columns = np.indices(mip.values.shape)
    distance = np.hypot(rows - offset @ COLUMN_COSINE, columns - offset @ ROW_COSINE)
    assert np.all(mip.values[distance < RADIUS - 2] == BONE)
    assert np.all(mip.values[distance > RADIUS + 1.5] == AIR)


def test_labels_of_a_gantry_tilted_series_lie_on_its_slices_and_are_not_blended() -> None:
    volume = viewed(tilted_ball())
    geometry = volume.geometry
    frames = [
        SegFrame(segment=k % 2 + 1, mask=np.ones((SIZE, SIZE), dtype=bool),
                 position=geometry.position_mm((k, 0, 0)))
        for k in range(SLICES)
    ]  # fmt: skip
    labels = label_volume(geometry, frames, {})
    assert labels[:, 0, 0].tolist() == [k % 2 + 1 for k in range(SLICES)]
    sagittal = cut(Volume(labels, geometry, labels=True), Plane.SAGITTAL, 3, mode=Mode.SLICE,
                   slab_mm=0)  # fmt: skip
    assert set(np.unique(sagittal.values)) == {0, 1, 2}
    # Slice 12 (the top row) reaches from grid row round(12 * 0.86) = 10 on.
    assert sagittal.values[0].tolist() == [0] * 10 + [1] * SIZE + [0]
