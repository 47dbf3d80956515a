"""Value objects of a stored DICOM instance: its keys, pixel layout and split form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Transfer syntaxes the store uses by name.
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"


@dataclass(frozen=True)
class InstanceKeys:
    """The attributes the index is built from (empty string when absent)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    study_date: str = ""
    study_time: str = ""
    accession_number: str = ""
    study_id: str = ""
    study_description: str = ""
    referring_physician_name: str = ""
    modality: str = ""
    series_number: int | None = None
    series_description: str = ""
    instance_number: int | None = None
    number_of_frames: int = 0
    rows: int | None = None
    columns: int | None = None


@dataclass(frozen=True)
class PixelDescription:
    """How the pixel data of an instance is laid out (Image Pixel module)."""

    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric_interpretation: str
    planar_configuration: int = 0
    number_of_frames: int = 1
    # "FloatPixelData" and "DoubleFloatPixelData" hold IEEE floats, not integers.
    pixel_keyword: str = "PixelData"

    @property
    def frame_bytes(self) -> int:
        """Bytes of one native (uncompressed) frame.

        Native YBR_FULL_422 keeps two samples per pixel (Y1 Y2 Cb Cr), PS3.3 C.7.6.3.1.2.
        """
        samples = self.samples_per_pixel
        if self.photometric_interpretation == "YBR_FULL_422" and samples == 3:
            samples = 2
        bits = self.rows * self.columns * samples * self.bits_allocated
        return (bits + 7) // 8


@dataclass(frozen=True)
class SplitInstance:
    """An instance taken apart for the image store.

    `header` is a complete Part-10 file of every attribute except the pixel data, in the
    original transfer syntax; where native pixel data is longer than its frames, its
    pixel data element holds just the bytes after them (little endian, as the frames),
    which a native join appends again. `frames` are the frames as they will be stored, encoded in
    `frames_transfer_syntax` (HTJ2K lossless for native frames that it can hold, the
    original syntax for frames that arrived compressed, explicit VR little endian for
    native frames HTJ2K cannot hold; the original syntax when there are no frames).
    `dataset_json` is the instance as DICOM JSON (PS3.18 F.2), with bulk data given as
    BulkDataURI.
    """

    keys: InstanceKeys
    header: bytes
    frames: tuple[bytes, ...]
    frames_transfer_syntax: str
    original_transfer_syntax: str
    pixel: PixelDescription | None
    dataset_json: dict[str, Any] = field(default_factory=dict)
