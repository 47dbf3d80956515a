"""The ISMRMRD XML header, as far as reconstruction needs it, and the `KSpace.header` keys.

fastMRI files carry the same XML as `ismrmrd_header`. `KSpace.header` holds it flattened into
JSON-friendly keys: `encoded_matrix`, `recon_matrix` ([x, y, z]), `encoded_fov_mm`,
`recon_fov_mm` ([x, y, z] in mm), `pe_limits` ([minimum, maximum, center] of
kspace_encoding_step_1), `trajectory`, and where the file says so `protocol_name`, `vendor`,
`model`, `field_strength_t`, `repetition_time_ms`, `echo_time_ms`, `inversion_time_ms`,
`flip_angle_deg`, `imaging_frequency_hz`, `patient_position`, `frame_of_reference_uid`,
`echo_times_ms` (one per contrast, where the file lists more than one TE; `echo_time_ms` is
the first), and
the subject and study: `patient_name`, `patient_id`, `patient_birth_date`, `patient_sex`,
`study_instance_uid`, `study_date`, `study_time`, `study_id`, `accession_number`,
`referring_physician_name`, `study_description` (ISMRMRD's text, e.g. dates as 2024-05-01).
ISMRMRD has no field for the cardiac cycle: `rr_interval_ms` and `heart_rate_bpm` come from
`userParameters` (userParameterDouble or userParameterLong) named as `_CARDIAC` lists, where
the file has them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

from voxelhub.recon.errors import ReconError

NAMESPACE = "http://www.ismrm.org/ISMRMRD"

# header key → path below the root, and the type of its value (subject and study in schema
# order: `format_header` writes them so)
_OPTIONAL: dict[str, tuple[str, type]] = {
    "protocol_name": ("measurementInformation/protocolName", str),
    "vendor": ("acquisitionSystemInformation/systemVendor", str),
    "model": ("acquisitionSystemInformation/systemModel", str),
    "field_strength_t": ("acquisitionSystemInformation/systemFieldStrength_T", float),
    "repetition_time_ms": ("sequenceParameters/TR", float),
    "echo_time_ms": ("sequenceParameters/TE", float),
    "inversion_time_ms": ("sequenceParameters/TI", float),
    "flip_angle_deg": ("sequenceParameters/flipAngle_deg", float),
    "imaging_frequency_hz": ("experimentalConditions/H1resonanceFrequency_Hz", float),
    "patient_position": ("measurementInformation/patientPosition", str),
    "frame_of_reference_uid": ("measurementInformation/frameOfReferenceUID", str),
    "patient_name": ("subjectInformation/patientName", str),
    "patient_id": ("subjectInformation/patientID", str),
    "patient_birth_date": ("subjectInformation/patientBirthdate", str),
    "patient_sex": ("subjectInformation/patientGender", str),
    "study_date": ("studyInformation/studyDate", str),
    "study_time": ("studyInformation/studyTime", str),
    "study_id": ("studyInformation/studyID", str),
    "accession_number": ("studyInformation/accessionNumber", str),
    "referring_physician_name": ("studyInformation/referringPhysicianName", str),
    "study_description": ("studyInformation/studyDescription", str),
    "study_instance_uid": ("studyInformation/studyInstanceUID", str),
}

# userParameters names (lower case) that give the cardiac cycle, → header key
_CARDIAC = {
    "rrinterval": "rr_interval_ms",
    "rr_interval": "rr_interval_ms",
    "rrinterval_ms": "rr_interval_ms",
    "nominalinterval": "rr_interval_ms",
    "heartrate": "heart_rate_bpm",
    "heart_rate": "heart_rate_bpm",
}


def _path(path: str) -> str:
    return "/".join(f"{{*}}{part}" for part in path.split("/"))


def _text(root: ET.Element, path: str) -> str | None:
    node = root.find(_path(path))
    return None if node is None or node.text is None else node.text.strip()


def _number(text: str, *, kind: type, path: str) -> Any:
    try:
        return kind(float(text))
    except (TypeError, ValueError, OverflowError) as err:
        raise ReconError(
            f"the ISMRMRD header's {path.replace('/', '.')} is {text!r}, not a number; "
            "the header is damaged"
        ) from err


def _triple(encoding: ET.Element, path: str, *, kind: type) -> list[Any]:
    """x, y, z below one `<encoding>` (`path` relative to it; messages name it in full)."""
    values = [_text(encoding, f"{path}/{axis}") for axis in "xyz"]
    if values[0] is None or values[1] is None:
        raise ReconError(
            f"the ISMRMRD header has no encoding.{path.replace('/', '.')}; it is required"
        )
    return [
        _number(v, kind=kind, path=f"encoding/{path}/{axis}") if v is not None else kind(1)
        for axis, v in zip("xyz", values, strict=True)
    ]


def _limits(encoding: ET.Element, matrix_y: int) -> list[int]:
    base = "encodingLimits/kspace_encoding_step_1"
    names = ("minimum", "maximum", "center")
    values = [_text(encoding, f"{base}/{name}") for name in names]
    if any(v is None for v in values):
        return [0, matrix_y - 1, matrix_y // 2]
    limits = [
        _number(v, kind=int, path=f"encoding/{base}/{name}")
        for name, v in zip(names, values, strict=True)
        if v is not None
    ]
    if not 0 <= limits[0] <= limits[1]:
        raise ReconError(
            f"the ISMRMRD header's encoding limits of kspace_encoding_step_1 (minimum "
            f"{limits[0]}, maximum {limits[1]}) are not 0 <= minimum <= maximum; the header "
            "is damaged"
        )
    return limits


def _encoding(root: ET.Element, index: int) -> ET.Element:
    """The `index`-th `<encoding>` (an ISMRMRD file may describe several encoding spaces)."""
    encodings = root.findall(_path("encoding"))
    if 0 <= index < len(encodings):
        return encodings[index]
    if not encodings and index == 0:
        return ET.Element("encoding")  # reported below as the missing matrix size
    raise ReconError(
        f"the ISMRMRD header describes {len(encodings)} encoding space(s), not space {index}; "
        "header and data disagree"
    )


def parse_header(xml: str | bytes, *, encoding: int = 0) -> dict[str, Any]:
    """`KSpace.header` keys from an ISMRMRD XML header, the geometry that of encoding space
    `encoding`; ReconError if it cannot be used.

    >>> parse_header(format_header({"encoded_matrix": [640, 368, 1]}))["pe_limits"]
    [0, 367, 184]
    """
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise ReconError(f"the ISMRMRD XML header is not valid XML: {err}") from err
    space = _encoding(root, encoding)
    encoded = _triple(space, "encodedSpace/matrixSize", kind=int)
    recon = _triple(space, "reconSpace/matrixSize", kind=int)
    if min(encoded[:2] + recon[:2]) < 1:
        raise ReconError(
            f"the ISMRMRD header's matrix sizes must be 1 or more: encodedSpace {encoded}, "
            f"reconSpace {recon}; the header is damaged"
        )
    header: dict[str, Any] = {
        "encoded_matrix": encoded,
        "recon_matrix": recon,
        "encoded_fov_mm": _triple(space, "encodedSpace/fieldOfView_mm", kind=float),
        "recon_fov_mm": _triple(space, "reconSpace/fieldOfView_mm", kind=float),
        "pe_limits": _limits(space, encoded[1]),
        "trajectory": (_text(space, "trajectory") or "cartesian").lower(),
    }
    for key, (path, kind) in _OPTIONAL.items():
        value = _text(root, path)
        if value:
            header[key] = value if kind is str else _number(value, kind=kind, path=path)
    # ISMRMRD lists one TE per contrast: a multi-echo file's echoes are told apart by them.
    echoes = [node.text for node in root.findall(_path("sequenceParameters/TE")) if node.text]
    if len(echoes) > 1:
        path = "sequenceParameters/TE"
        header["echo_times_ms"] = [_number(t.strip(), kind=float, path=path) for t in echoes]
    header.update(_cardiac(root))
    return header


def _cardiac(root: ET.Element) -> dict[str, float]:
    """The RR interval (ms) and heart rate (bpm) the header's userParameters give, if any."""
    found: dict[str, float] = {}
    for kind in ("userParameterDouble", "userParameterLong"):
        for node in root.findall(_path(f"userParameters/{kind}")):
            key = _CARDIAC.get((_text(node, "name") or "").lower())
            value = _text(node, "value")
            if key and value:
                path = f"userParameters/{kind}/value"
                number = float(_number(value, kind=float, path=path))
                if number > 0:
                    found.setdefault(key, number)
    return found


