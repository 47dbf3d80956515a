"""Pipeline writers on volumes of Enhanced images and of gantry-tilted series: the SEG lies
on the acquired images it references, and a derived series names the image each of its
slices was made from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from tests.dicom.helpers import assert_same_volume, enhanced
from tests.segment.test_dicom_out import dciodvfy_errors
from tests.segment.test_seg_sources import (
    assert_seg_lies_on_its_sources,
    column_shifted_ball,
    frame_points,
    tilted_ball,
)
from voxelhub.algorithms.builtins.threshold_segmentation import BONE, SEGMENTS, label_ct
from voxelhub.algorithms.pipeline import (
    LabelVolume,
    OperatorError,
    PortValues,
    SeriesData,
    Volume,
)
from voxelhub.algorithms.pipeline.operators import (
    HISTOGRAM_ANALYSIS,
    AlgorithmInfo,
    Inference,
    SegWriter,
    SeriesToVolume,
    SeriesWriter,
)
from voxelhub.dicom.header import write_part10
from voxelhub.dicom.synthetic import ct_phantom
from voxelhub.dicom.volume import Geometry, series_to_volume
from voxelhub.segment.inputs import read_inputs, read_seg_labels

ALGORITHM = AlgorithmInfo("voxelhub threshold-segmentation", "1", family=HISTOGRAM_ANALYSIS)


def _volume(datasets: list[Dataset]) -> Volume:
    series = SeriesData.of(datasets)
    volume = SeriesToVolume().compute(PortValues("v", {"series": series}))["volume"]
    assert isinstance(volume, Volume)
    return volume


def _segmented(datasets: list[Dataset], output_dir: Path) -> tuple[LabelVolume, Path]:
    """The threshold segmentation's labels of `datasets`, and the SEG SegWriter wrote."""
    infer = Inference(label_ct, SEGMENTS)
    labels = infer.compute(PortValues("i", {"volume": _volume(datasets)}))["labels"]
    assert isinstance(labels, LabelVolume)
    writer = SegWriter("segmentation", ALGORITHM)
    path = writer.compute(PortValues("s", {"labels": labels, "output_dir": output_dir}))["path"]
    assert isinstance(path, Path)
    return labels, path


def _written(datasets: list[Dataset], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for index, ds in enumerate(datasets):
        (folder / f"{index:03d}.dcm").write_bytes(write_part10(ds))
    return folder


def _geometry_index(geometry: Geometry, point: np.ndarray) -> tuple[int, ...]:
    """The (slice, row, column) of the voxel of `geometry` nearest a patient point."""
    direction = np.array(geometry.direction).reshape(3, 3)
    offset = direction.T @ (point - np.array(geometry.origin)) / np.array(geometry.spacing)
    column, row, index = (int(v) for v in np.floor(offset + 0.5))
    return index, row, column


SOURCES = {
    "enhanced": lambda: [enhanced(ct_phantom(slices=6, size=32))],
    "tilted-20-degrees": lambda: tilted_ball(20.0),
    "tilted-whole-columns": column_shifted_ball,
}


@pytest.mark.parametrize("name", list(SOURCES))
def test_the_seg_of_an_enhanced_or_tilted_series_lies_on_its_acquired_images(
    name: str, tmp_path: Path
) -> None:
    source = SOURCES[name]()
    labels, path = _segmented(list(reversed(source)), tmp_path / "out")
    assert dciodvfy_errors(path) == []
    seg = dcmread(path)
    assert_seg_lies_on_its_sources(seg, source)
    # The frames hold the labels at their patient positions: each frame pixel of the
    # enhanced (untilted) volume is the voxel at its point, by the volume's geometry.
    if name == "enhanced":
        for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
            number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            points = frame_points(seg, index)
            k, _, _ = _geometry_index(labels.geometry, points[0, 0])
            assert _geometry_index(labels.geometry, points[-1, -1]) == (k, 31, 31)
            expected = labels.array[k] == SEGMENTS[number - 1].label
            assert np.array_equal(seg.pixel_array[index].astype(bool), expected)
    # Read back by the segmentation inputs' reader, the labels are the volume's.
    (reference,) = read_inputs([_written(source, tmp_path / "ct")])
    read = read_seg_labels(path.parent, reference)
    assert read is not None and read.names == ("Body", "Lungs", "Bone")
    assert np.array_equal(read.labels, labels.array)
    assert np.any(labels.array == BONE)


def test_a_seg_of_several_enhanced_images_is_refused_saying_why(tmp_path: Path) -> None:
    series = ct_phantom(slices=6, size=16)
    parts = [enhanced(series[3:]), enhanced(series[:3])]
    for part in parts[1:]:
        part.SeriesInstanceUID = parts[0].SeriesInstanceUID
    with pytest.raises(OperatorError, match="frames of 2 instances"):
        _segmented(parts, tmp_path)


def test_a_derived_series_of_an_enhanced_image_references_its_frames(tmp_path: Path) -> None:
    image = enhanced(ct_phantom(slices=5, size=16))
    volume = _volume([image])
    folder = SeriesWriter("derived").compute(
        PortValues("w", {"volume": volume, "output_dir": tmp_path})
    )["path"]
    series = [dcmread(path) for path in sorted(folder.glob("*.dcm"))]
    assert len(series) == 5
    frames = {
        number: [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        for number, item in enumerate(image.PerFrameFunctionalGroupsSequence, start=1)
    }
    for ds in series:
        assert ds.SOPClassUID == CTImageStorage
        (source,) = ds.SourceImageSequence
        assert source.ReferencedSOPClassUID == image.SOPClassUID
        assert source.ReferencedSOPInstanceUID == image.SOPInstanceUID
        assert source.SpatialLocationsPreserved == "YES"
        position = [float(v) for v in ds.ImagePositionPatient]
        assert frames[int(source.ReferencedFrameNumber)] == pytest.approx(position)
    assert_same_volume(series_to_volume(series), series_to_volume([image]))


def test_a_derived_series_of_a_tilted_series_lies_on_the_resampled_grid(tmp_path: Path) -> None:
    """Its slices lie on the volume's regular grid; each names the acquired slice it was
    shifted from, whose pixels it does not keep in place."""
    source = tilted_ball(20.0)
    volume = _volume(source)
    folder = SeriesWriter("derived").compute(
        PortValues("w", {"volume": volume, "output_dir": tmp_path})
    )["path"]
    series = [dcmread(path) for path in sorted(folder.glob("*.dcm"))]
    assert_same_volume(series_to_volume(series), series_to_volume(source))
    # ct_phantom's slices (and so the ball's) rise along the normal in list order.
    referenced = [ds.SourceImageSequence[0] for ds in series]
    assert [r.ReferencedSOPInstanceUID for r in referenced] == [d.SOPInstanceUID for d in source]
    assert {r.SpatialLocationsPreserved for r in referenced} == {"NO"}
