"""Creates the ASGI application for uvicorn (`voxelhub.main:create_app`, factory=True)."""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from fastapi import FastAPI

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


def create_app() -> FastAPI:
    """The app for the settings of this process; the database must already be migrated."""
    tune_body_reading()
    return build_app(build_runtime(get_settings(), start_database=False))