def _sub(parent: ET.Element, path: str, text: object = None) -> ET.Element:
    node = parent
    for part in path.split("/"):
        found = node.find(part)
        node = found if found is not None else ET.SubElement(node, part)
    if text is not None:
        node.text = str(text)
    return node


def _put_triple(parent: ET.Element, path: str, values: list[Any]) -> None:
    for axis, value in zip("xyz", values, strict=True):
        _sub(parent, f"{path}/{axis}", value)


def _put_sequence(root: ET.Element, header: dict[str, Any]) -> None:
    sequence = _sub(root, "sequenceParameters")
    for key, tag in (
        ("repetition_time_ms", "TR"),
        ("echo_time_ms", "TE"),
        ("inversion_time_ms", "TI"),
        ("flip_angle_deg", "flipAngle_deg"),
    ):
        if tag == "TE" and header.get("echo_times_ms"):
            for value in header["echo_times_ms"]:
                ET.SubElement(sequence, tag).text = str(value)
        elif key in header:
            _sub(sequence, tag, header[key])


def format_header(header: dict[str, Any], *, coils: int = 1, slices: int = 1) -> str:
    """An ISMRMRD XML header (schema order) for `KSpace.header` keys; the inverse of
    `parse_header` for the keys it knows."""
    encoded = [int(v) for v in header.get("encoded_matrix", [1, 1, 1])]
    recon = [int(v) for v in header.get("recon_matrix", encoded)]
    enc_fov = [float(v) for v in header.get("encoded_fov_mm", [*encoded[:2], 5.0])]
    rec_fov = [float(v) for v in header.get("recon_fov_mm", enc_fov)]
    limits = header.get("pe_limits", [0, encoded[1] - 1, encoded[1] // 2])
    root = ET.Element("ismrmrdHeader", xmlns=NAMESPACE)
    for key, (path, _) in _OPTIONAL.items():
        if path.startswith(("subjectInformation/", "studyInformation/")) and key in header:
            _sub(root, path, header[key])
    if "patient_position" in header:
        _sub(root, "measurementInformation/patientPosition", header["patient_position"])
    _sub(root, "measurementInformation/protocolName", header.get("protocol_name", "voxelhub"))
    if "frame_of_reference_uid" in header:
        _sub(root, "measurementInformation/frameOfReferenceUID", header["frame_of_reference_uid"])
    system = _sub(root, "acquisitionSystemInformation")
    _sub(system, "systemVendor", header.get("vendor", "voxelhub"))
    _sub(system, "systemModel", header.get("model", "phantom"))
    _sub(system, "systemFieldStrength_T", header.get("field_strength_t", 3.0))
    _sub(system, "receiverChannels", coils)
    frequency = int(header.get("imaging_frequency_hz", 123_000_000))
    _sub(root, "experimentalConditions/H1resonanceFrequency_Hz", frequency)
    encoding = _sub(root, "encoding")
    _put_triple(encoding, "encodedSpace/matrixSize", encoded)
    _put_triple(encoding, "encodedSpace/fieldOfView_mm", enc_fov)
    _put_triple(encoding, "reconSpace/matrixSize", recon)
    _put_triple(encoding, "reconSpace/fieldOfView_mm", rec_fov)
    step1 = _sub(encoding, "encodingLimits/kspace_encoding_step_1")
    for name, value in zip(("minimum", "maximum", "center"), limits, strict=True):
        _sub(step1, name, int(value))
    for name, value in zip(("minimum", "maximum", "center"), (0, slices - 1, 0), strict=True):
        _sub(encoding, f"encodingLimits/slice/{name}", value)
    _sub(encoding, "trajectory", header.get("trajectory", "cartesian"))
    _put_sequence(root, header)
    for key, name in (("rr_interval_ms", "RRInterval"), ("heart_rate_bpm", "HeartRate")):
        if key in header:
            parameter = ET.SubElement(_sub(root, "userParameters"), "userParameterDouble")
            _sub(parameter, "name", name)
            _sub(parameter, "value", header[key])
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode")


def pe_offset(header: dict[str, Any], width: int) -> int:
    """The encoded-grid column of stripped data column 0 (fastMRI's `padding_left` + min).

    >>> pe_offset({"encoded_matrix": [640, 368, 1], "pe_limits": [0, 334, 167]}, 335)
    17
    """
    encoded, limits = header.get("encoded_matrix"), header.get("pe_limits")
    if not encoded or not limits:
        return 0
    offset = int(encoded[1]) // 2 - int(limits[2]) + int(limits[0])
    if offset < 0 or offset + width > int(encoded[1]):
        raise ReconError(
            f"the encoding limits {limits} put {width} phase-encode columns outside the "
            f"encoded matrix of {encoded[1]}; the header does not match the data"
        )
    return offset


def recon_shape(header: dict[str, Any], default: tuple[int, ...]) -> tuple[int, int]:
    """(rows, columns) of the reconstructed image: reconSpace x x y, else `default`."""
    recon = header.get("recon_matrix")
    if not recon:
        return int(default[0]), int(default[1])
    return int(recon[0]), int(recon[1])


def with_padding(header: dict[str, Any], *, width: int, padding: int) -> dict[str, Any]:
    """A copy of `header` whose encoded phase-encode grid has `padding` zero columns around
    `width` sampled ones, k-space centre kept at the encoded centre (as fastMRI knee files:
    368 encoded columns, fewer sampled)."""
    encoded = list(header.get("encoded_matrix", [0, width, 1]))
    encoded[1] = width + padding
    return {**header, "encoded_matrix": encoded, "pe_limits": [0, width - 1, width // 2]}
