"""How a reconstruction becomes an MR series: patient, study, sequence and geometry from the
raw file's header, and identifiers that make the same reconstruction the same series.

The study (and frame of reference) is the raw file's: the header's UIDs where it has them,
else ones derived from the raw file's SHA-256, so every reconstruction of one raw file lands
in one study. The series UID is derived from the raw file, the method, its settings and the
images, so running the same reconstruction again stores nothing new, and other settings
make another series of that study.

A raw file of several contrasts (echoes), repetitions or sets (the header's `images`) gives
one series per combination, so that no two images of a series are the same acquisition at
one position: each with its EchoNumbers and EchoTime, its TemporalPositionIdentifier for a
repetition, and the combination named in its SeriesDescription ("raki reconstruction, echo
2").

Cardiac phases (ISMRMRD `idx.phase`, an ECG-gated cine) are not split: as scanners export a
cine, and as cine viewers (OHIF and the like) expect to play it, all phases of a slice stack
are one series ("..., cine"), numbered by slice position then trigger time, each image with
its TriggerTime, its phase as TemporalPositionIdentifier (a repetition of a cine is then
named only in its SeriesDescription), and CardiacNumberOfImages (and the
RR interval and heart rate where the header gives them; `dicom.mr_series.CardiacPhases`).
The trigger time is the image's median ECG time stamp (`physiology_time_stamp[0]`, in ticks
of 2.5 ms since the last R wave, `ismrmrd_images.PHYSIOLOGY_TICK_MS`); where every stamp is
zero the file has none, and the phases are then spread evenly over the header's RR interval
(as a retrospectively gated cine divides the cycle), or, without one, carry no TriggerTime at
all: `cardiac_report` says which, for the reconstruction's settings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from voxelhub.dicom.mr_series import CardiacPhases, MrContext, SliceGeometry
from voxelhub.recon.errors import ReconError
from voxelhub.recon.model import FloatArray

logger = logging.getLogger(__name__)

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_SEX = {"M": "M", "F": "F", "O": "O", "MALE": "M", "FEMALE": "F"}
_POSITIONS = {"HFS", "HFP", "HFDR", "HFDL", "FFS", "FFP", "FFDR", "FFDL"}
# The ISMRMRD counters that set a file's images apart besides the slice, in the reader's
# order (outermost first), and how a series description names them (numbered from 1).
_COUNTERS = {"set": "set", "repetition": "repetition", "phase": "phase", "contrast": "echo"}


@dataclass(frozen=True)
class SeriesPart:
    """The images (slices x rows x columns) of one MR series of a reconstruction, where they
    lie and what they are."""

    images: FloatArray
    geometry: SliceGeometry | None
    context: MrContext
    cardiac: CardiacPhases | None = None


def _uid(*parts: str) -> str:
    """A UID derived from `parts` (2.25 and the integer of a 128-bit hash)."""
    digest = hashlib.sha256("\0".join(parts).encode()).digest()[:16]
    return f"2.25.{int.from_bytes(digest, 'big')}"


def _given_uid(header: dict[str, Any], key: str) -> str | None:
    value = str(header.get(key) or "")
    if value and (len(value) > 64 or not _UID.match(value)):
        logger.warning("ignoring the header's %s %r: not a DICOM UID", key, value)
        return None
    return value or None


def _date(text: Any) -> str:
    """A DICOM date (YYYYMMDD) from ISMRMRD's xs:date, else empty."""
    digits = re.sub(r"[^0-9]", "", str(text or ""))[:8]
    return digits if len(digits) == 8 else ""


def _time(text: Any) -> str:
    """A DICOM time (HHMMSS.FFFFFF) from ISMRMRD's xs:time, else empty."""
    found = re.match(r"^(\d{2}):?(\d{2}):?(\d{2})(\.\d{1,6})?", str(text or "").strip())
    return "".join(part for part in found.groups() if part) if found else ""


def fov_mm(header: dict[str, Any], shape: tuple[int, int]) -> tuple[float, float, float]:
    """The (readout, phase-encode, slice) extent in mm of images of `shape` (rows, columns).

    The images are the encoded grid cropped (never interpolated), so a pixel is the encoded
    field of view over the encoded matrix; the slice thickness is the reconSpace z extent.
    ReconError when the header has no field of view (a fastMRI file without its XML).
    """
    recon_fov, recon_matrix = header.get("recon_fov_mm"), header.get("recon_matrix")
    if not recon_fov or len(recon_fov) < 3:
        raise ReconError(
            "the raw file's header has no field of view (ISMRMRD encoding.reconSpace."
            "fieldOfView_mm), so the images' pixel spacing is unknown; keep the file's "
            "ismrmrd_header"
        )
    encoded_fov, encoded = header.get("encoded_fov_mm"), header.get("encoded_matrix")
    if encoded_fov and encoded and min(float(v) for v in encoded_fov[:2]) > 0:
        pixel = [float(encoded_fov[axis]) / int(encoded[axis]) for axis in (0, 1)]
    elif recon_matrix:
        pixel = [float(recon_fov[axis]) / int(recon_matrix[axis]) for axis in (0, 1)]
    else:
        pixel = [float(recon_fov[axis]) / shape[axis] for axis in (0, 1)]
    return pixel[0] * shape[0], pixel[1] * shape[1], float(recon_fov[2])


