"""The MR series the reconstruction built-ins store, read as a radiologist's viewer would:
geometry from the raw file, acquisition and patient attributes, stable identifiers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pydicom
import pytest
import SimpleITK

from tests.algorithms.test_mri_builtins import _run, _series
from tests.recon.helpers import add_images
from voxelhub.algorithms.builtins import InputError
from voxelhub.algorithms.builtins import mri_reconstruction as recon_builtins
from voxelhub.recon.image import fft2c
from voxelhub.recon.io_fastmri import write_fastmri
from voxelhub.recon.io_ismrmrd import write_ismrmrd
from voxelhub.recon.masks import equispaced_mask
from voxelhub.recon.model import KSpace
from voxelhub.recon.phantom import PhantomSpec, simulate

ROWS, COLS, SLICES = 64, 48, 3  # readout samples, phase-encode lines
ROW_MM, COL_MM, GAP_MM = 2.0, 3.0, 5.0
_C, _S = np.cos(np.deg2rad(20)), np.sin(np.deg2rad(20))
READ = np.array([_C, 0.0, _S])  # an oblique coronal plane
PHASE = np.array([0.0, 1.0, 0.0])
NORMAL = np.cross(READ, PHASE)
ISOCENTRE = np.array([12.0, -30.0, 40.0])
# The slice counter is not the spatial order: slice 0 in the middle, 1 above, 2 below.
OFFSETS = (0.0, GAP_MM, -GAP_MM)
DOT = (8, -5)  # the bright dot: readout and phase-encode pixels from the FOV centre
SUBJECT = {
    "patient_name": "Doe^Jane",
    "patient_id": "MRN-42",
    "patient_birth_date": "1970-02-03",
    "patient_sex": "F",
    "study_date": "2024-05-01",
    "study_time": "08:15:30",
    "study_instance_uid": "1.2.826.0.1.3680043.8.498.1",
    "patient_position": "HFS",
}


def _point_source_kspace(**more: object) -> KSpace:
    images = np.zeros((SLICES, 1, ROWS, COLS), np.complex64)
    for k in range(SLICES):
        images[k, 0, ROWS // 2 + DOT[0], COLS // 2 + DOT[1]] = 100.0 + k
    header = {
        "encoded_matrix": [ROWS, COLS, 1],
        "recon_matrix": [ROWS, COLS, 1],
        "encoded_fov_mm": [ROWS * ROW_MM, COLS * COL_MM, 4.0],
        "recon_fov_mm": [ROWS * ROW_MM, COLS * COL_MM, 4.0],
        "pe_limits": [0, COLS - 1, COLS // 2],
        "repetition_time_ms": 3000.0,
        "echo_time_ms": 25.0,
        "field_strength_t": 1.5,
        "imaging_frequency_hz": 63_646_310,
        **SUBJECT,
        **more,
    }
    sampling = equispaced_mask(COLS, 1, acs_lines=COLS)
    return KSpace(fft2c(images), sampling, header=header, source="oblique.h5")


def _oblique_ismrmrd(path: Path, **more: object) -> Path:
    write_ismrmrd(path, _point_source_kspace(**more))
    with h5py.File(path, "r+") as handle:
        records = handle["dataset/data"][()]
        heads = records["head"]
        heads["read_dir"], heads["phase_dir"], heads["slice_dir"] = READ, PHASE, NORMAL
        offsets = np.asarray(OFFSETS)[heads["idx"]["slice"]]
        heads["position"] = ISOCENTRE + offsets[:, None] * NORMAL
        records["head"] = heads
        handle["dataset/data"][...] = records
    return path


def _volume(folder: Path) -> SimpleITK.Image:
    reader = SimpleITK.ImageSeriesReader()
    reader.SetFileNames(SimpleITK.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_the_series_has_the_acquisitions_geometry(tmp_path: Path) -> None:
    raw = _oblique_ismrmrd(tmp_path / "oblique.h5")
    output = _run("mri-recon-zero-filled", tmp_path / "recon", {"kspace": raw})
    series = _series(output)
    first = series[0]
    assert [float(v) for v in first.PixelSpacing] == [ROW_MM, COL_MM]
    np.testing.assert_allclose([float(v) for v in first.ImageOrientationPatient],
                               [*PHASE, *READ], atol=1e-5)  # fmt: skip
    assert float(first.SpacingBetweenSlices) == pytest.approx(GAP_MM, abs=1e-3)
    along = [float(np.dot([float(v) for v in ds.ImagePositionPatient], NORMAL)) for ds in series]
    assert along == sorted(along) and [ds.InstanceNumber for ds in series] == [1, 2, 3]

    volume = _volume(output / "images")
    assert volume.GetSize() == (COLS, ROWS, SLICES)
    np.testing.assert_allclose(volume.GetSpacing(), (COL_MM, ROW_MM, GAP_MM), atol=1e-3)
    array = SimpleITK.GetArrayFromImage(volume)  # slices x rows x columns
    for k, offset in enumerate(OFFSETS):
        # The dot of slice counter k, where the acquisition put it in the patient.
        dot = ISOCENTRE + offset * NORMAL + DOT[0] * ROW_MM * READ + DOT[1] * COL_MM * PHASE
        column, row, plane = volume.TransformPhysicalPointToIndex(tuple(float(v) for v in dot))
        assert np.unravel_index(np.argmax(array[plane]), array[plane].shape) == (row, column)
        assert array[plane].max() == pytest.approx(100.0 + k, rel=1e-3)


def test_acquisition_patient_and_study_attributes_come_from_the_header(tmp_path: Path) -> None:
    raw = _oblique_ismrmrd(tmp_path / "oblique.h5")
    ds = _series(_run("mri-recon-zero-filled", tmp_path / "recon", {"kspace": raw}))[0]
    assert (str(ds.PatientName), ds.PatientID, ds.PatientSex) == ("Doe^Jane", "MRN-42", "F")
    assert (ds.PatientBirthDate, ds.StudyDate, ds.StudyTime) == ("19700203", "20240501", "081530")
    assert ds.StudyInstanceUID == SUBJECT["study_instance_uid"] and ds.PatientPosition == "HFS"
    assert (float(ds.EchoTime), float(ds.RepetitionTime)) == (25.0, 3000.0)
    assert float(ds.MagneticFieldStrength) == 1.5
    assert float(ds.ImagingFrequency) == pytest.approx(63.64631)
    assert ds.SeriesDescription == "zero-filled reconstruction" and "EchoNumbers" not in ds


def _by_series(output: Path) -> list[list[pydicom.Dataset]]:
    """The output's instances, one list per series in order of SeriesNumber."""
    found: dict[str, list[pydicom.Dataset]] = {}
    for ds in _series(output):
        found.setdefault(ds.SeriesInstanceUID, []).append(ds)
    return sorted(found.values(), key=lambda series: int(series[0].SeriesNumber))


