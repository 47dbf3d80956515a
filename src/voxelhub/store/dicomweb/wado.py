"""WADO-RS bodies: instances, frames and bulk data in the syntax the client accepts."""

from __future__ import annotations

from base64 import b64encode
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

from pydicom import Dataset, dcmread
from pydicom.filebase import DicomBytesIO

from voxelhub.core.objects import ObjectStore
from voxelhub.dicom.byteorder import swap_binary_values
from voxelhub.dicom.codecs import decoded_description
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.fastjoin import join_as_stored
from voxelhub.dicom.frames import join_native
from voxelhub.dicom.header import pop_trailing
from voxelhub.dicom.header import read_header as parse_header
from voxelhub.dicom.join import frame_for_transfer_syntax, join_instance
from voxelhub.dicom.model import EXPLICIT_VR_LITTLE_ENDIAN
from voxelhub.store.dicomweb.negotiate import ANY_SYNTAX, Wanted, frame_media_type
from voxelhub.store.errors import InvalidQuery, NotAcceptable
from voxelhub.store.imagesets import (
    StoredFrames,
    pixel_of,
    read_frames,
    read_header,
    read_instance,
)
from voxelhub.store.models import Instance
from voxelhub.store.render import PALETTE_TAGS

_T = TypeVar("_T")


def decoded(what: str, stored_syntax: str, make: Callable[[], _T]) -> _T:
    """`make()`, whose stored frames must be decoded: a frame no decoder can read (corrupt,
    or a coding the decoders here lack) is refused as not acceptable in the asked form,
    pointing to the stored form, which is always served."""
    try:
        return make()
    except DicomError as err:
        if err.code != "undecodable":
            raise
        raise NotAcceptable(
            f"{what} cannot be decoded here ({err.message}); ask for it as stored, in "
            f"{stored_syntax} (transfer-syntax=*)"
        ) from err


def instance_parts(
    store: ObjectStore, instances: Sequence[Instance], syntax: str
) -> Iterator[tuple[str, bytes]]:
    """(content type, Part-10 bytes) for each instance, produced lazily as the body streams."""
    for instance in instances:
        header, frames = read_instance(store, instance)
        target = _instance_target(instance, syntax)
        pixel = pixel_of(instance)
        stored = instance.frames_transfer_syntax_uid
        body = None
        if pixel is not None and target == stored:
            body = join_as_stored(header, frames, stored, pixel)
        if body is None:
            body = decoded(
                f"instance {instance.sop_instance_uid}",
                stored,
                partial(
                    join_instance,
                    header,
                    frames,
                    stored,
                    target_transfer_syntax=target,
                    pixel=pixel,
                ),
            )
        yield f"application/dicom; transfer-syntax={target}", body


def _instance_target(instance: Instance, syntax: str) -> str:
    if syntax == ANY_SYNTAX:
        # Native originals kept native go back in their own (native) syntax; all else as stored.
        return instance.frames_transfer_syntax_uid
    return syntax


def frame_parts(
    store: ObjectStore, instance: StoredFrames, numbers: Sequence[int] | None, wanted: Wanted
) -> list[tuple[str, bytes]]:
    """(content type, bytes) of each requested frame."""
    pixel = pixel_of(instance)
    if pixel is None:
        # Not an empty multipart body (RFC 2046 wants one part at least) as if it had frames.
        raise InvalidQuery(f"instance {instance.sop_instance_uid} has no pixel data")
    stored_syntax = instance.frames_transfer_syntax_uid
    frames = read_frames(store, instance, numbers)
    if wanted.transfer_syntax in (ANY_SYNTAX, stored_syntax) and (
        wanted.media_type in ("application/octet-stream", frame_media_type(stored_syntax))
    ):
        media = frame_media_type(stored_syntax)
        return [(f"{media}; transfer-syntax={stored_syntax}", f) for f in frames]
    target = (
        wanted.transfer_syntax
        if wanted.transfer_syntax != ANY_SYNTAX
        else (EXPLICIT_VR_LITTLE_ENDIAN)
    )
    out = []
    for number, frame in zip(numbers or range(1, len(frames) + 1), frames, strict=True):
        body = decoded(
            f"frame {number} of instance {instance.sop_instance_uid}",
            stored_syntax,
            partial(frame_for_transfer_syntax, frame, stored_syntax, target, pixel),
        )
        out.append((f"{frame_media_type(target)}; transfer-syntax={target}", body))
    return out


def pixel_bulk_parts(
    store: ObjectStore, instance: Instance, wanted: Wanted
) -> list[tuple[str, bytes]]:
    """The parts of a pixel data bulk data request: compressed frames one part each, and
    uncompressed pixel data as its whole value in one part (PS3.18 8.7.3.3: "a stream of
    uncompressed bytes"), with what the value held after its frames, padded to even."""
    parts = frame_parts(store, instance, None, wanted)
    media = parts_type(parts)
    if media != "application/octet-stream":
        return parts
    pixel = pixel_of(instance)
    if pixel is None:  # frame_parts has refused it already
        return parts
    layout = decoded_description(pixel, instance.frames_transfer_syntax_uid)
    header = parse_header(read_header(store, instance))
    value = join_native([body for _, body in parts], layout)
    value += pop_trailing(header, pixel.pixel_keyword)
    if len(value) % 2:
        value += b"\0"
    return [(parts[0][0], value)]


def rendering_attributes(store: ObjectStore, instance: Instance) -> dict[str, Any]:
    """The instance's DICOM JSON for rendering: PALETTE COLOR lookup tables too long to be
    inline (a 16-bit palette: 65,536 entries) read from the stored header instead."""
    document = instance.dataset_json
    held = [tag for tag in PALETTE_TAGS if "BulkDataURI" in document.get(tag, {})]
    if not held:
        return document
    header = parse_header(read_header(store, instance))
    tables = Dataset()
    for tag in held:
        if int(tag, 16) in header:
            tables.add(header[int(tag, 16)])
    if header.original_encoding[1] is False:  # JSON's binary values are little endian
        swap_binary_values(tables)
    inline = {
        f"{elem.tag:08X}": {"vr": elem.VR, "InlineBinary": b64encode(elem.value).decode("ascii")}
        for elem in tables
    }
    return {**document, **inline}


def parts_type(parts: Sequence[tuple[str, bytes]]) -> str:
    """The `type` of a multipart body of `parts` (RFC 2387: its root part's media type):
    `image/jphc` when frames asked for as octets with transfer-syntax=* come as stored."""
    return parts[0][0].split(";", 1)[0]


def parse_frame_list(value: str) -> list[int]:
    try:
        numbers = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise InvalidQuery(
            f"frames must be a comma-separated list of numbers, not {value!r}"
        ) from None
    if not numbers or min(numbers) < 1:
        raise InvalidQuery("frame numbers start at 1")
    return numbers


def bulk_value(store: ObjectStore, instance: Instance, tag: str) -> bytes:
    """The raw value of a non-pixel bulk data element, read from the stored header."""
    header = read_header(store, instance)
    dataset = dcmread(DicomBytesIO(header), force=True)
    try:
        element = dataset[int(tag, 16)]
    except (KeyError, ValueError):
        raise InvalidQuery(f"instance {instance.sop_instance_uid} has no element {tag}") from None
    value = element.value
    if isinstance(value, bytes):
        return value
    return str(value).encode()
