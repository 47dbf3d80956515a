"""Built-in algorithms run on a prepared working directory, as the built-in executor runs them;
their outputs are read back (the SEG with highdicom) and compared with the phantom."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pytest
from pydicom.dataset import Dataset

from tests.dicom.helpers import enhanced
from voxelhub.algorithms.builtins import BUILTINS, RUNNERS, InputError, register_all
from voxelhub.algorithms.builtins.threshold_segmentation import AIR_HU, BONE_HU
from voxelhub.algorithms.contract import ExecutionRequest, Outcome
from voxelhub.algorithms.pipeline import SeriesSelectionError
from voxelhub.algorithms.schemas import Interface, Resources
from voxelhub.dicom.synthetic import BONE, LUNG, ct_phantom, phantom_volume
from voxelhub.dicom.volume import Geometry, write_mha

SLICES, SIZE = 32, 128


@dataclass(frozen=True)
class Workdir:
    root: Path

    @property
    def input(self) -> Path:
        return self.root / "input"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def model(self) -> Path:
        return self.root / "model"


def _workdir(root: Path, algorithm: str, *, inputs: list[dict[str, Any]]) -> Workdir:
    work = Workdir(root)
    for folder in (work.input, work.output, work.model):
        folder.mkdir(parents=True)
    manifest = {"job_id": "job-1", "algorithm": algorithm, "inputs": inputs}
    (work.input / "inputs.json").write_text(json.dumps(manifest))
    return work


def _write_series(series: list[Dataset], folder: Path) -> None:
    folder.mkdir(parents=True)
    for ds in series:
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)


def _run(slug: str, work: Workdir) -> None:
    RUNNERS[slug](work.input, work.output, work.model)


@dataclass(frozen=True)
class Segmented:
    source: list[Dataset]
    work: Workdir
    seg: hd.seg.Segmentation
    measurements: dict[str, Any]


@pytest.fixture(scope="module")
def segmented(tmp_path_factory: pytest.TempPathFactory) -> Segmented:
    """The threshold segmentation of a 32-slice 128x128 phantom, run once for the module."""
    source = ct_phantom(slices=SLICES, size=SIZE)
    work = _workdir(
        tmp_path_factory.mktemp("threshold"),
        "threshold-segmentation",
        inputs=[{"interface": "ct", "kind": "dicom_series", "path": "ct"}],
    )
    _write_series(source, work.input / "ct")
    _run("threshold-segmentation", work)
    seg = hd.seg.segread(work.output / "segmentation" / "seg.dcm")
    measurements = json.loads((work.output / "measurements.json").read_text())
    return Segmented(source, work, seg, measurements)


def test_the_seg_describes_body_lungs_and_bone(segmented: Segmented) -> None:
    seg = segmented.seg
    assert seg.SOPClassUID == hd.UID("1.2.840.10008.5.1.4.1.1.66.4")
    assert [(s.SegmentNumber, s.SegmentLabel) for s in seg.SegmentSequence] == [
        (1, "Body"),
        (2, "Lungs"),
        (3, "Bone"),
    ]
    types = [s.SegmentedPropertyTypeCodeSequence[0] for s in seg.SegmentSequence]
    assert [(t.CodeValue, t.CodingSchemeDesignator) for t in types] == [
        ("87784001", "SCT"),
        ("39607008", "SCT"),
        ("272673000", "SCT"),
    ]
    categories = [
        s.SegmentedPropertyCategoryCodeSequence[0].CodeMeaning for s in seg.SegmentSequence
    ]
    assert categories == ["Tissue", "Anatomical Structure", "Tissue"]
    assert all(s.SegmentAlgorithmType == "AUTOMATIC" for s in seg.SegmentSequence)
    assert "without lungs and bone" in seg.SegmentSequence[0].SegmentDescription


def test_the_seg_references_the_source_series(segmented: Segmented) -> None:
    seg, source = segmented.seg, segmented.source
    assert seg.StudyInstanceUID == source[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    assert seg.PatientID == source[0].PatientID
    assert seg.SeriesInstanceUID != source[0].SeriesInstanceUID
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == source[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == {
        ds.SOPInstanceUID for ds in source
    }


def test_the_seg_masks_lie_on_the_source_slices(segmented: Segmented) -> None:
    seg, source = segmented.seg, segmented.source
    shared = seg.SharedFunctionalGroupsSequence[0]
    spacing = shared.PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in spacing] == [float(v) for v in source[0].PixelSpacing]
    orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    assert [float(v) for v in orientation] == [float(v) for v in source[0].ImageOrientationPatient]
    positions = {ds.SOPInstanceUID: [float(v) for v in ds.ImagePositionPatient] for ds in source}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        uid = frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        assert [float(v) for v in position] == positions[uid]
    # ct_phantom's slices rise along z in list order, as phantom_volume's slices do.
    masks = seg.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in source], assert_missing_frames_are_empty=True
    )
    assert masks.shape == (SLICES, SIZE, SIZE, 3)
    hu = phantom_volume(SLICES, SIZE)
    assert np.array_equal(masks[..., 2].astype(bool), hu == BONE)
    lungs = masks[..., 1].astype(bool)
    assert np.all(lungs[hu == LUNG])  # every lung voxel, plus the lesion the lungs enclose
    assert not np.any(lungs & (hu == BONE))
    body = masks[..., 0].astype(bool)
    assert not np.any(body & lungs) and not np.any(body[hu == -1000])
    assert np.all(body[(hu > AIR_HU) & (hu < BONE_HU) & ~lungs])


def test_measurements_are_plausible(segmented: Segmented) -> None:
    measurements = segmented.measurements
    voxel_ml = 1.5 * 1.5 * 2.5 / 1000
    assert measurements["voxel_volume_ml"] == pytest.approx(voxel_ml)
    by_name = {s["name"]: s for s in measurements["segments"]}
    assert set(by_name) == {"Body", "Lungs", "Bone"}
    for segment in by_name.values():
        assert segment["volume_ml"] == pytest.approx(segment["voxels"] * voxel_ml, abs=1e-3)
    assert by_name["Lungs"]["volume_ml"] > 0
    assert by_name["Bone"]["voxels"] == int((phantom_volume(SLICES, SIZE) == BONE).sum())
    assert (
        by_name["Body"]["volume_ml"] > by_name["Lungs"]["volume_ml"] > by_name["Bone"]["volume_ml"]
    )
    assert measurements["series_instance_uid"] == segmented.source[0].SeriesInstanceUID


def test_threshold_segmentation_refuses_a_folder_without_ct(tmp_path: Path) -> None:
    work = _workdir(
        tmp_path, "t", inputs=[{"interface": "ct", "kind": "dicom_series", "path": "ct"}]
    )
    series = ct_phantom(slices=3, size=8)
    for ds in series:
        ds.Modality = "MR"
    _write_series(series, work.input / "ct")
    with pytest.raises(SeriesSelectionError, match=r"no series has modality CT.*modality is MR"):
        _run("threshold-segmentation", work)


def test_threshold_segmentation_of_one_enhanced_ct_image(tmp_path: Path) -> None:
    """One multi-frame instance is a volume of many images: selected, segmented, and its
    SEG's frames reference the image's frames."""
    work = _workdir(
        tmp_path, "t", inputs=[{"interface": "ct", "kind": "dicom_series", "path": "ct"}]
    )
    image = enhanced(ct_phantom(slices=6, size=32))
    _write_series([image], work.input / "ct")
    _run("threshold-segmentation", work)
    seg = hd.seg.segread(work.output / "segmentation" / "seg.dcm")
    sources = {
        (str(ref.ReferencedSOPInstanceUID), int(ref.ReferencedFrameNumber))
        for frame in seg.PerFrameFunctionalGroupsSequence
        for derivation in frame.DerivationImageSequence
        for ref in derivation.SourceImageSequence
    }
    assert {uid for uid, _ in sources} == {image.SOPInstanceUID}
    assert {number for _, number in sources} <= set(range(1, 7))


def test_a_single_image_is_no_volume_to_segment(tmp_path: Path) -> None:
    work = _workdir(
        tmp_path, "t", inputs=[{"interface": "ct", "kind": "dicom_series", "path": "ct"}]
    )
    _write_series(ct_phantom(slices=1, size=8), work.input / "ct")
    with pytest.raises(SeriesSelectionError, match="only 1 images"):
        _run("threshold-segmentation", work)


def test_series_statistics_of_a_dicom_series(tmp_path: Path) -> None:
    work = _workdir(
        tmp_path,
        "series-statistics",
        inputs=[{"interface": "image", "kind": "dicom_series", "path": "image"}],
    )
    source = ct_phantom(slices=4, size=32)
    _write_series(source, work.input / "image")
    _run("series-statistics", work)
    stats = json.loads((work.output / "statistics.json").read_text())
    hu = phantom_volume(4, 32)
    assert stats["shape"] == [4, 32, 32]
    assert stats["spacing"] == pytest.approx([1.5, 1.5, 2.5])
    assert (stats["min"], stats["max"]) == (-1000.0, 700.0)
    assert stats["mean"] == pytest.approx(float(hu.mean()))
    assert (stats["unit"], stats["modality"]) == ("HU", "CT")
    assert stats["series_instance_uid"] == source[0].SeriesInstanceUID


def test_series_statistics_of_an_image_file(tmp_path: Path) -> None:
    work = _workdir(
        tmp_path,
        "series-statistics",
        inputs=[{"interface": "image", "kind": "image", "path": "image/ct.mha"}],
    )
    (work.input / "image").mkdir()
    geometry = Geometry((0.5, 0.5, 3.0), (1.0, 2.0, 3.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    write_mha(phantom_volume(3, 16), geometry, work.input / "image" / "ct.mha")
    _run("series-statistics", work)
    stats = json.loads((work.output / "statistics.json").read_text())
    assert stats["shape"] == [3, 16, 16]
    assert stats["spacing"] == pytest.approx([0.5, 0.5, 3.0])
    assert stats["origin"] == pytest.approx([1.0, 2.0, 3.0])
    assert stats["unit"] == ""


@pytest.mark.parametrize(
    "payload", [{"a": [1, 2.5, None], "b": "text"}, [1, 2, 3], "just text", 42]
)
def test_echo_returns_an_inline_payload(tmp_path: Path, payload: object) -> None:
    work = _workdir(
        tmp_path, "echo", inputs=[{"interface": "payload", "kind": "json", "value": payload}]
    )
    _run("echo", work)
    assert json.loads((work.output / "payload.json").read_text()) == payload


def test_echo_reads_a_payload_file_and_names_a_missing_input(tmp_path: Path) -> None:
    work = _workdir(
        tmp_path, "echo", inputs=[{"interface": "payload", "kind": "json", "path": "p.json"}]
    )
    (work.input / "p.json").write_text('{"x": 1}')
    _run("echo", work)
    assert json.loads((work.output / "payload.json").read_text()) == {"x": 1}
    other = _workdir(
        tmp_path / "other", "echo", inputs=[{"interface": "other", "kind": "json", "value": 1}]
    )
    with pytest.raises(InputError, match=r"no input 'payload'; it was given: other \(json\)"):
        _run("echo", other)


def test_specs_are_valid_registry_entries() -> None:
    assert set(BUILTINS) == {
        "threshold-segmentation",
        "series-statistics",
        "echo",
        *(f"mri-recon-{m}" for m in ("zero-filled", "grappa", "raki", "rraki")),
        "mri-recon",
        "mri-preprocess",
        "mri-preprocess-cc",
    }
    for slug, spec in BUILTINS.items():
        assert spec.slug == slug
        dumped = spec.model_dump(mode="json")
        for interface in [*dumped["inputs"], *dumped["outputs"]]:
            Interface.model_validate(interface)
        Resources.model_validate(dumped["resources"])
    outputs = {o.interface: o.kind for o in BUILTINS["threshold-segmentation"].outputs}
    assert outputs == {"segmentation": "dicom_series", "measurements": "json"}


def test_registered_builtins_run_in_the_executor(tmp_path: Path) -> None:
    from voxelhub.algorithms.executors.builtin import BuiltinExecutor, builtin_names

    register_all()
    register_all()  # registering again is harmless
    assert set(BUILTINS) <= set(builtin_names())
    work = _workdir(
        tmp_path, "echo", inputs=[{"interface": "payload", "kind": "json", "value": {"k": 1}}]
    )
    result = BuiltinExecutor().run(
        ExecutionRequest(job_id="1", workdir=work.root, entrypoint="echo")
    )
    assert result.outcome is Outcome.succeeded, result.message
    assert json.loads((work.output / "payload.json").read_text()) == {"k": 1}


def test_builtins_import_no_web_database_or_queue_code() -> None:
    banned = ["fastapi", "starlette", "sqlalchemy", "celery", "kombu", "psycopg", "voxelhub.core"]
    code = (
        "import sys, voxelhub.algorithms.builtins;"
        f"print([m for m in {banned!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