def test_each_echo_is_a_series_of_its_own(tmp_path: Path) -> None:
    raw = add_images(
        _oblique_ismrmrd(tmp_path / "echoes.h5", echo_times_ms=[25.0, 50.0]),
        "contrast",
        scales=[0.5],
    )
    output = _run("mri-recon-zero-filled", tmp_path / "recon", {"kspace": raw})
    echoes = _by_series(output)
    assert len(echoes) == 2 and len({echo[0].SeriesNumber for echo in echoes}) == 2
    for number, (echo, time) in enumerate(zip(echoes, (25.0, 50.0), strict=True), start=1):
        assert [ds.InstanceNumber for ds in echo] == [1, 2, 3]
        assert {(ds.EchoNumbers, float(ds.EchoTime)) for ds in echo} == {(number, time)}
        assert {ds.SeriesDescription for ds in echo} == {
            f"zero-filled reconstruction, echo {number}"
        }
        positions = {tuple(float(v) for v in ds.ImagePositionPatient) for ds in echo}
        assert len(positions) == 3
        assert {ds.StudyInstanceUID for ds in echo} == {SUBJECT["study_instance_uid"]}
        peak = max(float(ds.pixel_array.max() * float(ds.RescaleSlope)) for ds in echo)
        assert peak == pytest.approx((100.0 + 2) / number, rel=1e-3)
    # A viewer reading a series gets one volume per echo, with the acquisition's spacing.
    reader = SimpleITK.ImageSeriesReader()
    for echo in echoes:
        files = reader.GetGDCMSeriesFileNames(str(output / "images"), echo[0].SeriesInstanceUID)
        reader.SetFileNames(files)
        volume = reader.Execute()
        assert volume.GetSize() == (COLS, ROWS, SLICES)
        assert volume.GetSpacing()[2] == pytest.approx(GAP_MM, abs=1e-3)
    again = _run("mri-recon-zero-filled", tmp_path / "again", {"kspace": raw})
    assert _uids(again) == _uids(output)


