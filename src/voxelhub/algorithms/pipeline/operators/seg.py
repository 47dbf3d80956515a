"""A label volume → a DICOM Segmentation (highdicom) referencing its source series."""

from __future__ import annotations

from pathlib import Path

from voxelhub.algorithms.pipeline.errors import OperatorError
from voxelhub.algorithms.pipeline.operator import Operator, PortValues
from voxelhub.algorithms.pipeline.operators._paths import checked_interface, output_folder
from voxelhub.algorithms.pipeline.values import LabelVolume, SeriesData
from voxelhub.segment.dicom_out import (
    ARTIFICIAL_INTELLIGENCE,
    HISTOGRAM_ANALYSIS,
    AlgorithmInfo,
    segmentation,
)
from voxelhub.segment.errors import SegmentError
from voxelhub.segment.labels import LabelInfo

__all__ = [
    "ARTIFICIAL_INTELLIGENCE",
    "HISTOGRAM_ANALYSIS",
    "SEG_FILE",
    "AlgorithmInfo",
    "SegWriter",
]

SEG_FILE = "seg.dcm"


class SegWriter(Operator):
    """Writes a label volume as a binary DICOM SEG at output/<interface>/seg.dcm.

    Each described label becomes one segment (numbered 1..n in label order) with its name,
    description and coded category and type; each frame lies on and references the
    acquired image of its slice (a single-frame instance or a frame of an Enhanced image,
    a gantry-tilted slice where it was acquired), so the label volume must come from a
    series (`LabelVolume.series`). The DICOM writing itself is
    `voxelhub.segment.dicom_out.segmentation`.
    """

    input_ports = {"labels": LabelVolume, "output_dir": Path}
    output_ports = {"path": Path}

    def __init__(
        self,
        interface: str,
        algorithm: AlgorithmInfo,
        *,
        series_description: str | None = None,
        name: str | None = None,
    ) -> None:
        self.interface = checked_interface(interface)
        super().__init__(name=name or f"SegWriter[{interface}]")
        self.algorithm = algorithm
        self.series_description = (series_description or f"{algorithm.name} segmentation")[:64]

    def compute(self, inputs: PortValues) -> dict[str, object]:
        labels = inputs.get("labels", LabelVolume)
        series = self._source(labels)
        try:
            seg = segmentation(
                series.datasets,
                labels.array,
                [
                    LabelInfo(s.label, s.name, category=s.category, property_type=s.property_type)
                    for s in labels.segments
                ],
                algorithm=self.algorithm,
                series_description=self.series_description,
                label=self.interface,
                descriptions={s.label: s.description for s in labels.segments},
            )
        except SegmentError as err:
            raise OperatorError(self.name, str(err)) from err
        path = output_folder(inputs.get("output_dir", Path), self.interface) / SEG_FILE
        seg.save_as(path, enforce_file_format=True)
        return {"path": path}

    def _source(self, labels: LabelVolume) -> SeriesData:
        series = labels.series
        if series is None:
            raise OperatorError(
                self.name,
                "a DICOM SEG must reference the series it segments, and this label volume "
                "was not built from one; write it with MhaWriter instead.",
            )
        return series
