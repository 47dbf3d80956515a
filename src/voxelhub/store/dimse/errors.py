"""Errors of the DIMSE service."""

from voxelhub.core.errors import ConfigurationError, VoxelhubError


class DimseConfigError(ConfigurationError):
    """The DIMSE service is configured with a value it cannot use."""

    code = "dimse_config_error"


class DimseProtocolError(VoxelhubError):
    """A peer sent bytes that break the DICOM upper-layer protocol; the association ends."""

    code = "dimse_protocol_error"
