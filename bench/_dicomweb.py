"""The benchmark's DICOMweb client: the same code talks to both servers."""

from __future__ import annotations

import secrets
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import imagecodecs
import numpy as np
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pydicom.filebase import DicomBytesIO

CRLF = b"\r\n"
HTTP_TIMEOUT = httpx.Timeout(600.0, connect=10.0)
NATIVE = {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"}
HTJ2K = {"1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
JPEG2000 = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"}


_TLS: list[ssl.SSLContext] = []


def client(headers: dict[str, str]) -> httpx.Client:
    # httpx builds a TLS context (the CA bundle read and parsed) for every new client,
    # ~70 ms of CPU, though every URL here is plain HTTP: one context serves them all, so
    # the timed retrievals (which open clients) do not pay for it.
    if not _TLS:
        _TLS.append(ssl.create_default_context())
    return httpx.Client(headers=headers, timeout=HTTP_TIMEOUT, verify=_TLS[0])


# --- STOW-RS ------------------------------------------------------------------------------


def multipart_body(paths: Sequence[Path]) -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart/related; type="application/dicom" request."""
    boundary = "vxhbench-" + secrets.token_hex(8)
    delimiter = b"--" + boundary.encode()
    chunks = []
    for path in paths:
        chunks += [delimiter, CRLF, b"Content-Type: application/dicom", CRLF, CRLF]
        chunks += [path.read_bytes(), CRLF]
    chunks += [delimiter, b"--", CRLF]
    media = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return b"".join(chunks), media


@dataclass
class StowOutcome:
    sent: int = 0
    stored: int = 0
    failed: int = 0
    bytes_sent: int = 0
    errors: list[str] = field(default_factory=list)
    request_seconds: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, sent: int, stored: int, size: int, error: str | None, seconds: float) -> None:
        with self.lock:
            if len(self.request_seconds) < 1000:
                self.request_seconds.append(round(seconds, 3))
            self.sent += sent
            self.stored += stored
            self.failed += sent - stored
            self.bytes_sent += size
            if error and len(self.errors) < 10:
                self.errors.append(error)


def _stored_count(response: httpx.Response, sent: int) -> tuple[int, str | None]:
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    if isinstance(body, list):  # some servers wrap the dataset in a list
        body = body[0] if body else None
    stored = len((body or {}).get("00081199", {}).get("Value", [])) if body else 0
    if response.status_code == 200 and body is None:
        stored = sent
    failed = (body or {}).get("00081198", {}).get("Value", []) if body else []
    error = None
    if response.status_code >= 300 or failed:
        detail = failed[0] if failed else response.text[:300]
        error = f"HTTP {response.status_code}: {detail}"
    return stored, error


def stow_series(
    url: str,
    headers: dict[str, str],
    paths: Sequence[Path],
    *,
    batch: int,
    deadline: float,
    outcome: StowOutcome,
    bodies: Sequence[tuple[bytes, str]] | None = None,
) -> None:
    """Send `paths` in requests of `batch` instances until done or past `deadline`;
    `bodies` are the requests' bodies already built, else each is built before it is sent."""
    with client(headers) as http:
        for number, start in enumerate(range(0, len(paths), batch)):
            if time.monotonic() > deadline:
                return
            chunk = paths[start : start + batch]
            body, media = bodies[number] if bodies is not None else multipart_body(chunk)
            started = time.perf_counter()
            try:
                response = http.post(
                    url,
                    content=body,
                    headers={"Content-Type": media, "Accept": "application/dicom+json"},
                )
                stored, error = _stored_count(response, len(chunk))
            except httpx.HTTPError as err:
                stored, error = 0, f"{type(err).__name__}: {err}"
            outcome.add(len(chunk), stored, len(body), error, time.perf_counter() - started)


def request_bodies(series: Sequence[Sequence[Path]], batch: int) -> list[list[tuple[bytes, str]]]:
    """Every request's body for `stow_concurrently(..., bodies=)`, built ahead of time."""
    return [
        [multipart_body(paths[at : at + batch]) for at in range(0, len(paths), batch)]
        for paths in series
    ]


def stow_concurrently(
    url: str,
    headers: dict[str, str],
    series: Sequence[Sequence[Path]],
    *,
    batch: int,
    time_limit_s: float,
    bodies: Sequence[Sequence[tuple[bytes, str]]] | None = None,
) -> tuple[StowOutcome, float]:
    """One client thread per series, all at once; returns the outcome and the wall time.

    With `bodies` (`request_bodies`) the files were read and joined before the clock
    started, so the time is the upload's alone: the client shares the server's cores, and
    its reading would count against both servers alike.
    """
    outcome = StowOutcome()
    deadline = time.monotonic() + time_limit_s
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(series)) as pool:
        futures = [
            pool.submit(
                stow_series,
                url,
                headers,
                paths,
                batch=batch,
                deadline=deadline,
                outcome=outcome,
                bodies=bodies[number] if bodies is not None else None,
            )
            for number, paths in enumerate(series)
        ]
        for future in futures:
            future.result()
    return outcome, time.perf_counter() - started


# --- QIDO-RS ------------------------------------------------------------------------------


def qido_latencies(
    base: str, headers: dict[str, str], queries: Sequence[str], *, warmup: int, time_limit_s: float
) -> tuple[list[float], list[int]]:
    """Seconds per query (after `warmup` untimed ones) and the number of studies each found."""
    latencies, counts = [], []
    deadline = time.monotonic() + time_limit_s
    with client({**headers, "Accept": "application/dicom+json"}) as http:
        for query in queries[:warmup]:
            http.get(f"{base}/studies?{query}")
        for query in queries:
            if time.monotonic() > deadline:
                break
            started = time.perf_counter()
            response = http.get(f"{base}/studies?{query}")
            body = response.content
            latencies.append(time.perf_counter() - started)
            if response.status_code == 204 or not body:
                counts.append(0)
            elif response.status_code == 200:
                counts.append(len(response.json()))
            else:
                raise RuntimeError(f"QIDO {query} answered {response.status_code}: {body[:300]!r}")
    return latencies, counts


# --- WADO-RS ------------------------------------------------------------------------------


def _boundary(response: httpx.Response) -> bytes:
    media: str = response.headers.get("content-type", "")
    for item in media.split(";"):
        name, _, value = item.strip().partition("=")
        if name.lower() == "boundary":
            return b"--" + value.strip().strip('"').encode()
    raise RuntimeError(f"not a multipart response: {media!r}: {response.read()[:300]!r}")


def _part_headers(raw: bytes) -> dict[str, str]:
    headers = {}
    for line in raw.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


def iter_parts(response: httpx.Response) -> Iterator[tuple[dict[str, str], bytes]]:
    """Stream the parts of a multipart/related response as (headers, body).

    Each body is copied once out of the receive buffer; the buffer is trimmed once per
    chunk received, not once per part, and the search for a part's end resumes where the
    last one stopped."""
    delimiter = _boundary(response)
    closing = CRLF + delimiter
    buffer = bytearray()
    position = 0  # where the bytes not yet parsed start
    scanned = 0  # the search for the current part's end goes on from here
    started = False
    for chunk in response.iter_bytes():
        if position:
            del buffer[:position]
            scanned -= position
            position = 0
        buffer += chunk
        while True:
            if not started:
                at = buffer.find(delimiter)
                if at < 0:
                    break
                position = scanned = at + len(delimiter)
                started = True
            if len(buffer) - position < 2:
                break
            if buffer[position : position + 2] == b"--":
                return
            head_end = buffer.find(CRLF + CRLF, position)
            if head_end < 0:
                break
            end = buffer.find(closing, max(head_end + 4, scanned))
            if end < 0:
                scanned = max(len(buffer) - len(closing) + 1, head_end + 4)
                break
            with memoryview(buffer) as view:
                body = bytes(view[head_end + 4 : end])
            headers = _part_headers(bytes(buffer[position:head_end]))
            position = scanned = end + len(closing)
            yield headers, body


def decode_frame(
    data: bytes | memoryview, syntax: str, shape: tuple[int, int], out: np.ndarray | None = None
) -> np.ndarray:
    """One 16-bit frame as stored in `syntax` → a (rows, columns) array, decoded into `out`
    (one slice of the volume) when given: no frame is copied twice."""
    if syntax in NATIVE:
        frame = np.frombuffer(data, dtype="<u2").reshape(shape)
        if out is None:
            return frame
        out[...] = frame
        return out
    encoded = bytes(data) if isinstance(data, memoryview) else data
    if syntax in HTJ2K:
        return np.asarray(imagecodecs.htj2k_decode(encoded, out=out)).reshape(shape)
    if syntax in JPEG2000:
        return np.asarray(imagecodecs.jpeg2k_decode(encoded, out=out)).reshape(shape)
    raise RuntimeError(f"the benchmark does not decode transfer syntax {syntax}")


# --- reading a Part-10 part: its transfer syntax, InstanceNumber and (first) frame --------

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})
_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_TRANSFER_SYNTAX, _INSTANCE_NUMBER, _PIXEL_DATA = 0x00020010, 0x00200013, 0x7FE00010
_HEAD = struct.Struct("<HH2sH")  # tag, VR, short length
_U32 = struct.Struct("<I")
_ITEM_HEAD = struct.Struct("<HHI")  # item and delimiter tags: no VR
# Explicit VR little endian datasets: what the walk reads.
_WALKED = {"1.2.840.10008.1.2.1"} | HTJ2K | JPEG2000


