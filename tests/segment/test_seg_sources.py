"""SEGs of volumes made of Enhanced images and of gantry-tilted series: each frame lies on,
and references, the acquired image it overlays; read back, the labels are the volume's."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pytest
import SimpleITK
from pydicom import dcmread
from pydicom.dataset import Dataset

from tests.dicom.helpers import ball, enhanced, sampled_series
from tests.segment.test_dicom_out import dciodvfy_errors
from voxelhub.dicom.header import write_part10
from voxelhub.dicom.synthetic import ct_phantom
from voxelhub.dicom.volume import series_volume
from voxelhub.segment import SegmentError
from voxelhub.segment.dicom_out import AlgorithmInfo, segmentation
from voxelhub.segment.inputs import InputImage, read_inputs, read_seg_labels
from voxelhub.segment.labels import coded_label
from voxelhub.segment.model import InputRole, ModelMetadata
from voxelhub.segment.outputs import write_outputs

BONE_MODEL = ModelMetadata(
    name="Bone threshold",
    version="1",
    modality="CT",
    inputs=(InputRole(role="ct", modality="CT"),),
    labels=(coded_label(1, "bone"),),
)
# A ball 7 mm in radius; slices of 32 x 32 one-millimetre pixels cover it.
CENTRE, RADIUS, CORNER = (1.0, -2.0, 16.0), 7.0, (-16.0, -16.0, 0.0)


def tilted_ball(degrees: float, *, slices: int = 13) -> list[Dataset]:
    """The ball as a gantry tilted `degrees` about x images it (table 2.5 mm per slice)."""
    cosine, sine = float(np.cos(np.radians(degrees))), float(np.sin(np.radians(degrees)))
    positions = [np.add(CORNER, (0, 0, 2.5 * k)) for k in range(slices)]
    return sampled_series(ball(CENTRE, RADIUS), orientation=[1, 0, 0, 0, cosine, sine],
                          positions=positions, size=32, spacing_mm=1.0)  # fmt: skip


def column_shifted_ball(*, slices: int = 13) -> list[Dataset]:
    """Axial slices each one whole column right of the one before (a tilt about y)."""
    positions = [np.add(CORNER, (1.0 * k, 0, 2.5 * k)) for k in range(slices)]
    return sampled_series(ball(CENTRE, RADIUS), orientation=[1, 0, 0, 0, 1, 0],
                          positions=positions, size=32, spacing_mm=1.0)  # fmt: skip


def per_frame_groups(image: Dataset) -> Dataset:
    """`image` with its orientation and pixel measures in every frame's functional groups,
    as some scanners write them, instead of the shared ones."""
    shared = image.SharedFunctionalGroupsSequence[0]
    for keyword in ("PlaneOrientationSequence", "PixelMeasuresSequence"):
        for frame in image.PerFrameFunctionalGroupsSequence:
            setattr(frame, keyword, shared[keyword].value)
        delattr(shared, keyword)
    return dcmread(BytesIO(write_part10(image)))


SOURCES: dict[str, Callable[[], list[Dataset]]] = {
    "enhanced": lambda: [enhanced(ct_phantom(slices=6, size=32))],
    "enhanced-per-frame-groups": lambda: [
        per_frame_groups(enhanced(ct_phantom(slices=6, size=32)))
    ],
    "tilted-20-degrees": lambda: tilted_ball(20.0),
    "tilted-whole-columns": column_shifted_ball,
    "tilted-enhanced": lambda: [enhanced(tilted_ball(15.0, slices=6))],
}


def acquired_geometry(image: Dataset, frame_number: int | None) -> dict[str, list[float]]:
    """Position, orientation and pixel spacing of an acquired image (or of one frame of
    an Enhanced image), read from its own attributes."""
    if frame_number is None:
        return {
            "position": [float(v) for v in image.ImagePositionPatient],
            "orientation": [float(v) for v in image.ImageOrientationPatient],
            "spacing": [float(v) for v in image.PixelSpacing],
        }
    groups = [image.PerFrameFunctionalGroupsSequence[frame_number - 1]]
    groups.append(image.SharedFunctionalGroupsSequence[0])

    def item(keyword: str) -> Dataset:
        return next(g[keyword][0] for g in groups if keyword in g)

    return {
        "position": [float(v) for v in item("PlanePositionSequence").ImagePositionPatient],
        "orientation": [float(v) for v in item("PlaneOrientationSequence").ImageOrientationPatient],
        "spacing": [float(v) for v in item("PixelMeasuresSequence").PixelSpacing],
    }


def assert_seg_lies_on_its_sources(seg: Dataset, source: Sequence[Dataset]) -> None:
    """Every SEG frame references an acquired image (and frame) of `source` and lies where
    it lies, with its size, orientation and pixel spacing; the SEG shares its frame of
    reference and lists every source instance in its Referenced Series Sequence."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source}
    first = source[0]
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert (seg.Rows, seg.Columns) == (first.Rows, first.Columns)
    (series,) = seg.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    listed = {str(i.ReferencedSOPInstanceUID): i for i in series.ReferencedInstanceSequence}
    assert set(listed) == set(by_uid)
    assert all(listed[uid].ReferencedSOPClassUID == by_uid[uid].SOPClassUID for uid in listed)
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
    spacing = [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing]
    multi_frame = "PerFrameFunctionalGroupsSequence" in first
    referenced = []
    for frame in seg.PerFrameFunctionalGroupsSequence:
        (reference,) = frame.DerivationImageSequence[0].SourceImageSequence
        image = by_uid[str(reference.ReferencedSOPInstanceUID)]
        assert reference.ReferencedSOPClassUID == image.SOPClassUID
        assert reference.SpatialLocationsPreserved == "YES"
        number = int(reference.ReferencedFrameNumber) if multi_frame else None
        assert ("ReferencedFrameNumber" in reference) == multi_frame
        expected = acquired_geometry(image, number)
        position = [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient]
        assert position == pytest.approx(expected["position"], abs=1e-4)
        assert orientation == pytest.approx(expected["orientation"], abs=1e-6)
        assert spacing == pytest.approx(expected["spacing"])
        referenced.append((image.SOPInstanceUID, number))
    assert referenced, "the SEG has no frames"


