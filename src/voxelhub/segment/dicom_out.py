"""DICOM outputs of a segmentation: a SEG of the label map and a TID 1500 SR of volumes.

Both reference the source series; both are built by highdicom, so they are valid once
built (and checked with dciodvfy in the tests).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from voxelhub.segment.errors import SegmentError
from voxelhub.segment.labels import LabelInfo
from voxelhub.segment.seg_sources import seg_sources

# CID 7162 (segmentation algorithm families).
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")
HISTOGRAM_ANALYSIS = Code("123105", "DCM", "Histogram Analysis")
VOLUME = Code("118565006", "SCT", "Volume")
DEVICE_OBSERVER = hd.sr.CodedConcept("121007", "DCM", "Device")
MILLILITER = Code("mL", "UCUM", "milliliter")
_PROCEDURES = {
    "CT": Code("25045-6", "LN", "CT unspecified body region"),
    "MR": Code("25056-3", "LN", "MRI unspecified body region"),
}
_IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")
_MAX_CONTENT_LABEL = 16


@dataclass(frozen=True)
class AlgorithmInfo:
    """The algorithm a SEG names as the author of its automatic segments."""

    name: str
    version: str
    _: KW_ONLY
    family: Code = ARTIFICIAL_INTELLIGENCE


def content_label(text: str) -> str:
    """A Content Label (CS: upper case, digits, '_' and space, 16 characters at most).

    >>> content_label("spleen-ct seg")
    'SPLEEN_CT_SEG'
    """
    label = "".join(c if c.isalnum() else "_" for c in text.upper())
    return label[:_MAX_CONTENT_LABEL] or "SEGMENTATION"


def segment_numbers(
    labels: npt.NDArray[np.integer], values: Sequence[int]
) -> npt.NDArray[np.uint8]:
    """`labels` renumbered 1..n in the order of `values` (a SEG numbers its segments so)."""
    table = np.zeros(max(int(labels.max(initial=0)), *values, 0) + 1, dtype=np.uint8)
    for number, value in enumerate(sorted(values), start=1):
        table[value] = number
    stray = sorted({int(v) for v in np.unique(labels)} - {0, *values})
    if stray:
        raise SegmentError(f"labels {stray} have no segment describing them.")
    return np.asarray(table[labels], dtype=np.uint8)


def segmentation(
    source: Sequence[Dataset],
    labels: npt.NDArray[np.integer],
    segments: Sequence[LabelInfo],
    *,
    algorithm: AlgorithmInfo,
    series_description: str,
    label: str = "SEGMENTATION",
    descriptions: Mapping[int, str] | None = None,
    labelmap: bool = False,
) -> hd.seg.Segmentation:
    """A SEG of a (slice, row, column) label map on the grid of the volume of `source`.

    `source` holds the series' instances, in any order; the labels lie on the volume
    `voxelhub.dicom.volume.series_volume` makes of them. Each SEG frame lies on, and
    references, the acquired image (single-frame slice or Enhanced frame) it overlays; a
    gantry-tilted series' labels are carried back onto its slices (see `seg_sources`).
    Segments are numbered 1..n in label order; `labelmap` writes a LABELMAP SEG (one
    frame per slice) instead of BINARY frames per segment.
    """
    sources = seg_sources(source)
    if labels.shape != sources.slices.shape:
        slices, rows, columns = sources.slices.shape
        raise SegmentError(
            f"the label map has shape {labels.shape} but the volume of its series has "
            f"{slices} slices of {rows}x{columns}."
        )
    ordered = sorted(segments, key=lambda s: s.value)
    frames = sources.frames(segment_numbers(labels, [s.value for s in ordered]))
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm.name, family=algorithm.family, version=algorithm.version
    )
    items = []
    for number, segment in enumerate(ordered, start=1):
        item = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=segment.name,
            segmented_property_category=segment.category,
            segmented_property_type=segment.property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=identification,
        )
        item.SegmentDescription = (descriptions or {}).get(segment.value, segment.name)[:64]
        items.append(item)
    seg = hd.seg.Segmentation(
        source_images=list(sources.images),
        pixel_array=frames,
        segmentation_type=(
            hd.seg.SegmentationTypeValues.LABELMAP
            if labelmap
            else hd.seg.SegmentationTypeValues.BINARY
        ),
        segment_descriptions=items,
        series_instance_uid=hd.UID(),
        series_number=int(source[0].get("SeriesNumber") or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="voxelhub",
        manufacturer_model_name=algorithm.name[:64],
        software_versions=algorithm.version,
        device_serial_number="0",
        content_label=content_label(label),
        content_description=series_description[:64],
        omit_empty_frames=bool(frames.any()) and not labelmap,
    )
    seg.SeriesDescription = series_description[:64]
    return seg


def measurement_report(
    seg: Dataset,
    source: Sequence[Dataset],
    volumes_ml: Mapping[int, float],
    segments: Sequence[LabelInfo],
    *,
    algorithm: AlgorithmInfo,
) -> hd.sr.Comprehensive3DSR:
    """A TID 1500 measurement report: the volume (mL) of every segment of `seg`."""
    first = source[0]
    algorithm_id = hd.sr.AlgorithmIdentification(name=algorithm.name, version=algorithm.version)
    observer = hd.sr.ObserverContext(
        observer_type=DEVICE_OBSERVER,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=algorithm.name[:64], manufacturer_name="voxelhub"
        ),
    )
    groups = []
    for number, segment in enumerate(sorted(segments, key=lambda s: s.value), start=1):
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=hd.UID(), identifier=f"{segment.name} (segment {number})"[:64]
                ),
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=seg.SOPClassUID,
                    sop_instance_uid=seg.SOPInstanceUID,
                    segment_number=number,
                    source_series=hd.sr.SourceSeriesForSegmentation(first.SeriesInstanceUID),
                ),
                finding_type=segment.property_type,
                finding_category=segment.category,
                algorithm_id=algorithm_id,
                measurements=[
                    hd.sr.Measurement(
                        name=VOLUME,
                        value=round(float(volumes_ml.get(segment.value, 0.0)), 3),
                        unit=MILLILITER,
                        algorithm_id=algorithm_id,
                    )
                ],
            )
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=_PROCEDURES.get(str(first.get("Modality", "")), _IMAGING_PROCEDURE),
        imaging_measurements=groups,
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[seg, *source],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=int(first.get("SeriesNumber") or 0) + 1001,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="voxelhub",
        is_complete=True,
        is_final=False,
        record_evidence=True,
    )
    sr.SeriesDescription = f"{algorithm.name} volumes"[:64]
    return sr
