"""A DICOM series → a volume in real units, with the series kept in slice order."""

from __future__ import annotations

from voxelhub.algorithms.pipeline.errors import OperatorError
from voxelhub.algorithms.pipeline.operator import Operator, PortValues
from voxelhub.algorithms.pipeline.values import SeriesData, Volume
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.volume import instances_in_slice_order, series_to_volume


class SeriesToVolume(Operator):
    """Builds the (slice, row, column) volume of a series (HU for CT).

    The volume's `series` lists the datasets in slice order (by position along the slice
    normal), so writers can reference the source instance of each slice. A volume of
    Enhanced (multi-frame) images has no source instance per slice, so no `series`.
    """

    input_ports = {"series": SeriesData}
    output_ports = {"volume": Volume}

    def compute(self, inputs: PortValues) -> dict[str, object]:
        series = inputs.get("series", SeriesData)
        try:
            array, geometry = series_to_volume(series.datasets)
        except DicomError as err:
            raise OperatorError(
                self.name, f"series {series.series_instance_uid} is not a volume: {err.message}"
            ) from err
        ordered = instances_in_slice_order(series.datasets)
        source = None if ordered is None else SeriesData(series.series_instance_uid, ordered)
        return {"volume": Volume(array, geometry, series=source)}
