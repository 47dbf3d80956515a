"""Creates the ASGI application for uvicorn (`voxelhub.main:create_app`, factory=True)."""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from voxelhub.api import build_app
from voxelhub.core.runtime import build_runtime
from voxelhub.core.settings import get_settings

# How much of a request body uvicorn holds unread before it stops reading the socket (its
# own default is 64 KiB). A STOW-RS request of CT slices (512 KiB each) was paused and
# resumed several times per instance, each time closing the TCP window the client then had
# to reopen: receiving a 512 KiB part cost about 0.85 ms of server CPU over loopback, and
# 0.35-0.55 ms with half a megabyte. A connection holds at most this much more memory.
BODY_HIGH_WATER_BYTES = 512 * 1024
_HTTP_PROTOCOLS = ("uvicorn.protocols.http.httptools_impl", "uvicorn.protocols.http.h11_impl")


def tune_body_reading() -> None:
    """Set `BODY_HIGH_WATER_BYTES` in uvicorn's HTTP/1.1 protocols; call before serving."""
    for name in _HTTP_PROTOCOLS:
        with contextlib.suppress(ImportError):  # httptools is optional for uvicorn
            protocol: Any = importlib.import_module(name)
            # Only where uvicorn reads it: another release may have moved it.
            if hasattr(protocol, "HIGH_WATER_LIMIT"):
                protocol.HIGH_WATER_LIMIT = BODY_HIGH_WATER_BYTES


class _BodyChunks:
    """The unread chunks of a request body, as uvicorn's request cycle holds them.

    uvicorn copies each chunk into a bytearray and the bytearray into the bytes of its
    `http.request` message: two copies of every byte, most of the web process's memory
    traffic under STOW-RS. Here a chunk stays as it came; the message gets it as it is, or
    the chunks that came while the app was busy joined once.
    """

    __slots__ = ("chunks", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0

    def __iadd__(self, chunk: bytes) -> _BodyChunks:
        self.chunks.append(chunk)
        self.size += len(chunk)
        return self

    def __len__(self) -> int:
        return self.size

    def __bytes__(self) -> bytes:
        if len(self.chunks) == 1:
            return self.chunks[0]
        return b"".join(self.chunks)


class BodyChunksProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, holding a body's chunks without copying them (the
    `http=` of uvicorn's configuration)."""

    def on_body(self, body: bytes) -> None:
        # uvicorn puts a new bytearray in the cycle after each message it hands over.
        if not isinstance(self.cycle.body, _BodyChunks):
            self.cycle.body = _BodyChunks()  # type: ignore[assignment]
        super().on_body(body)


def create_app() -> FastAPI:
    """The app for the settings of this process; the database must already be migrated."""
    tune_body_reading()
    return build_app(build_runtime(get_settings(), start_database=False))