class _NotPlain(Exception):
    """Not an explicit VR little endian file this reader walks: pydicom reads it."""


def read_part10(body: bytes) -> tuple[str, int, bytes | memoryview]:
    """(transfer syntax, InstanceNumber, frame 1) of a Part-10 file.

    The same for every server: the elements are walked (not parsed into a dataset) up to
    Pixel Data, whose value (native) or first frame's fragments (encapsulated) are returned.
    A file this walk does not handle (implicit VR, big endian, undefined-length values other
    than sequences and Pixel Data) is read by pydicom instead, with the same result."""
    try:
        return _walk(body)
    except (_NotPlain, struct.error, IndexError, ValueError, UnicodeDecodeError):
        return _read_with_pydicom(body)


def _read_with_pydicom(body: bytes) -> tuple[str, int, bytes | memoryview]:
    ds = dcmread(DicomBytesIO(body))
    syntax = str(ds.file_meta.TransferSyntaxUID)
    if syntax in NATIVE:
        frame = bytes(ds.PixelData)
    else:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    return syntax, int(ds.InstanceNumber), frame


def _element(body: bytes, position: int) -> tuple[int, bytes, int, int]:
    """(tag, VR, value length, where the value starts) of the element at `position`."""
    group, element, vr, short = _HEAD.unpack_from(body, position)
    if vr in _LONG_VRS:
        return (group << 16) | element, vr, _U32.unpack_from(body, position + 8)[0], position + 12
    return (group << 16) | element, vr, short, position + 8