def frame_points(seg: Dataset, index: int) -> npt.NDArray[np.float64]:
    """The patient-space centre (LPS, mm) of every pixel of SEG frame `index`, from the
    SEG's own plane position, orientation and pixel spacing."""
    shared = seg.SharedFunctionalGroupsSequence[0]
    cosines = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    row_spacing, column_spacing = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    frame = seg.PerFrameFunctionalGroupsSequence[index]
    origin = np.array(frame.PlanePositionSequence[0].ImagePositionPatient, float)
    rows, columns = np.mgrid[0 : seg.Rows, 0 : seg.Columns].astype(np.float64)
    return (
        origin
        + (columns * column_spacing)[..., None] * cosines[:3]
        + (rows * row_spacing)[..., None] * cosines[3:]
    )


def _bone(item: InputImage) -> SimpleITK.Image:
    """The bone (300 HU and up) of an input, as a label map on its grid."""
    hu = SimpleITK.GetArrayFromImage(item.image)
    mask = SimpleITK.GetImageFromArray((hu >= 300).astype(np.uint8))
    mask.CopyInformation(item.image)
    return mask


def _folder(datasets: list[Dataset], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for index, ds in enumerate(datasets):
        (folder / f"{index:03d}.dcm").write_bytes(write_part10(ds))
    return folder


@pytest.mark.parametrize("name", list(SOURCES))
def test_seg_of_an_enhanced_or_tilted_series_lies_on_its_acquired_images(
    name: str, tmp_path: Path
) -> None:
    folder = _folder(SOURCES[name](), tmp_path / "ct")
    (item,) = read_inputs([folder])
    mask = _bone(item)
    files = write_outputs(tmp_path / "out", mask, BONE_MODEL, [item])
    assert files.seg is not None and files.sr is not None
    assert dciodvfy_errors(files.seg) == []
    assert dciodvfy_errors(files.sr) == []
    seg = dcmread(files.seg)
    assert_seg_lies_on_its_sources(seg, item.datasets)
    assert list(hd.seg.Segmentation.from_dataset(seg).segment_numbers) == [1]
    # Read back onto the volume, the labels are the ones written, voxel for voxel.
    read = read_seg_labels(files.seg.parent, item)
    assert read is not None and read.names == ("bone",)
    assert np.array_equal(read.labels, SimpleITK.GetArrayFromImage(mask))


@pytest.mark.parametrize("name", ["tilted-20-degrees", "tilted-whole-columns"])
def test_tilted_seg_labels_lie_where_the_acquired_slices_show_the_ball(
    name: str, tmp_path: Path
) -> None:
    """Placed by its own frame geometry, every labelled SEG pixel lies in the ball (within a
    pixel diagonal: interpolation and the nearest-pixel carry back) and every acquired
    pixel well inside the ball is labelled."""
    source = SOURCES[name]()
    volume = series_volume(source)
    assert volume.gantry_tilt_degrees is not None
    labels = (volume.voxels >= 300).astype(np.uint8)
    seg = segmentation(
        source, labels, [coded_label(1, "bone")], algorithm=AlgorithmInfo("t", "1"),
        series_description="bone",
    )  # fmt: skip
    reach = np.sqrt(2.0)
    by_uid = {ds.SOPInstanceUID: ds for ds in source}
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        distance = np.linalg.norm(frame_points(seg, index) - np.array(CENTRE), axis=-1)
        labelled = seg.pixel_array[index].astype(bool)
        assert np.all(distance[labelled] <= RADIUS + reach)
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        acquired = by_uid[uid].pixel_array.astype(np.int32) + int(by_uid[uid].RescaleIntercept)
        assert np.all(labelled[(distance < RADIUS - reach) & (acquired >= 300)])
        if name == "tilted-whole-columns":
            # Whole-pixel shifts copy each slice: the SEG frame is the slice's own bone.
            assert np.array_equal(labelled, acquired >= 300)
    assert int(seg.pixel_array.sum()) > 100


def test_a_volume_of_several_enhanced_images_gets_no_seg(tmp_path: Path) -> None:
    """A SEG references the frames of one Enhanced image: a volume of several is used as
    an image file is (mask and volumes only), and writing its SEG says why not."""
    series = ct_phantom(slices=6, size=16)
    parts = [enhanced(series[3:]), enhanced(series[:3])]
    for part in parts[1:]:
        part.SeriesInstanceUID = parts[0].SeriesInstanceUID
    (item,) = read_inputs([_folder(parts, tmp_path / "ct")])
    assert item.datasets == () and item.modality == "CT"
    files = write_outputs(tmp_path / "out", _bone(item), BONE_MODEL, [item])
    assert files.seg is None
    labels = SimpleITK.GetArrayFromImage(_bone(item))
    with pytest.raises(SegmentError, match="frames of 2 instances"):
        segmentation(
            parts, labels, [coded_label(1, "bone")], algorithm=AlgorithmInfo("t", "1"),
            series_description="bone",
        )  # fmt: skip
