"""Accept-header negotiation for WADO-RS: media types and transfer syntaxes (PS3.18 §8.7)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydicom.uid import UID

from voxelhub.dicom.model import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K_LOSSLESS,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from voxelhub.dicom.syntax import can_serve_as, is_native
from voxelhub.store.dicomweb.multipart import parse_media_type
from voxelhub.store.errors import NotAcceptable

ANY_SYNTAX = "*"

# Media type of a single frame (or bulk data) encoded in each transfer syntax.
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}
# Names a client may still send for a frame media type (PS3.18 Table 8.7.3-2 retired them).
_RETIRED_MEDIA_TYPES = {"image/x-dicom-rle": "image/dicom-rle"}


def frame_media_type(transfer_syntax: str) -> str:
    return FRAME_MEDIA_TYPES.get(transfer_syntax, "application/octet-stream")


@dataclass(frozen=True)
class Wanted:
    """What the client asked for: the part media type and a transfer syntax (or "*")."""

    media_type: str
    transfer_syntax: str


def _quality(params: dict[str, str]) -> float:
    try:
        return float(params.get("q", "1"))
    except ValueError:
        return 1.0


def _choices(accept: str | None) -> list[tuple[float, str, dict[str, str]]]:
    """The media types of an Accept header, best first; those with q=0 are left out, as
    they say "not acceptable" (RFC 9110 §12.4.2)."""
    if not accept:
        return []
    choices = []
    for index, item in enumerate(accept.split(",")):
        media = parse_media_type(item)
        quality = _quality(media.params)
        if quality <= 0:
            continue
        # Keep the client's order for equal quality.
        choices.append((-quality + index * 1e-6, media.type, media.params))
    return sorted(choices, key=lambda c: c[0])


def _refused(accept: str | None) -> set[str]:
    """The media types the client refuses outright (q=0), which no wildcard brings back."""
    refused = set()
    for item in (accept or "").split(","):
        media = parse_media_type(item)
        if media.type and _quality(media.params) <= 0:
            refused.add(media.type)
    return refused


_JSON_TYPES = ("application/dicom+json", "application/json", "application/*", "*/*")


_XML_TYPE = "application/dicom+xml"
JSON, XML = "json", "xml"


def metadata_form(accept: str | None, what: str) -> str:
    """JSON or XML, whichever the client prefers, for searches, metadata and STOW-RS
    responses (PS3.18 §8.7.3): DICOM JSON, or the Native DICOM Model (a multipart/related
    of one XML document per dataset; one document for a STOW-RS response)."""
    if not accept:
        return JSON
    for _, media, params in _choices(accept):
        if media in _JSON_TYPES:
            return JSON
        part = params.get("type", "").strip('"').lower() if media == "multipart/related" else ""
        if media in (_XML_TYPE, "application/xml") or part == _XML_TYPE:
            return XML
    raise NotAcceptable(
        f"{what} come as application/dicom+json or as multipart/related; "
        f'type="application/dicom+xml", not {accept!r}'
    )


def wants_single_part(accept: str | None) -> bool:
    """Whether the client's first choice is one bare application/dicom body, not multipart
    (what `curl -H "Accept: application/dicom" -o x.dcm` expects of one instance)."""
    choices = _choices(accept)
    return bool(choices) and choices[0][1] == "application/dicom"


def instance_choices(accept: str | None) -> list[str]:
    """The transfer syntaxes the client accepts instances in, best first (`*` = as stored)."""
    default = [(0.0, "multipart/related", {"type": "application/dicom"})]
    choices = _choices(accept) if accept else default
    syntaxes: list[str] = []
    for _, media, params in choices:
        part = params.get("type", "application/dicom") if media == "multipart/related" else media
        if media in ("*/*", "multipart/*"):
            syntaxes.append(EXPLICIT_VR_LITTLE_ENDIAN)
        elif part in ("application/dicom", "*/*", "application/*"):
            syntaxes.append(params.get("transfer-syntax", EXPLICIT_VR_LITTLE_ENDIAN))
    if not syntaxes:
        raise NotAcceptable(
            f"cannot send instances as {accept!r}; accept "
            "'multipart/related; type=\"application/dicom\"' (optionally with transfer-syntax=*)"
        )
    return syntaxes


def choose_instance_syntax(choices: Sequence[str], stored: Iterable[str | None]) -> str:
    """The first of `choices` that every instance can be sent in; `stored` holds each
    instance's frames transfer syntax (None: no pixel data, any syntax will do)."""
    kinds = set(stored)
    for syntax in choices:
        if all(instance_producible(kind, syntax) for kind in kinds):
            return syntax
    held = ", ".join(sorted(k for k in kinds if k)) or "no pixel data"
    raise NotAcceptable(
        f"cannot send these instances (frames stored as {held}) in "
        f"{', '.join(choices)}; ask for transfer-syntax=* (as stored) or "
        f"{EXPLICIT_VR_LITTLE_ENDIAN} (uncompressed)"
    )