def _walk(body: bytes) -> tuple[str, int, bytes | memoryview]:
    if body[128:132] != b"DICM":
        raise _NotPlain
    position, syntax, number = 132, "", None
    while position < len(body):
        tag, vr, length, position = _element(body, position)
        if tag == _PIXEL_DATA:
            return syntax, _number(number), _pixel_value(body, position, length, syntax)
        if length == _UNDEFINED:
            if vr != b"SQ":
                raise _NotPlain
            position = _skip_items(body, position)
            continue
        if tag == _TRANSFER_SYNTAX:
            syntax = body[position : position + length].rstrip(b"\0 ").decode("ascii")
            if syntax not in _WALKED:
                raise _NotPlain  # implicit VR or big endian: pydicom reads it
        elif tag == _INSTANCE_NUMBER:
            number = body[position : position + length].decode("ascii")
        position += length
    raise _NotPlain  # no Pixel Data


def _pixel_value(body: bytes, position: int, length: int, syntax: str) -> bytes | memoryview:
    if syntax not in NATIVE and length == _UNDEFINED:
        return _first_frame(body, position)
    if length == _UNDEFINED or position + length > len(body):
        raise _NotPlain
    return memoryview(body)[position : position + length]


def _number(value: str | None) -> int:
    if value is None:
        raise _NotPlain
    return int(value.strip(" \0"))


def _item(body: bytes, position: int) -> tuple[int, int, int]:
    """(tag, length, where the value starts) of an item or delimiter (no VR) at `position`."""
    group, element, length = _ITEM_HEAD.unpack_from(body, position)
    return (group << 16) | element, length, position + 8


def _skip_items(body: bytes, position: int) -> int:
    """Past the items of an undefined-length sequence and its delimiter."""
    while True:
        tag, length, position = _item(body, position)
        if tag == _SEQUENCE_END:
            return position
        if tag != _ITEM:
            raise _NotPlain
        if length != _UNDEFINED:
            position += length
            continue
        position = _skip_item(body, position)


def _skip_item(body: bytes, position: int) -> int:
    """Past the elements of an undefined-length item and its delimiter."""
    while True:
        tag, vr, length, position = _element(body, position)
        if tag == _ITEM_END:
            return position
        if length != _UNDEFINED:
            position += length
        elif vr == b"SQ":
            position = _skip_items(body, position)
        else:
            raise _NotPlain


