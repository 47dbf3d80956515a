"""A DICOM series → a volume in real units, with the series it was made from."""

from __future__ import annotations

from voxelhub.algorithms.pipeline.errors import OperatorError
from voxelhub.algorithms.pipeline.operator import Operator, PortValues
from voxelhub.algorithms.pipeline.values import SeriesData, Volume
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.volume import series_to_volume, slice_sources


class SeriesToVolume(Operator):
    """Builds the (slice, row, column) volume of a series (HU for CT).

    The volume's `series` is the source series with its instances in slice order (by
    position along the slice normal), so writers can reference the acquired image of each
    slice (see `Volume`).
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
        ordered = slice_sources(series.datasets).instances
        source = SeriesData(series.series_instance_uid, ordered)
        return {"volume": Volume(array, geometry, series=source)}
