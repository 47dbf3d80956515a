"""Writing a case's results: the mask, the volumes JSON and, for DICOM inputs, SEG and SR."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK

from voxelhub.segment.dicom_out import AlgorithmInfo, measurement_report, segmentation
from voxelhub.segment.errors import SegmentError
from voxelhub.segment.geometry import same_grid
from voxelhub.segment.inputs import InputImage
from voxelhub.segment.model import ModelMetadata

MASK_FORMATS = {"mha": ".mha", "nifti": ".nii.gz"}


@dataclass(frozen=True)
class LabelVolume:
    """How much of one label there is."""

    label: int
    name: str
    voxels: int
    volume_ml: float


@dataclass(frozen=True)
class OutputFiles:
    """The files `write_outputs` wrote (SEG and SR only for DICOM inputs)."""

    mask: Path
    volumes: Path
    seg: Path | None = None
    sr: Path | None = None


def volumes_ml(labels: SimpleITK.Image, label_names: Mapping[int, str]) -> list[LabelVolume]:
    """Voxel count and volume (mL) of every named label, 0 for labels not present.

    >>> image = SimpleITK.GetImageFromArray(np.ones((10, 10, 10), dtype=np.uint8))
    >>> image.SetSpacing((2.0, 2.0, 2.5))
    >>> volumes_ml(image, {1: "spleen"})[0].volume_ml
    10.0
    """
    array = SimpleITK.GetArrayViewFromImage(labels)
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0  # type: ignore[no-untyped-call]
    # One comparison per named label: no int64 copy of the whole map (a few labels, many voxels).
    counts = {value: int(np.count_nonzero(array == value)) for value in label_names}
    return [
        LabelVolume(value, name, counts[value], round(counts[value] * voxel_ml, 4))
        for value, name in sorted(label_names.items())
    ]


def write_outputs(
    output_dir: Path,
    labels: SimpleITK.Image,
    metadata: ModelMetadata,
    inputs: Sequence[InputImage],
    *,
    runtime: str | None = None,
    mask_format: Literal["mha", "nifti"] = "mha",
    labelmap_seg: bool = False,
) -> OutputFiles:
    """Write mask, volumes JSON and (when the first input is a DICOM series) SEG and SR.

    `labels` must lie on the first input's grid, as `SegmentationModel.predict` returns it.
    """
    reference = inputs[0]
    if not same_grid(labels, reference.image):
        raise SegmentError(
            "the label map is not on the grid of the first input; give the "
            "map `predict` returned for these inputs."
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    mask = output_dir / f"mask{MASK_FORMATS[mask_format]}"
    SimpleITK.WriteImage(labels, str(mask), useCompression=True)
    volumes = volumes_ml(labels, metadata.label_names)
    document: dict[str, object] = {
        "model": {"name": metadata.name, "version": metadata.version, "runtime": runtime},
        "inputs": [
            {"role": role, "source": item.source, "series_description": item.series_description}
            for role, item in zip(metadata.roles, inputs, strict=False)
        ],
        "spacing_mm": list(labels.GetSpacing()),  # type: ignore[no-untyped-call]
        "labels": [vars(v) for v in volumes],
    }
    volumes_path = output_dir / "volumes.json"
    volumes_path.write_text(json.dumps(document, indent=2))
    if not reference.is_dicom:
        return OutputFiles(mask, volumes_path)
    algorithm = AlgorithmInfo(metadata.name[:64], metadata.version)
    seg = segmentation(
        reference.datasets,
        SimpleITK.GetArrayFromImage(labels),
        metadata.labels,
        algorithm=algorithm,
        series_description=f"{metadata.name} segmentation",
        label=metadata.name,
        labelmap=labelmap_seg,
    )
    seg_path, sr_path = output_dir / "seg.dcm", output_dir / "sr.dcm"
    seg.save_as(seg_path, enforce_file_format=True)
    report = measurement_report(
        seg,
        reference.datasets,
        {v.label: v.volume_ml for v in volumes},
        metadata.labels,
        algorithm=algorithm,
    )
    report.save_as(sr_path, enforce_file_format=True)
    return OutputFiles(mask, volumes_path, seg_path, sr_path)
