"""The MR series writer: geometry consistent with the pixel layout (rows along the readout),
values and window in the same units, identifiers stable for the same images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK
from pydicom.filewriter import dcmwrite

from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.mr_series import CardiacPhases, MrContext, SliceGeometry, mr_series

# An oblique plane: readout along (cos, sin, 0), phase encode along z, slices along their cross.
_C, _S = np.cos(np.deg2rad(30)), np.sin(np.deg2rad(30))
READ, PHASE = (_C, _S, 0.0), (0.0, 0.0, 1.0)
SLICE = tuple(float(v) for v in np.cross(READ, PHASE))


def _images(slices: int = 3, rows: int = 64, cols: int = 48) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0.0, 1e-4, (slices, rows, cols)).astype(np.float32)


def _write(datasets: list[pydicom.Dataset], folder: Path) -> list[str]:
    folder.mkdir()
    names = []
    for index, ds in enumerate(datasets):
        names.append(str(folder / f"{index:04d}.dcm"))
        dcmwrite(names[-1], ds, enforce_file_format=True)
    return names


def test_pixel_spacing_pairs_the_readout_fov_with_the_rows() -> None:
    # 64 readout rows over 256 mm, 48 phase-encode columns over 96 mm.
    ds = mr_series(_images(1), fov_mm=(256.0, 96.0, 5.0))[0]
    assert (ds.Rows, ds.Columns) == (64, 48)
    assert [float(v) for v in ds.PixelSpacing] == [4.0, 2.0]
    # Rows run along the readout (x), columns along the phase encode (y).
    assert [float(v) for v in ds.ImageOrientationPatient] == [0, 1, 0, 1, 0, 0]


def test_a_volume_read_back_has_the_geometry_of_the_acquisition(tmp_path: Path) -> None:
    images = _images(3)
    centres = [np.asarray(SLICE) * offset + (10.0, -20.0, 30.0) for offset in (6.0, -6.0, 0.0)]
    geometry = SliceGeometry(
        centres_mm=tuple(tuple(float(v) for v in c) for c in centres),
        read_dir=READ,
        phase_dir=PHASE,
        slice_dir=SLICE,
    )
    series = mr_series(images, fov_mm=(256.0, 96.0, 4.0), geometry=geometry)
    files = _write(series, tmp_path / "series")
    reader = SimpleITK.ImageSeriesReader()
    reader.SetFileNames(
        SimpleITK.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "series"))
    )
    volume = reader.Execute()
    assert volume.GetSize() == (48, 64, 3)
    np.testing.assert_allclose(volume.GetSpacing(), (2.0, 4.0, 6.0), atol=1e-4)
    direction = np.asarray(volume.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction[:, 0], PHASE, atol=1e-5)
    np.testing.assert_allclose(direction[:, 1], READ, atol=1e-5)
    # The voxel at the centre of the FOV (fftshift convention: index n // 2) of source slice
    # k lies at that slice's centre, and holds that slice's value.
    for k, centre in enumerate(centres):
        index = volume.TransformPhysicalPointToIndex(tuple(float(v) for v in centre))
        assert index[:2] == (24, 32)
        value = float(volume.GetPixel(index))  # GDCM applies the rescale
        assert value == pytest.approx(float(images[k, 32, 24]), rel=1e-3, abs=1e-7)
    # Instances are numbered in order of position along the slice direction.
    numbers = {f: int(pydicom.dcmread(f).InstanceNumber) for f in files}
    along = {f: float(np.dot(pydicom.dcmread(f).ImagePositionPatient, SLICE)) for f in files}
    assert sorted(files, key=numbers.__getitem__) == sorted(files, key=along.__getitem__)
    assert float(series[0].SpacingBetweenSlices) == pytest.approx(6.0)
    assert float(series[0].SliceThickness) == 4.0


def test_the_window_is_in_rescaled_units() -> None:
    images = _images(2)
    series = mr_series(images, fov_mm=(200.0, 200.0, 5.0))
    slope = float(series[0].RescaleSlope)
    values = np.stack([ds.pixel_array * slope for ds in series])
    assert values.max() == pytest.approx(float(images.max()), rel=1e-6)
    for ds in series:
        width, center = float(ds.WindowWidth), float(ds.WindowCenter)
        assert 0 < width <= 1.01 * float(images.max()) and center == pytest.approx(width / 2)


def test_the_same_images_get_the_same_uids_and_other_images_a_new_series() -> None:
    context = MrContext(series_instance_uid="1.2.3.4", study_instance_uid="1.2.3")
    first = mr_series(_images(2), fov_mm=(200.0, 200.0, 5.0), context=context)
    again = mr_series(_images(2), fov_mm=(200.0, 200.0, 5.0), context=context)
    assert [d.SOPInstanceUID for d in first] == [d.SOPInstanceUID for d in again]
    assert [str(d) for d in first] == [str(d) for d in again]
    assert {d.SeriesInstanceUID for d in first} == {"1.2.3.4"}
    assert first[0].StudyInstanceUID == "1.2.3"


def test_required_mr_attributes_are_present() -> None:
    context = MrContext(
        echo_time_ms=30.0,
        repetition_time_ms=2500.0,
        field_strength_t=3.0,
        imaging_frequency_mhz=123.2,
        flip_angle_deg=90.0,
        patient_position="HFS",
    )
    ds = mr_series(_images(1), fov_mm=(200.0, 200.0, 5.0), context=context)[0]
    assert ds.SOPClassUID == pydicom.uid.MRImageStorage
    for keyword in ("ScanOptions", "EchoTrainLength", "PositionReferenceIndicator"):
        assert keyword in ds
    assert (float(ds.EchoTime), float(ds.RepetitionTime)) == (30.0, 2500.0)
    assert float(ds.MagneticFieldStrength) == 3.0 and float(ds.ImagingFrequency) == 123.2
    assert float(ds.FlipAngle) == 90.0 and ds.PatientPosition == "HFS"
    bare = mr_series(_images(1), fov_mm=(200.0, 200.0, 5.0))[0]
    assert bare.EchoTime is None and "RepetitionTime" in bare and "PatientPosition" in bare
    assert "EchoNumbers" not in bare and "TemporalPositionIdentifier" not in bare


def test_an_echo_and_frame_of_a_multi_image_acquisition_is_written(tmp_path: Path) -> None:
    context = MrContext(echo_time_ms=12.0, echo_number=2, temporal_position=(3, 5))
    series = mr_series(_images(2), fov_mm=(200.0, 200.0, 5.0), context=context)
    for name in _write(series, tmp_path / "series"):
        ds = pydicom.dcmread(name)
        assert (ds.EchoNumbers, float(ds.EchoTime)) == (2, 12.0)
        assert (ds.TemporalPositionIdentifier, ds.NumberOfTemporalPositions) == (3, 5)


@pytest.mark.parametrize(
    ("fov_mm", "geometry", "message"),
    [
        ((0.0, 200.0, 5.0), None, "field of view"),
        ((float("nan"), 200.0, 5.0), None, "field of view"),
        ((200.0, 200.0, 5.0), SliceGeometry(centres_mm=((0, 0, 0),)), "2 slices"),
        (
            (200.0, 200.0, 5.0),
            SliceGeometry(
                centres_mm=((0, 0, 0), (0, 0, 5)), read_dir=(1, 0, 0), phase_dir=(1, 0, 0)
            ),
            "orthogonal",
        ),
    ],
)
def test_unusable_geometry_is_refused(
    fov_mm: tuple[float, float, float], geometry: SliceGeometry | None, message: str
) -> None:
    with pytest.raises(DicomError, match=message):
        mr_series(_images(2), fov_mm=fov_mm, geometry=geometry)


def test_a_cine_is_numbered_by_position_then_trigger_time() -> None:
    geometry = SliceGeometry(centres_mm=((0, 0, 5.0), (0, 0, 0.0), (0, 0, 5.0), (0, 0, 0.0)))
    cardiac = CardiacPhases(phases=(1, 1, 0, 0), trigger_times_ms=(412.5, 410.0, 20.0, 22.5))
    series = mr_series(_images(4), fov_mm=(256.0, 96.0, 5.0), geometry=geometry, cardiac=cardiac)
    read = [(float(ds.SliceLocation), float(ds.TriggerTime)) for ds in series]
    assert read == [(0.0, 22.5), (0.0, 410.0), (5.0, 20.0), (5.0, 412.5)]
    assert [ds.TemporalPositionIdentifier for ds in series] == [1, 2, 1, 2]
    assert {(ds.CardiacNumberOfImages, ds.NumberOfTemporalPositions) for ds in series} == {(2, 2)}


def test_a_phase_twice_at_one_position_is_refused() -> None:
    geometry = SliceGeometry(centres_mm=((0, 0, 0.0), (0, 0, 0.0)))
    with pytest.raises(DicomError, match="same position"):
        mr_series(
            _images(2),
            fov_mm=(256.0, 96.0, 5.0),
            geometry=geometry,
            cardiac=CardiacPhases(phases=(0, 0)),
        )
