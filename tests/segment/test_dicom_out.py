import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from pydicom import dcmread

from tests.segment.conftest import image_of
from voxelhub.segment.dicom_out import AlgorithmInfo, measurement_report, segmentation
from voxelhub.segment.inputs import read_inputs
from voxelhub.segment.labels import coded_label
from voxelhub.segment.model import InputRole, ModelMetadata
from voxelhub.segment.outputs import volumes_ml, write_outputs
from voxelhub.segment.synthetic import SyntheticCase, brats_regions, mr_brain_case

DCIODVFY = Path(sys.executable).parent / "dciodvfy"
SPLEEN = ModelMetadata(
    name="Spleen CT segmentation",
    version="0.5.3",
    modality="CT",
    inputs=(InputRole(role="ct", modality="CT"),),
    labels=(coded_label(1, "spleen"),),
)


def dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, check=False)
    return [
        line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")
    ]


@pytest.mark.parametrize("labelmap", [False, True])
def test_seg_and_sr_are_valid_and_read_back(
    ct_series: Path, ct: SyntheticCase, tmp_path: Path, labelmap: bool
) -> None:
    (item,) = read_inputs([ct_series])
    labels = image_of(ct)
    labels = type(labels)(labels)  # same grid
    import SimpleITK

    mask = SimpleITK.GetImageFromArray(ct.labels)
    mask.CopyInformation(item.image)
    files = write_outputs(tmp_path, mask, SPLEEN, [item], runtime="eager", labelmap_seg=labelmap)
    assert files.seg is not None and files.sr is not None
    assert dciodvfy_errors(files.seg) == []
    seg = hd.seg.segread(files.seg)
    assert list(seg.segment_numbers) == [1]
    description = seg.get_segment_description(1)
    assert description.segmented_property_type.value == "78961009"
    assert seg.get_source_image_uids()[0][1] == item.datasets[0].SeriesInstanceUID
    volume = seg.get_volume().array
    assert int((volume > 0).sum()) == int(ct.labels.sum())
    if not labelmap:
        # dciodvfy's SR tables predate the Label Map Segmentation SOP Class, so the SR
        # check runs against the binary SEG it references.
        assert dciodvfy_errors(files.sr) == []
    report = dcmread(files.sr)
    expected = volumes_ml(mask, {1: "spleen"})[0].volume_ml
    assert expected == pytest.approx(ct.labels.sum() * np.prod(ct.geometry.spacing) / 1000)
    values = [
        float(item.MeasuredValueSequence[0].NumericValue)
        for item in _content_items(report)
        if "MeasuredValueSequence" in item
    ]
    assert values == [pytest.approx(expected, abs=1e-3)]


def _content_items(ds):  # type: ignore[no-untyped-def]
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _content_items(item)


def test_tumour_segments_are_coded(tmp_path: Path) -> None:
    from voxelhub.segment.synthetic import dicom_series

    case = mr_brain_case(shape=(8, 24, 24), seed=2)
    source = dicom_series(
        case.channels["t1c"], case.geometry, modality="MR", series_description="T1 post"
    )
    segments = [
        coded_label(1, "necrotic core"),
        coded_label(2, "edema"),
        coded_label(4, "enhancing tumor"),
    ]
    algorithm = AlgorithmInfo("BraTS", "1")
    seg = segmentation(
        source, case.labels, segments, algorithm=algorithm, series_description="tumour"
    )
    seg.save_as(tmp_path / "seg.dcm")
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []
    names = [seg.get_segment_description(n).segmented_property_type.meaning for n in (1, 2, 3)]
    assert names == ["Necrosis", "Edema", "Neoplasm"]
    report = measurement_report(
        seg, source, {1: 1.0, 2: 2.0, 4: 3.0}, segments, algorithm=algorithm
    )
    report.save_as(tmp_path / "sr.dcm")
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    assert brats_regions(case.labels).shape == (3, *case.labels.shape)


def test_stray_labels_are_refused(ct_series: Path, ct: SyntheticCase) -> None:
    from voxelhub.segment import SegmentError

    (item,) = read_inputs([ct_series])
    with pytest.raises(SegmentError, match=r"labels \[7\] have no segment"):
        segmentation(
            item.datasets,
            ct.labels * 7,
            [coded_label(1, "spleen")],
            algorithm=AlgorithmInfo("x", "1"),
            series_description="x",
        )


def test_file_inputs_get_mask_and_volumes_only(ct: SyntheticCase, tmp_path: Path) -> None:
    import json

    import SimpleITK

    path = tmp_path / "ct.nii.gz"
    SimpleITK.WriteImage(image_of(ct), str(path))
    (item,) = read_inputs([path])
    mask = SimpleITK.GetImageFromArray(ct.labels)
    mask.CopyInformation(item.image)
    files = write_outputs(tmp_path / "out", mask, SPLEEN, [item], mask_format="nifti")
    assert files.seg is None and files.mask.name == "mask.nii.gz"
    document = json.loads(files.volumes.read_text())
    assert document["labels"][0]["voxels"] == int(ct.labels.sum())