def frame_choices(accept: str | None) -> list[Wanted]:
    """The part media types and transfer syntaxes the client accepts frames or pixel bulk
    data in, best first."""
    default = [(0.0, "multipart/related", {"type": "application/octet-stream"})]
    choices = _choices(accept) if accept else default
    wanted: list[Wanted] = []
    for _, media, params in choices:
        part = (
            params.get("type", "application/octet-stream").strip('"').lower()
            if media.startswith("multipart/")
            else media
        )
        part = _RETIRED_MEDIA_TYPES.get(part, part)
        if media in ("*/*",) or part in ("*/*", "application/octet-stream"):
            syntax = params.get("transfer-syntax", EXPLICIT_VR_LITTLE_ENDIAN)
            wanted.append(Wanted("application/octet-stream", syntax))
        elif part == "image/jphc":
            wanted.append(Wanted(part, params.get("transfer-syntax", HTJ2K_LOSSLESS)))
        elif part in FRAME_MEDIA_TYPES.values():
            wanted.append(Wanted(part, params.get("transfer-syntax", ANY_SYNTAX)))
    if not wanted:
        raise NotAcceptable(
            f"cannot send frames as {accept!r}; accept 'multipart/related; "
            'type="application/octet-stream"\' with transfer-syntax=* (as stored) or '
            f"transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN} (uncompressed)"
        )
    return wanted


def choose_frames(choices: Sequence[Wanted], stored: str) -> Wanted:
    """The first of `choices` that frames stored as `stored` can be sent as: untouched (in
    their own syntax, or one that syntax is valid in) or decoded to native little endian."""
    for wanted in choices:
        if frame_producible(stored, wanted):
            return wanted
    asked = ", ".join(
        f"{w.media_type} ({'as stored' if w.transfer_syntax == ANY_SYNTAX else w.transfer_syntax})"
        for w in choices
    )
    raise NotAcceptable(
        f"cannot send frames stored as {stored} as {asked}; ask for "
        f'type="application/octet-stream" with transfer-syntax=* (as stored, '
        f"{frame_media_type(stored)}) or transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN} "
        "(uncompressed)"
    )


def frame_producible(stored: str, wanted: Wanted) -> bool:
    """Whether frames stored as `stored` can be sent as `wanted`."""
    media = wanted.media_type
    if wanted.transfer_syntax in (ANY_SYNTAX, stored):
        if media in ("application/octet-stream", frame_media_type(stored)):
            return True
        if wanted.transfer_syntax == ANY_SYNTAX:
            return False  # an image media type that is not the stored one's
    target = wanted.transfer_syntax
    if not _is_transfer_syntax(target):
        return False
    if can_serve_as(stored, target):
        return media in ("application/octet-stream", frame_media_type(target))
    # Decoded: native frames are little endian octets (PS3.18 8.7.3.3.2).
    return media == "application/octet-stream" and target in (
        EXPLICIT_VR_LITTLE_ENDIAN,
        IMPLICIT_VR_LITTLE_ENDIAN,
    )


def instance_producible(stored: str | None, target: str) -> bool:
    """Whether an instance whose frames are stored as `stored` (None: no pixel data) can be
    sent as a Part-10 file in `target`."""
    if target == ANY_SYNTAX:
        return True
    if not _is_transfer_syntax(target):
        return False
    return stored is None or is_native(target) or can_serve_as(stored, target)


def _is_transfer_syntax(value: str) -> bool:
    try:
        return bool(UID(value).is_transfer_syntax)
    except ValueError:
        return False


# What a rendered image can be made as (PS3.18 Table 8.7.4-1: JPEG is the default of a
# single-frame image; GIF and PNG are required of RESTful services too).
RENDERED_DEFAULT = "image/jpeg"
_RENDERED_TYPES = (RENDERED_DEFAULT, "image/gif", "image/png")
_OFFERED = "image/jpeg (the default), image/gif or image/png"


def _rendered_choice(wanted: str, refused: set[str]) -> str | None:
    if wanted in _RENDERED_TYPES and wanted not in refused:
        return wanted
    if wanted in ("*/*", "image/*"):
        return next((t for t in _RENDERED_TYPES if t not in refused), None)
    return None


def rendered_media_type(accept: str | None) -> str:
    """The media type of one rendered image (PS3.18 §8.7.4): JPEG when nothing, `*/*` or
    `image/*` says which."""
    if not accept:
        return RENDERED_DEFAULT
    refused = _refused(accept)
    for _, media, _params in _choices(accept):
        chosen = _rendered_choice(media, refused)
        if chosen is not None:
            return chosen
    raise NotAcceptable(f"cannot render as {accept!r}; rendered images come as {_OFFERED}")


def rendered_part_type(accept: str | None) -> str:
    """The image type of each part of a rendered study or series, a multipart/related body
    (PS3.18 §8.6): `multipart/related; type="image/jpeg"` or a bare `image/jpeg` both ask
    for JPEG parts; JPEG when nothing says which (PS3.18 Table 8.7.4-1)."""
    if not accept:
        return RENDERED_DEFAULT
    refused = _refused(accept)
    for _, media, params in _choices(accept):
        wanted = media
        if media == "multipart/related":
            wanted = params.get("type", RENDERED_DEFAULT).strip('"').lower()
        chosen = _rendered_choice(wanted, refused)
        if chosen is not None:
            return chosen
    raise NotAcceptable(
        f"cannot render as {accept!r}; rendered studies and series come as multipart/related "
        f"with parts of type {_OFFERED}"
    )
