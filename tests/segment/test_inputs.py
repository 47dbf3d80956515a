from pathlib import Path

import numpy as np
import pytest
import SimpleITK

from tests.dicom.helpers import enhanced
from tests.segment.conftest import image_of
from voxelhub.dicom.header import write_part10
from voxelhub.dicom.synthetic import ct_phantom, phantom_volume
from voxelhub.segment import SegmentError
from voxelhub.segment.geometry import coregister
from voxelhub.segment.inputs import assign_roles, parse_spec, read_inputs
from voxelhub.segment.model import InputRole, ModelMetadata
from voxelhub.segment.synthetic import (
    SyntheticCase,
    dicom_series,
    mr_brain_case,
    write_series,
)

BRAIN = ModelMetadata(
    name="brats",
    version="1",
    modality="MR",
    inputs=tuple(InputRole(role=r, modality="MR") for r in ("t1c", "t1", "t2", "flair")),
    labels=(),
)
DESCRIPTIONS = {"t1c": "AX T1 POST GD", "t1": "AX T1 SE", "t2": "AX T2 FSE", "flair": "AX T2 FLAIR"}


@pytest.fixture(scope="module")
def mr_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four MR series of one study in one folder, named as scanners name them."""
    case = mr_brain_case(shape=(8, 24, 24), seed=1)
    folder = tmp_path_factory.mktemp("mr-study")
    study, frame = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    for number, (role, description) in enumerate(DESCRIPTIONS.items(), start=1):
        write_series(
            dicom_series(
                case.channels[role],
                case.geometry,
                modality="MR",
                series_description=description,
                study_instance_uid=study,
                frame_of_reference_uid=frame,
                series_number=number,
            ),
            folder / role,
        )
    return folder


def test_a_dicom_series_folder_becomes_one_volume_in_slice_order(
    ct_series: Path, ct: SyntheticCase
) -> None:
    (item,) = read_inputs([ct_series])
    assert item.modality == "CT" and item.is_dicom
    assert np.array_equal(SimpleITK.GetArrayFromImage(item.image), ct.image)
    assert item.image.GetSpacing() == pytest.approx(ct.geometry.spacing)
    positions = [float(ds.ImagePositionPatient[2]) for ds in item.datasets]
    assert positions == sorted(positions)


def test_an_enhanced_ct_becomes_one_volume_with_its_one_instance(tmp_path: Path) -> None:
    series = ct_phantom(slices=5, size=16)
    folder = tmp_path / "enhanced"
    folder.mkdir()
    (folder / "image.dcm").write_bytes(write_part10(enhanced(series)))
    (folder / "notes.txt").write_text("not DICOM")
    (item,) = read_inputs([folder])
    assert item.modality == "CT" and item.is_dicom and len(item.datasets) == 1
    assert item.describe().startswith(f"{folder} (CT 'Synthetic CT phantom")
    assert np.array_equal(SimpleITK.GetArrayFromImage(item.image), phantom_volume(5, 16))
    assert item.image.GetSpacing() == pytest.approx((1.5, 1.5, 2.5))


def test_a_folder_of_cine_frames_is_refused(tmp_path: Path) -> None:
    cine = ct_phantom(slices=1, size=8)[0]
    cine.NumberOfFrames, cine.PixelData = 2, cine.PixelData * 2
    (tmp_path / "cine.dcm").write_bytes(write_part10(cine))
    with pytest.raises(SegmentError, match="no single-frame or Enhanced DICOM image series"):
        read_inputs([tmp_path])


@pytest.mark.parametrize("suffix", [".nii.gz", ".mha"])
def test_image_files_are_read_with_their_geometry(
    suffix: str, ct: SyntheticCase, tmp_path: Path
) -> None:
    path = tmp_path / f"ct{suffix}"
    SimpleITK.WriteImage(image_of(ct), str(path))
    (item,) = read_inputs([f"ct={path}"])
    assert item.role == "ct" and not item.is_dicom
    assert item.image.GetOrigin() == pytest.approx(ct.geometry.origin)


def test_a_missing_slice_is_refused(ct_series: Path, tmp_path: Path) -> None:
    import shutil

    folder = Path(shutil.copytree(ct_series, tmp_path / "gappy"))
    sorted(folder.iterdir())[5].unlink()
    with pytest.raises(SegmentError, match="not evenly spaced"):
        read_inputs([folder])


def test_series_are_matched_to_roles_by_description(mr_study: Path) -> None:
    ordered = assign_roles(read_inputs([mr_study]), BRAIN)
    assert [i.series_description for i in ordered] == list(DESCRIPTIONS.values())


def test_named_roles_override_the_rules(mr_study: Path) -> None:
    specs = [
        f"t1c={mr_study / 't1'}",
        f"t1={mr_study / 't1c'}",
        str(mr_study / "t2"),
        str(mr_study / "flair"),
    ]
    ordered = assign_roles(read_inputs(specs), BRAIN)
    assert ordered[0].series_description == "AX T1 SE"


def test_a_missing_series_is_named(mr_study: Path) -> None:
    with pytest.raises(SegmentError, match="none found for flair"):
        assign_roles(read_inputs([mr_study / r for r in ("t1c", "t1", "t2")]), BRAIN)


def test_a_wrong_modality_is_refused(mr_study: Path) -> None:
    ct_model = ModelMetadata(
        name="spleen",
        version="1",
        modality="CT",
        inputs=(InputRole(role="ct", modality="CT"),),
        labels=(),
    )
    with pytest.raises(SegmentError, match="is MR, but model 'spleen' segments CT images"):
        assign_roles(read_inputs([mr_study / "t1"]), ct_model)


def test_parse_spec() -> None:
    assert parse_spec("t2=/a/b.nii") == ("t2", Path("/a/b.nii"))
    assert parse_spec("/a/b.nii") == (None, Path("/a/b.nii"))


def test_inputs_on_other_grids_are_resampled_and_must_overlap(ct: SyntheticCase) -> None:
    image = image_of(ct)
    coarse = SimpleITK.Resample(
        image,
        [32, 32, 12],
        SimpleITK.Transform(),
        SimpleITK.sitkLinear,
        image.GetOrigin(),
        [s * 2 for s in image.GetSpacing()],
        image.GetDirection(),
    )
    aligned = coregister([image, coarse], ["a", "b"])
    assert aligned[1].GetSize() == image.GetSize()
    far = SimpleITK.Image(image)
    far.SetOrigin([o + 1000.0 for o in image.GetOrigin()])
    with pytest.raises(SegmentError, match="covers 0% of the region"):
        coregister([image, far], ["a", "far"])