def test_repetitions_are_temporal_positions(tmp_path: Path) -> None:
    raw = add_images(_oblique_ismrmrd(tmp_path / "dynamic.h5"), "repetition", scales=[2.0, 3.0])
    frames = _by_series(_run("mri-recon-zero-filled", tmp_path / "recon", {"kspace": raw}))
    assert len(frames) == 3
    for position, frame in enumerate(frames, start=1):
        assert {ds.TemporalPositionIdentifier for ds in frame} == {position}
        assert {ds.NumberOfTemporalPositions for ds in frame} == {3}
        assert {(ds.EchoNumbers, float(ds.EchoTime)) for ds in frame} == {(1, 25.0)}
        assert frame[0].SeriesDescription == f"zero-filled reconstruction, repetition {position}"
        assert len({tuple(ds.ImagePositionPatient) for ds in frame}) == SLICES


def test_the_outbox_gets_a_folder_per_echo(tmp_path: Path) -> None:
    raw = add_images(_oblique_ismrmrd(tmp_path / "echoes.h5"), "contrast", scales=[0.5])
    recon_builtins.configure(outbox=tmp_path / "outbox")
    try:
        output = _run("mri-recon-zero-filled", tmp_path / "recon", {"kspace": raw})
    finally:
        recon_builtins.configure(outbox=None)
    uids = [echo[0].SeriesInstanceUID for echo in _by_series(output)]
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == sorted(uids)
    for uid in uids:
        assert len(list((tmp_path / "outbox" / uid).iterdir())) == SLICES
    recorded = json.loads((output / "settings.json").read_text())["outbox"]
    assert recorded == {
        "delivered": True,
        "folders": [str(tmp_path / "outbox" / uid) for uid in uids],
    }


def _uids(output: Path) -> dict[str, Any]:
    series = _series(output)
    return {
        "study": series[0].StudyInstanceUID,
        "series": {ds.SeriesInstanceUID for ds in series},
        "numbers": {ds.SeriesNumber for ds in series},
        "frame": {ds.FrameOfReferenceUID for ds in series},
        "instances": [ds.SOPInstanceUID for ds in series],
        "bytes": [p.read_bytes() for p in sorted((output / "images").iterdir())],
    }