def _vector(values: Any) -> tuple[float, float, float]:
    x, y, z = (float(v) for v in values)
    return x, y, z


def geometry(header: dict[str, Any], *, slices: int) -> SliceGeometry | None:
    """The ISMRMRD acquisitions' slice positions and directions; None where the file has
    none (fastMRI) or they are unset (all zero)."""
    positions = header.get("slice_positions_mm")
    directions = [header.get(key) for key in ("read_dir", "phase_dir", "slice_dir")]
    if not positions or any(d is None for d in directions):
        return None
    read, phase, normal = (_vector(d) for d in directions)
    if not any(read) or not any(phase) or len(positions) != slices:
        logger.warning("the acquisitions carry no usable geometry; slices placed along z")
        return None
    centres = tuple(_vector(p) for p in positions)
    return SliceGeometry(centres, read_dir=read, phase_dir=phase, slice_dir=normal)


def series_context(
    header: dict[str, Any],
    images: FloatArray,
    *,
    recorded: dict[str, Any],
    raw: dict[str, str],
) -> MrContext:
    """Who the images belong to, how they were acquired and made, and their UIDs."""
    method = str(recorded.get("method", ""))
    settings = json.dumps(recorded, sort_keys=True, default=str)
    pixels = hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()
    frequency = header.get("imaging_frequency_hz")
    position = str(header.get("patient_position") or "").upper()
    series_uid = _uid("voxelhub-series", raw["sha256"], settings, pixels)
    return MrContext(
        patient_id=str(header.get("patient_id") or "UNKNOWN")[:64],
        patient_name=str(header.get("patient_name") or "Unknown^Patient")[:64],
        patient_birth_date=_date(header.get("patient_birth_date")),
        patient_sex=_SEX.get(str(header.get("patient_sex") or "").upper(), ""),
        study_instance_uid=_given_uid(header, "study_instance_uid")
        or _uid("voxelhub-study", raw["sha256"]),
        series_instance_uid=series_uid,
        frame_of_reference_uid=_given_uid(header, "frame_of_reference_uid")
        or _uid("voxelhub-frame", raw["sha256"]),
        study_date=_date(header.get("study_date")),
        study_time=_time(header.get("study_time")),
        study_id=str(header.get("study_id") or "")[:16],
        accession_number=str(header.get("accession_number") or "")[:16],
        referring_physician_name=str(header.get("referring_physician_name") or "")[:64],
        study_description=str(header.get("study_description") or "MRI reconstruction")[:64],
        series_description=f"{method} reconstruction"[:64],
        series_number=_series_number(series_uid),
        protocol=str(header.get("protocol_name") or ""),
        patient_position=position if position in _POSITIONS else "",
        echo_time_ms=header.get("echo_time_ms"),
        repetition_time_ms=header.get("repetition_time_ms"),
        inversion_time_ms=header.get("inversion_time_ms"),
        flip_angle_deg=header.get("flip_angle_deg"),
        field_strength_t=header.get("field_strength_t"),
        imaging_frequency_mhz=float(frequency) / 1e6 if frequency else None,
        derivation=settings,
        source=f"{raw['file']} sha256:{raw['sha256']}",
        settings=recorded,
    )


def _series_number(series_uid: str) -> int:
    # SeriesNumber must tell a study's series apart and stay the same on a rerun, without a
    # registry to count in: each reconstruction takes the block of 100 numbers its identity
    # (raw file, method, settings, images) hashes to, and its series (echoes, frames) count
    # up inside it. Two reconstructions of a study clash only when their blocks do (1 in 9999).
    digest = hashlib.sha256(series_uid.encode()).digest()
    return 100 * (1 + int.from_bytes(digest[:8], "big") % 9999)


def _varying(header: dict[str, Any]) -> list[str]:
    """The counters besides the slice that differ between the file's images."""
    images = header.get("images") or []
    return [name for name in _COUNTERS if len({image[name] for image in images}) > 1]


def _rr_interval_ms(header: dict[str, Any]) -> float | None:
    """The header's RR interval, or the one its heart rate gives; None if neither."""
    if header.get("rr_interval_ms"):
        return float(header["rr_interval_ms"])
    if header.get("heart_rate_bpm"):
        return 60_000.0 / float(header["heart_rate_bpm"])
    return None


def _trigger_times(header: dict[str, Any]) -> tuple[list[float] | None, str]:
    """Each image's trigger time (ms) and where it comes from ("acquisitions", "header" or
    "none")."""
    images = header["images"]
    stamped = header.get("trigger_times_ms")
    if stamped and len(stamped) == len(images):
        return [float(t) for t in stamped], "acquisitions"
    interval = _rr_interval_ms(header)
    if interval is None:
        return None, "none"
    phases = sorted({int(image["phase"]) for image in images})
    step = interval / len(phases)
    return [phases.index(int(image["phase"])) * step for image in images], "header"