def _first_frame(body: bytes, position: int) -> bytes:
    """Frame 1 of encapsulated Pixel Data with one frame: its fragments after the offset
    table, joined (as pydicom's `generate_frames` gives it)."""
    fragments: list[memoryview] = []
    view = memoryview(body)
    first = True
    while True:
        tag, length, position = _item(body, position)
        if tag == _SEQUENCE_END:
            break
        if tag != _ITEM or length == _UNDEFINED or position + length > len(body):
            raise _NotPlain
        if not first:
            fragments.append(view[position : position + length])
        first = False
        position += length
    if not fragments:
        raise _NotPlain
    return b"".join(fragments)


def _part_syntax(headers: dict[str, str], default: str) -> str:
    for item in headers.get("content-type", "").split(";"):
        name, _, value = item.strip().partition("=")
        if name.lower() == "transfer-syntax":
            return value.strip().strip('"')
    return default


@dataclass
class Retrieved:
    seconds: float
    frames: int
    bytes_received: int
    syntaxes: set[str]
    metadata_seconds: float = 0.0
    volume_checksum: int = 0


def retrieve_series(
    base: str,
    headers: dict[str, str],
    study: str,
    series: str,
    *,
    slices: int,
    size: int,
    decoders: int = 2,
) -> Retrieved:
    """WADO-RS of a whole series in its stored syntax; each Part-10 part read and its
    frame decoded into a (slices, size, size) volume placed by InstanceNumber."""
    volume = np.zeros((slices, size, size), dtype=np.uint16)
    syntaxes: set[str] = set()
    received = 0

    def place(body: bytes) -> str:
        syntax, number, frame = read_part10(body)
        decode_frame(frame, syntax, (size, size), out=volume[number - 1])
        return syntax

    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    started = time.perf_counter()
    with (
        client({**headers, "Accept": accept}) as http,
        ThreadPoolExecutor(max_workers=decoders) as pool,
        http.stream("GET", f"{base}/studies/{study}/series/{series}") as response,
    ):
        if response.status_code != 200:
            raise RuntimeError(
                f"series retrieve answered {response.status_code}: {response.read()[:300]!r}"
            )
        futures = []
        for _, body in iter_parts(response):
            received += len(body)
            futures.append(pool.submit(place, body))
        syntaxes = {f.result() for f in futures}
    seconds = time.perf_counter() - started
    return Retrieved(
        seconds, len(futures), received, syntaxes, volume_checksum=int(volume.sum(dtype=np.int64))
    )


def series_metadata(
    http: httpx.Client, base: str, study: str, series: str
) -> list[tuple[int, str]]:
    """(InstanceNumber, SOPInstanceUID) of each instance, from WADO-RS series metadata."""
    response = http.get(
        f"{base}/studies/{study}/series/{series}/metadata",
        headers={"Accept": "application/dicom+json"},
    )
    if response.status_code != 200:
        raise RuntimeError(f"metadata answered {response.status_code}: {response.text[:300]}")
    return [
        (int(item["00200013"]["Value"][0]), item["00080018"]["Value"][0])
        for item in response.json()
    ]


def retrieve_frames(
    base: str,
    headers: dict[str, str],
    study: str,
    series: str,
    *,
    slices: int,
    size: int,
    syntax: str,
    clients: int = 4,
) -> Retrieved:
    """What a viewer does: series metadata, then frame 1 of every instance (`clients`
    requests in flight), each decoded into the volume. `syntax` is the transfer-syntax
    asked for: "*" (as stored) or an explicit UID."""
    volume = np.zeros((slices, size, size), dtype=np.uint16)
    accept = f'multipart/related; type="application/octet-stream"; transfer-syntax={syntax}'
    local = threading.local()
    received: list[int] = []
    syntaxes: set[str] = set()
    lock = threading.Lock()

    def fetch(item: tuple[int, str]) -> None:
        number, sop = item
        if not hasattr(local, "http"):
            local.http = client({**headers, "Accept": accept})
        url = f"{base}/studies/{study}/series/{series}/instances/{sop}/frames/1"
        response = local.http.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"frames answered {response.status_code}: {response.text[:300]}")
        (part_headers, body), *_ = list(iter_parts(response))
        got = _part_syntax(part_headers, syntax if syntax != "*" else "1.2.840.10008.1.2.1")
        decode_frame(body, got, (size, size), out=volume[number - 1])
        with lock:
            received.append(len(body))
            syntaxes.add(got)

    started = time.perf_counter()
    with client(headers) as http:
        items = series_metadata(http, base, study, series)
    metadata_seconds = time.perf_counter() - started
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(fetch, items))
    seconds = time.perf_counter() - started
    return Retrieved(
        seconds,
        len(received),
        sum(received),
        syntaxes,
        metadata_seconds,
        int(volume.sum(dtype=np.int64)),
    )


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started