def test_the_same_settings_give_the_same_series_and_others_a_new_one(tmp_path: Path) -> None:
    acquisition = simulate(
        PhantomSpec(readout=64, phase_encode=48, coils=4, slices=2, acceleration=2, acs_lines=12),
        seed=3,
    )
    raw = tmp_path / "knee_scan.h5"
    write_fastmri(raw, acquisition.kspace)
    parameters = {"method": "grappa", "kernel": [3, 2]}
    first = _uids(_run("mri-recon", tmp_path / "a", {"kspace": raw, "parameters": parameters}))
    again = _uids(_run("mri-recon", tmp_path / "b", {"kspace": raw, "parameters": parameters}))
    assert again == first  # stored again, the store already has every object
    other = _uids(
        _run("mri-recon", tmp_path / "c", {"kspace": raw, "parameters": {"method": "grappa"}})
    )
    assert other["study"] == first["study"] and other["frame"] == first["frame"]
    assert other["series"].isdisjoint(first["series"])
    assert other["numbers"].isdisjoint(first["numbers"])  # told apart in a study's list
    assert set(other["instances"]).isdisjoint(first["instances"])
    settings = json.loads((tmp_path / "a" / "output" / "settings.json").read_text())
    assert "seconds_per_slice" in settings


def test_a_file_without_geometry_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    acquisition = simulate(PhantomSpec(readout=64, phase_encode=48, coils=4, acs_lines=12))
    raw = tmp_path / "bare.h5"
    write_fastmri(raw, acquisition.kspace)
    with h5py.File(raw, "r+") as handle:
        del handle["ismrmrd_header"]
    with pytest.raises(InputError, match="no field of view"):
        _run("mri-recon-zero-filled", tmp_path / "recon", {"kspace": raw})
    assert not (tmp_path / "recon" / "output" / "images").exists()


def test_the_window_shows_the_reconstructed_magnitudes(tmp_path: Path) -> None:
    acquisition = simulate(PhantomSpec(readout=64, phase_encode=48, coils=4, acs_lines=12))
    raw = tmp_path / "scan.h5"
    write_fastmri(raw, acquisition.kspace)
    series = _series(_run("mri-recon-zero-filled", tmp_path / "recon", {"kspace": raw}))
    values = np.stack([pydicom.pixels.apply_modality_lut(ds.pixel_array, ds) for ds in series])
    for ds in series:
        assert float(ds.WindowWidth) == pytest.approx(np.percentile(values, 99.5), rel=0.01)


# ECG time stamps of the cine's phases, in ISMRMRD's 2.5 ms ticks: 30, 430 and 830 ms.
PHASE_TICKS = (12, 172, 332)
PHASE_SCALES = (1.0, 0.8, 0.6)  # the dot's brightness in each phase


def _cine(path: Path, *, stamps: bool = True, **more: object) -> Path:
    """The oblique point source as an ECG-gated cine of three phases, each phase's lines
    stamped a tick either side of its trigger time (segments from different heartbeats)."""
    raw = add_images(_oblique_ismrmrd(path, **more), "phase", scales=list(PHASE_SCALES[1:]))
    with h5py.File(raw, "r+") as handle:
        records = handle["dataset/data"][()]
        heads = records["head"]
        jitter = np.arange(len(heads)) % 3 - 1 if stamps else 0
        ticks = np.asarray(PHASE_TICKS)[heads["idx"]["phase"]] + jitter
        heads["physiology_time_stamp"][:, 0] = ticks if stamps else 0
        records["head"] = heads
        handle["dataset/data"][...] = records
    return raw


def _along(ds: pydicom.Dataset) -> float:
    return float(np.dot([float(v) for v in ds.ImagePositionPatient], NORMAL))