def cardiac_report(header: dict[str, Any]) -> dict[str, Any] | None:
    """What the settings record about a cine's timing (None when the file has one cardiac
    phase): the number of phases and where the trigger times come from."""
    if "phase" not in _varying(header):
        return None
    _, source = _trigger_times(header)
    phases = len({int(image["phase"]) for image in header["images"]})
    if source == "acquisitions":
        note = "TriggerTime is each image's median ECG time stamp (physiology_time_stamp[0], "
        note += "2.5 ms ticks)"
    elif source == "header":
        note = f"the acquisitions carry no ECG time stamps: TriggerTime spreads the {phases} "
        note += f"phases evenly over the header's RR interval of {_rr_interval_ms(header):.6g} ms"
    else:
        note = "the acquisitions carry no ECG time stamps and the header no RR interval or "
        note += "heart rate: the images have no TriggerTime, only their phase "
        note += "(TemporalPositionIdentifier)"
        logger.warning("cine without ECG time stamps or RR interval: no TriggerTime written")
    return {"cardiac_phases": phases, "trigger_time_source": source, "note": note}


def _combined(
    context: MrContext, counters: dict[str, int], *, index: int, header: dict[str, Any]
) -> MrContext:
    """`context` for the series of one combination of counters (the `index`-th of the file);
    a cine's `counters` leave out the phase, which its images share."""
    images = header["images"]
    varying = _varying(header)
    named = [f"{_COUNTERS[name]} {counters[name] + 1}" for name in varying if name != "phase"]
    if "phase" in varying:
        named.append("cine")
    echo_times = header.get("echo_times_ms") or [header.get("echo_time_ms")]
    contrast = counters["contrast"]
    repetitions = sorted({image["repetition"] for image in images})
    temporal = (repetitions.index(counters["repetition"]) + 1, len(repetitions))
    return replace(
        context,
        series_instance_uid=_uid(
            "voxelhub-series", str(context.series_instance_uid), json.dumps(counters)
        ),
        series_description=", ".join([context.series_description, *named])[:64],
        series_number=context.series_number + index,
        echo_number=contrast + 1,
        echo_time_ms=echo_times[contrast] if contrast < len(echo_times) else None,
        # A cine's images number their phases as temporal positions instead.
        temporal_position=temporal if "repetition" in varying and "phase" not in varying else None,
    )


def _cardiac(header: dict[str, Any], chosen: list[int]) -> CardiacPhases:
    """The cardiac phases and trigger times of the images `chosen` for one cine series."""
    times, _ = _trigger_times(header)
    return CardiacPhases(
        phases=tuple(int(header["images"][i]["phase"]) for i in chosen),
        trigger_times_ms=None if times is None else tuple(times[i] for i in chosen),
        nominal_interval_ms=header.get("rr_interval_ms"),
        heart_rate_bpm=header.get("heart_rate_bpm"),
    )


def _placed(
    placed: SliceGeometry | None, header: dict[str, Any], chosen: list[int]
) -> SliceGeometry:
    """Where the images `chosen` of a cine lie; without the acquisitions' geometry, slice
    counter k at k slice thicknesses along z, so that a slice's phases share a position."""
    if placed is not None:
        return replace(placed, centres_mm=tuple(placed.centres_mm[i] for i in chosen))
    thickness = float((header.get("recon_fov_mm") or [0, 0, 1.0])[2])
    slices = [int(header["images"][i]["slice"]) for i in chosen]
    return SliceGeometry(centres_mm=tuple((0.0, 0.0, k * thickness) for k in slices))


def series_parts(
    header: dict[str, Any],
    images: FloatArray,
    *,
    recorded: dict[str, Any],
    raw: dict[str, str],
) -> list[SeriesPart]:
    """The MR series a reconstruction's images make: one, or one per combination of
    contrast, repetition and set the raw file holds (a cine's phases staying together), each
    in the order of the file's images. ReconError when the header's image list does not
    describe the images."""
    context = series_context(header, images, recorded=recorded, raw=raw)
    placed = geometry(header, slices=images.shape[0])
    listed = header.get("images")
    if not listed:
        return [SeriesPart(images, placed, context)]
    if len(listed) != len(images):
        raise ReconError(
            f"the header lists {len(listed)} images (ISMRMRD contrasts, phases, repetitions "
            f"and sets) for {len(images)} reconstructed ones; reconstruct from the raw file"
        )
    cine = "phase" in _varying(header)
    names = [name for name in _COUNTERS if not (cine and name == "phase")]
    keys = [tuple(int(image[name]) for name in names) for image in listed]
    parts = []
    for index, key in enumerate(dict.fromkeys(keys)):
        chosen = [i for i, found in enumerate(keys) if found == key]
        where = _placed(placed, header, chosen) if cine else None
        if placed is not None and not cine:
            where = replace(placed, centres_mm=tuple(placed.centres_mm[i] for i in chosen))
        counters = {"phase": 0, **dict(zip(names, key, strict=True))}
        combined = _combined(context, counters, index=index, header=header)
        cardiac = _cardiac(header, chosen) if cine else None
        parts.append(SeriesPart(images[chosen], where, combined, cardiac))
    return parts
