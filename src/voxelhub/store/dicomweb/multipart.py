"""multipart/related bodies (RFC 2387) as DICOMweb uses them: streamed in and out."""

from __future__ import annotations

import bisect
import functools
import secrets
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

import stringzilla

from voxelhub.store.errors import InvalidQuery, UnsupportedMediaType

MAX_HEADER_BYTES = 16 * 1024
_INFLATE_CHUNK = 1024 * 1024  # decompressed bytes yielded at a time
CRLF = b"\r\n"
# A piece of a part's body: a chunk as received, or a view of one.
Piece = bytes | bytearray | memoryview


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
    """One part: its headers (names in lower case) and its body as the pieces it arrived in.

    The pieces are not joined until something asks for `body`: a consumer that copies the
    part somewhere else anyway (a split worker's memory) copies the pieces there.
    """

    headers: dict[str, str]
    pieces: tuple[Piece, ...]

    @classmethod
    def whole(cls, headers: dict[str, str], body: bytes) -> Part:
        return cls(headers, (body,))

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def size(self) -> int:
        return sum(len(piece) for piece in self.pieces)

    @functools.cached_property
    def body(self) -> bytes:
        if len(self.pieces) == 1 and isinstance(self.pieces[0], bytes):
            return self.pieces[0]
        return b"".join(self.pieces)


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


class _Received:
    """The bytes of a body received and not yet consumed, as the chunks they came in.

    Positions count from the start of the body. Chunks are kept as they are, not copied
    into one buffer; small ones (a slow sender's) are gathered into a buffer of our own, so
    that many of them cost no more memory than their bytes.
    """

    def __init__(self) -> None:
        self.chunks: list[bytes | bytearray] = []
        self.starts: list[int] = []  # where each chunk begins
        self.begin = 0  # the first byte not yet consumed
        self.end = 0  # one past the last byte received
        # The chunk that small chunks are appended to; none while a part's view may
        # refer to it (a bytearray with views cannot grow).
        self._gathering: bytearray | None = None

    def add(self, chunk: bytes) -> None:
        if not chunk:
            return
        if len(chunk) < _SMALL_CHUNK:
            if self._gathering is None or len(self._gathering) >= _SMALL_CHUNK:
                self._gathering = bytearray()
                self.chunks.append(self._gathering)
                self.starts.append(self.end)
            self._gathering += chunk
        else:
            self._gathering = None
            self.chunks.append(chunk)
            self.starts.append(self.end)
        self.end += len(chunk)

    def consume(self, position: int) -> None:
        """Forget the bytes before `position`."""
        self.begin = position
        drop = bisect.bisect_right(self.starts, position) - 1
        if drop > 0:
            del self.chunks[:drop], self.starts[:drop]
        if self.chunks and self.starts[0] + len(self.chunks[0]) <= position:
            self.chunks.clear()
            self.starts.clear()
            self._gathering = None

    def seal(self) -> None:
        """Append nothing more to the chunks there are: a part's views refer to them."""
        self._gathering = None

    def views(self, start: int, stop: int) -> tuple[memoryview, ...]:
        """The bytes in [start, stop) as views of the chunks that hold them."""
        out = []
        index = max(bisect.bisect_right(self.starts, start) - 1, 0)
        while start < stop:
            chunk, at = self.chunks[index], self.starts[index]
            upto = min(stop, at + len(chunk))
            if upto > start:
                out.append(memoryview(chunk)[start - at : upto - at])
                start = upto
            index += 1
        return tuple(out)

    def read(self, start: int, stop: int) -> bytes:
        return b"".join(self.views(start, min(stop, self.end)))

    def find(self, needle: bytes, start: int) -> int:
        """Where `needle` first begins at or after `start`, or -1; across chunks too."""
        span = len(needle) - 1
        first = max(bisect.bisect_right(self.starts, start) - 1, 0)
        for index in range(first, len(self.chunks)):
            chunk, at = self.chunks[index], self.starts[index]
            if index > first and span:
                # A match that begins in the chunks before this one and ends in it.
                low = max(at - span, start)
                joint = self.read(low, at + span).find(needle)
                if 0 <= joint < at - low:
                    return low + joint
            # SIMD search: bytes.find is 4 times slower on a CT slice (two-way algorithm).
            found: int = stringzilla.find(chunk, needle, max(start - at, 0))
            if found >= 0:
                return at + found
        return -1


# Chunks smaller than this are gathered into one buffer.
_SMALL_CHUNK = 64 * 1024


class PartReader:
    """Splits a streamed multipart body into parts, holding at most one part in memory.

    Nothing of a part is copied: its body is views of the chunks it arrived in (`Part`).
    """

    def __init__(self, boundary: str, *, max_part_bytes: int) -> None:
        if not boundary:
            raise UnsupportedMediaType(
                "the multipart/related Content-Type has no boundary parameter"
            )
        self.delimiter = b"--" + boundary.encode("latin-1")
        self.closing = CRLF + self.delimiter
        self.max_part_bytes = max_part_bytes
        self.received = _Received()
        self.started = False
        self.finished = False
        # The current part's headers and where its body begins, once its headers are read.
        self._headers: dict[str, str] | None = None
        self._body_start = 0
        # Where the search for what is looked for next goes on: no match begins before it.
        self._scanned = 0

    def feed(self, chunk: bytes) -> Iterator[Part]:
        if self.finished:  # the epilogue, ignored
            return
        self.received.add(chunk)
        yield from self._drain()

    def _drain(self) -> Iterator[Part]:
        received = self.received
        while not self.finished:
            if not self.started and not self._skip_preamble():
                return
            if self._headers is None and not self._read_headers():
                return
            end = received.find(self.closing, self._scanned)
            if end < 0:
                self._scanned = max(received.end - len(self.closing) + 1, self._body_start)
                if received.end - self._body_start > self.max_part_bytes:
                    raise InvalidQuery(
                        f"a multipart part is larger than {self.max_part_bytes} bytes"
                    )
                return
            assert self._headers is not None
            part = Part(self._headers, received.views(self._body_start, end))
            received.consume(end + len(self.closing))
            received.seal()
            self._headers = None
            self._scanned = received.begin
            yield part

    def _skip_preamble(self) -> bool:
        """Whether the first delimiter was found (what comes before it is ignored)."""
        received = self.received
        at = received.find(self.delimiter, self._scanned)
        if at < 0:
            self._scanned = max(received.end - len(self.delimiter) + 1, 0)
            received.consume(min(self._scanned, received.end))
            return False
        received.consume(at + len(self.delimiter))
        self._scanned = received.begin
        self.started = True
        return True

    def _read_headers(self) -> bool:
        """Whether the next part's headers were read (`finished` at the closing delimiter)."""
        received = self.received
        if received.end - received.begin < 2:
            return False
        if received.read(received.begin, received.begin + 2) == b"--":
            self.finished = True
            return False
        header_end = received.find(CRLF + CRLF, max(self._scanned, received.begin))
        if header_end < 0:
            if received.end - received.begin > MAX_HEADER_BYTES:
                raise InvalidQuery("a multipart part's headers exceed 16 KiB")
            self._scanned = max(received.end - 3, received.begin)
            return False
        self._headers = _parse_headers(received.read(received.begin, header_end))
        self._body_start = self._scanned = header_end + 4
        return True

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