def test_a_cine_is_one_series_with_the_trigger_time_of_each_phase(tmp_path: Path) -> None:
    raw = _cine(tmp_path / "cine.h5")
    output = _run("mri-recon-zero-filled", tmp_path / "recon", {"kspace": raw})
    (cine,) = _by_series(output)
    assert len(cine) == SLICES * len(PHASE_TICKS)
    assert cine[0].SeriesDescription == "zero-filled reconstruction, cine"
    assert {ds.CardiacNumberOfImages for ds in cine} == {3}
    assert {ds.NumberOfTemporalPositions for ds in cine} == {3}
    cine.sort(key=lambda ds: int(ds.InstanceNumber))
    assert [ds.InstanceNumber for ds in cine] == list(range(1, 10))
    # Numbered by slice position, then trigger time: 30, 430, 830 ms at every position.
    order = [(round(_along(ds), 3), float(ds.TriggerTime)) for ds in cine]
    assert order == sorted(order)
    assert [float(ds.TriggerTime) for ds in cine] == [30.0, 430.0, 830.0] * SLICES
    assert [ds.TemporalPositionIdentifier for ds in cine] == [1, 2, 3] * SLICES
    slice_counter = {-GAP_MM: 2, 0.0: 0, GAP_MM: 1}  # OFFSETS, by position
    base = _along(cine[0]) + GAP_MM
    for ds in cine:  # each image holds its own phase: the dot's brightness says which
        phase = ds.TemporalPositionIdentifier - 1
        k = slice_counter[round(_along(ds) - base, 3)]
        peak = float(ds.pixel_array.max()) * float(ds.RescaleSlope)
        assert peak == pytest.approx((100.0 + k) * PHASE_SCALES[phase], rel=1e-3)
        assert ds.ScanOptions == "CG" and "NominalInterval" not in ds
    settings = json.loads((output / "settings.json").read_text())
    assert settings["cardiac"]["cardiac_phases"] == 3
    assert settings["cardiac"]["trigger_time_source"] == "acquisitions"

    # A viewer reads the series; each phase is a volume with the acquisition's spacing.
    folder = str(output / "images")
    files = SimpleITK.ImageSeriesReader.GetGDCMSeriesFileNames(folder, cine[0].SeriesInstanceUID)
    assert len(files) == 9
    times = {f: float(SimpleITK.ReadImage(f).GetMetaData("0018|1060")) for f in files}
    assert sorted(times.values()) == sorted([30.0, 430.0, 830.0] * SLICES)
    reader = SimpleITK.ImageSeriesReader()
    for time in (30.0, 430.0, 830.0):
        reader.SetFileNames([f for f in files if times[f] == time])
        volume = reader.Execute()
        assert volume.GetSize() == (COLS, ROWS, SLICES)
        assert volume.GetSpacing()[2] == pytest.approx(GAP_MM, abs=1e-3)


def test_a_cine_without_time_stamps_has_no_trigger_time(tmp_path: Path) -> None:
    raw = _cine(tmp_path / "cine.h5", stamps=False)
    output = _run("mri-recon-zero-filled", tmp_path / "recon", {"kspace": raw})
    (cine,) = _by_series(output)
    assert len(cine) == SLICES * 3 and {ds.CardiacNumberOfImages for ds in cine} == {3}
    assert not any("TriggerTime" in ds for ds in cine)
    cine.sort(key=lambda ds: int(ds.InstanceNumber))
    assert [ds.TemporalPositionIdentifier for ds in cine] == [1, 2, 3] * SLICES
    cardiac = json.loads((output / "settings.json").read_text())["cardiac"]
    assert cardiac["trigger_time_source"] == "none"
    assert "no ECG time stamps" in cardiac["note"] and "no TriggerTime" in cardiac["note"]


def test_a_cine_without_time_stamps_spreads_its_phases_over_the_rr_interval(
    tmp_path: Path,
) -> None:
    raw = _cine(tmp_path / "cine.h5", stamps=False, rr_interval_ms=900.0, heart_rate_bpm=66.7)
    output = _run("mri-recon-zero-filled", tmp_path / "recon", {"kspace": raw})
    (cine,) = _by_series(output)
    cine.sort(key=lambda ds: int(ds.InstanceNumber))
    assert [float(ds.TriggerTime) for ds in cine] == [0.0, 300.0, 600.0] * SLICES
    assert {(ds.NominalInterval, ds.HeartRate) for ds in cine} == {(900, 67)}
    cardiac = json.loads((output / "settings.json").read_text())["cardiac"]
    assert cardiac["trigger_time_source"] == "header" and "900 ms" in cardiac["note"]
