"""multipart/related bodies (RFC 2387) as DICOMweb uses them: streamed in and out."""

from __future__ import annotations

import secrets
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

from voxelhub.store.errors import InvalidQuery, UnsupportedMediaType

MAX_HEADER_BYTES = 16 * 1024
_INFLATE_CHUNK = 1024 * 1024  # decompressed bytes yielded at a time
CRLF = b"\r\n"


@dataclass(frozen=True)
class MediaType:
    type: str
    params: dict[str, str]

    @property
    def essence(self) -> str:
        return self.type


def parse_media_type(value: str) -> MediaType:
    """`multipart/related; type="application/dicom"; boundary=x` → its type and parameters."""
    head, *rest = value.split(";")
    params: dict[str, str] = {}
    for item in rest:
        name, sep, val = item.strip().partition("=")
        if sep:
            params[name.strip().lower()] = val.strip().strip('"')
    return MediaType(head.strip().lower(), params)


@dataclass(frozen=True)
class Part:
    """One part: its headers (names in lower case) and its body, which the part owns."""

    headers: dict[str, str]
    body: bytes | bytearray

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def _parse_headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in raw.split(CRLF):
        if not line.strip():
            continue
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep:
            raise InvalidQuery(f"a multipart part has a malformed header line: {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


class PartReader:
    """Splits a streamed multipart body into parts, holding at most one part in memory."""

    def __init__(self, boundary: str, *, max_part_bytes: int) -> None:
        if not boundary:
            raise UnsupportedMediaType(
                "the multipart/related Content-Type has no boundary parameter"
            )
        self.delimiter = b"--" + boundary.encode("latin-1")
        self.max_part_bytes = max_part_bytes
        self.buffer = bytearray()
        self.started = False
        self.finished = False
        # Where the search for the current part's end goes on: bytes before it were searched.
        self._scanned = 0

    def feed(self, chunk: bytes) -> Iterator[Part]:
        self.buffer += chunk
        yield from self._drain()

    def _drain(self) -> Iterator[Part]:
        while not self.finished:
            if not self.started:
                at = self.buffer.find(self.delimiter)
                if at < 0:
                    return
                del self.buffer[: at + len(self.delimiter)]
                self.started = True
            if len(self.buffer) < 2:
                return
            if self.buffer[:2] == b"--":
                self.finished = True
                return
            header_end = self.buffer.find(CRLF + CRLF)
            if header_end < 0:
                if len(self.buffer) > MAX_HEADER_BYTES:
                    raise InvalidQuery("a multipart part's headers exceed 16 KiB")
                return
            closing = CRLF + self.delimiter
            end = self.buffer.find(closing, max(header_end + 4, self._scanned))
            if end < 0:
                self._scanned = max(len(self.buffer) - len(closing) + 1, 0)
                if len(self.buffer) > self.max_part_bytes + MAX_HEADER_BYTES:
                    raise InvalidQuery(
                        f"a multipart part is larger than {self.max_part_bytes} bytes"
                    )
                return
            headers = _parse_headers(bytes(self.buffer[:header_end]))
            # The buffer becomes the body: only what follows the part (at most about a
            # chunk) is copied, never the part itself. Both cuts are cheap for a bytearray.
            body, self.buffer = self.buffer, self.buffer[end + 2 + len(self.delimiter) :]
            del body[end:]
            del body[: header_end + 4]
            self._scanned = 0
            yield Part(headers, body)

    def close(self) -> None:
        if not self.finished:
            raise InvalidQuery(
                "the multipart body ended before its closing boundary; the upload was cut off"
            )


async def read_parts(
    stream: AsyncIterator[bytes], boundary: str, *, max_part_bytes: int
) -> AsyncIterator[Part]:
    reader = PartReader(boundary, max_part_bytes=max_part_bytes)
    async for chunk in stream:
        for part in reader.feed(chunk):
            yield part
    reader.close()


_DECODERS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


async def decoded_body(stream: AsyncIterator[bytes], encoding: str | None) -> AsyncIterator[bytes]:
    """A request body as sent, undone of its Content-Encoding (gzip or deflate) chunk by
    chunk: never held whole, so a small compressed body cannot become a large one in memory
    (parts are bounded as they are read)."""
    codings = [c.strip().lower() for c in (encoding or "").split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        async for chunk in stream:
            yield chunk
        return
    if len(codings) > 1 or codings[0] not in _DECODERS:
        raise UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not accepted; send the body as is, or gzip"
        )
    decoder = zlib.decompressobj(_DECODERS[codings[0]])
    try:
        async for chunk in stream:
            pending = chunk
            while pending:
                out = decoder.decompress(pending, _INFLATE_CHUNK)
                if out:
                    yield out
                pending = decoder.unconsumed_tail
        rest = decoder.flush()
    except zlib.error as err:
        raise InvalidQuery(f"the {codings[0]} body could not be decompressed: {err}") from None
    if rest:
        yield rest
    if not decoder.eof:
        raise InvalidQuery(f"the {codings[0]} body ended before its end; the upload was cut off")


def new_boundary() -> str:
    return "voxelhub-" + secrets.token_hex(12)


# Small parts are sent together in chunks of about this size: each chunk the server sends
# costs a hop between threads, which dominates for many small parts (frames, CT slices).
WRITE_CHUNK_BYTES = 1024 * 1024


def write_parts(parts: Iterable[tuple[str, bytes]], boundary: str) -> Iterator[bytes]:
    """Serialise (content type, body) pairs as a multipart/related body, as it is produced."""
    delimiter = b"--" + boundary.encode()
    pending: list[bytes] = []
    size = 0
    for content_type, body in parts:
        pending += [delimiter, CRLF, f"Content-Type: {content_type}".encode(), CRLF, CRLF]
        if len(body) >= WRITE_CHUNK_BYTES:  # sent as it is, never copied into a chunk
            yield b"".join(pending)
            yield body
            pending, size = [CRLF], 2
            continue
        pending += [body, CRLF]
        size += len(body) + 128
        if size >= WRITE_CHUNK_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    pending += [delimiter, b"--", CRLF]
    yield b"".join(pending)
