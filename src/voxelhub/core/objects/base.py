"""What every object store offers: the `ObjectStore` protocol, `ObjectInfo` and the errors.

An object store keeps pixels and uploaded files under '/'-separated keys. Backends live in
their own modules (`local`, `s3`) and behave the same; the tests run each case on both.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO, Protocol, runtime_checkable

from voxelhub.core.errors import BadRequest, NotFound, VoxelhubError

DEFAULT_CHUNK_SIZE = 1 << 20


class ObjectStoreError(VoxelhubError):
    """The object store failed or cannot be reached; the message says what to check."""

    status_code = 503
    code = "object_store_error"


# The names follow core.errors (NotFound, BadRequest) rather than an "Error" suffix.
class ObjectNotFound(ObjectStoreError, NotFound):
    """No object is stored under the key."""

    status_code = 404
    code = "object_not_found"

    def __init__(self, key: str) -> None:
        super().__init__(f"no object is stored under the key {key!r}", detail={"key": key})
        self.key = key


class InvalidArgument(ObjectStoreError, BadRequest):
    """An argument to the object store is not allowed; the message says what is."""

    status_code = 400
    code = "invalid_argument"


class InvalidKey(InvalidArgument):
    """A key or prefix is not a clean relative '/'-separated path."""

    code = "invalid_object_key"


class InvalidRange(InvalidArgument):
    """A byte range lies outside the object."""

    status_code = 416
    code = "range_not_satisfiable"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What the store knows about one object without reading it.

    `etag` changes whenever the content changes (for single-part S3 uploads it is the MD5 hex
    digest; elsewhere it is opaque). `content_type` is None in `list()` results, because S3
    listings do not carry it; `stat()` and `put()` always fill it in.
    """

    key: str
    size: int
    etag: str
    last_modified: datetime
    content_type: str | None


@runtime_checkable
class ObjectStore(Protocol):
    """Where pixels and uploaded files live; all methods block and are thread-safe."""

    @property
    def puts_in_parallel(self) -> bool:
        """Whether writing many objects at once from several threads beats one after
        another: true where a put waits on the network, false for local files, where
        handing each write to another thread costs more CPU than the write itself."""
        ...

    def put(
        self,
        key: str,
        data: bytes | BinaryIO,
        *,
        content_type: str | None = None,
        durable: bool = True,
    ) -> ObjectInfo:
        """Store `data` under `key` atomically; file objects are streamed, never slurped.

        With `durable=False` the bytes may still sit in a cache when this returns; call
        `sync()` before anything that depends on them surviving a power loss commits.
        """
        ...

    def sync(self) -> None:
        """Make every object written so far durable (see `put(durable=False)`)."""
        ...

    def get(self, key: str) -> bytes:
        """The whole content of the object."""
        ...

    def stream(self, key: str, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """The content in chunks; raises ObjectNotFound on the call, not on the first chunk."""
        ...

    def get_range(self, key: str, start: int, end: int | None = None) -> bytes:
        """Bytes `start` up to (not including) `end`; None reads to the end of the object."""
        ...

    def stat(self, key: str) -> ObjectInfo:
        """Size, etag, time and content type of the object."""
        ...

    def exists(self, key: str) -> bool:
        """True when an object is stored under `key`."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with the non-empty `prefix`; the count."""
        ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with `prefix`, recursively, sorted by key."""
        ...

    def signed_url(self, key: str, *, expires_in: int, filename: str | None = None) -> str:
        """A URL that lets anyone holding it download the object for `expires_in` seconds."""
        ...

    def check(self) -> None:
        """Raise ObjectStoreError when the store cannot be used (the health probe)."""
        ...
