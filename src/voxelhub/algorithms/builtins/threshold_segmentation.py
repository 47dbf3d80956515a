"""`threshold-segmentation`: body, lungs and bone of a CT series by Hounsfield thresholds.

The body outline is the largest region above -500 HU with its holes filled slice by slice;
inside it, voxels below -500 HU are lung and voxels from 300 HU up are bone; the rest of
the outline is the body segment (soft tissue and fat). The labels are cleaned up (the
body keeps its largest component, the lungs have their holes filled), written as a DICOM
SEG referencing the CT series, and measured (voxel counts and mL per segment).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.sr.coding import Code

from voxelhub.algorithms.builtins.manifest import input_entry, input_path, read_manifest
from voxelhub.algorithms.builtins.spec import BuiltinSpec, InterfaceSpec, Resources
from voxelhub.algorithms.pipeline import BuiltPipeline, Pipeline, Segment, Volume
from voxelhub.algorithms.pipeline.morphology import fill_holes, largest_component
from voxelhub.algorithms.pipeline.operators import (
    HISTOGRAM_ANALYSIS,
    AlgorithmInfo,
    DicomSeriesLoader,
    Inference,
    JsonWriter,
    Measure,
    PostProcess,
    SegWriter,
    SeriesRules,
    SeriesSelector,
    SeriesToVolume,
)

INPUT, SEGMENTATION, MEASUREMENTS = "ct", "segmentation", "measurements"
AIR_HU = -500  # between lung (about -850) and fat (about -100)
BONE_HU = 300  # above contrast-enhanced soft tissue, below cortical bone
BODY, LUNGS, BONE = 1, 2, 3

# SNOMED CT codes (CID 7150 categories, CID 7151/7166 types).
_TISSUE = Code("85756007", "SCT", "Tissue")
_ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
SEGMENTS = (
    Segment(
        BODY,
        "Body",
        description="Soft tissue and fat in the body outline, without lungs and bone",
        category=_TISSUE,
        property_type=Code("87784001", "SCT", "Soft tissue"),
    ),
    Segment(
        LUNGS,
        "Lungs",
        description=f"Air-filled lung below {AIR_HU} HU inside the body",
        category=_ANATOMICAL_STRUCTURE,
        property_type=Code("39607008", "SCT", "Lung"),
    ),
    Segment(
        BONE,
        "Bone",
        description=f"Bone at {BONE_HU} HU and above",
        category=_TISSUE,
        property_type=Code("272673000", "SCT", "Bone"),
    ),
)

SPEC = BuiltinSpec(
    slug="threshold-segmentation",
    title="Threshold segmentation (CT)",
    description="Segments the body, lungs and bone of a CT series by Hounsfield unit "
    "thresholds; writes a DICOM SEG and the volume of each segment in mL.",
    inputs=(InterfaceSpec(interface=INPUT, kind="dicom_series", description="A CT series"),),
    outputs=(
        InterfaceSpec(interface=SEGMENTATION, kind="dicom_series", description="DICOM SEG"),
        InterfaceSpec(interface=MEASUREMENTS, kind="json", description="Volumes per segment"),
    ),
    resources=Resources(queue="cpu", memory_mb=2048, time_limit_s=600),
)


def label_ct(volume: Volume) -> npt.NDArray[np.uint8]:
    """Labels BODY, LUNGS and BONE of a CT volume in HU (0 outside the body).

    >>> from voxelhub.dicom.synthetic import phantom_volume
    >>> from voxelhub.dicom.volume import Geometry
    >>> hu = phantom_volume(slices=4, size=32)
    >>> labels = label_ct(Volume(hu, Geometry((1, 1, 1), (0, 0, 0), (1, 0, 0, 0, 1, 0, 0, 0, 1))))
    >>> sorted(int(v) for v in np.unique(labels))
    [0, 1, 2, 3]
    """
    hu = volume.array
    outline = fill_holes(largest_component(hu > AIR_HU))
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[outline] = BODY
    labels[outline & (hu <= AIR_HU)] = LUNGS
    labels[outline & (hu >= BONE_HU)] = BONE
    return labels


@cache
def pipeline() -> BuiltPipeline:
    """CT folder → CT series → volume → labels → cleaned labels → SEG and measurements."""
    flow = Pipeline()
    loader = DicomSeriesLoader()
    selector = SeriesSelector(SeriesRules(modality="CT", min_images=2))
    to_volume, infer = SeriesToVolume(), Inference(label_ct, SEGMENTS)
    clean = PostProcess(keep_largest=[BODY], fill_holes=[LUNGS])
    algorithm = AlgorithmInfo("voxelhub threshold-segmentation", "1", family=HISTOGRAM_ANALYSIS)
    seg, measure = SegWriter(SEGMENTATION, algorithm), Measure()
    measurements = JsonWriter(MEASUREMENTS)
    flow.input("folder", loader, "folder")
    flow.connect(loader, "series", selector, "series")
    flow.connect(selector, "series", to_volume, "series")
    flow.connect(to_volume, "volume", infer, "volume")
    flow.connect(infer, "labels", clean, "labels")
    flow.connect(clean, "labels", seg, "labels")
    flow.connect(clean, "labels", measure, "labels")
    flow.connect(measure, "measurements", measurements, "value")
    for writer in (seg, measurements):
        flow.input("output_dir", writer, "output_dir")
    flow.output("measurements", measure, "measurements")
    return flow.build()


def run(input_dir: Path, output_dir: Path, model_dir: Path) -> None:
    """Write output/segmentation/seg.dcm and output/measurements.json for the `ct` input."""
    folder = input_path(input_dir, input_entry(read_manifest(input_dir), INPUT))
    pipeline().run({"folder": folder, "output_dir": output_dir})
