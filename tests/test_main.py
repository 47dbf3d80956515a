"""The web server's settings that uvicorn's configuration does not offer."""

from __future__ import annotations

import hashlib
import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http import h11_impl, httptools_impl

from tests.conftest import free_port
from voxelhub.main import BODY_HIGH_WATER_BYTES, BodyChunksProtocol, tune_body_reading


def test_body_reading_is_tuned_in_both_http_protocols() -> None:
    # Fails when a uvicorn release no longer reads the limit where it is set.
    tune_body_reading()
    assert vars(httptools_impl)["HIGH_WATER_LIMIT"] == BODY_HIGH_WATER_BYTES
    assert vars(h11_impl)["HIGH_WATER_LIMIT"] == BODY_HIGH_WATER_BYTES


async def _digest_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers a request with the SHA-256 of its body and the types of its messages."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    digest, kinds, more = hashlib.sha256(), set(), True
    while more:
        message = await receive()
        kinds.add(type(message["body"]).__name__)
        digest.update(message["body"])
        more = message["more_body"]
    body = json.dumps({"sha256": digest.hexdigest(), "types": sorted(kinds)}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def digest_server() -> Iterator[int]:
    tune_body_reading()
    config = uvicorn.Config(_digest_app, host="127.0.0.1", port=free_port(),
                            log_level="warning", http=BodyChunksProtocol)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield config.port
    server.should_exit = True
    thread.join(timeout=10)


def _response(sock: socket.socket) -> dict[str, Any]:
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        data += sock.recv(65536)
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


def test_bodies_arrive_whole_in_bytes_however_they_are_sent(digest_server: int) -> None:
    """Large bodies in one go (chunks held while the app reads) and a body trickled in
    small pieces, one after another on one keep-alive connection."""
    rng = random.Random(7)
    bodies = [rng.randbytes(3_000_000), rng.randbytes(100_000), b"", rng.randbytes(5_000_000)]
    with socket.create_connection(("127.0.0.1", digest_server)) as sock:
        for index, body in enumerate(bodies):
            head = f"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
            sock.sendall(head.encode())
            if index == 1:  # a slow sender
                for at in range(0, len(body), 7_000):
                    sock.sendall(body[at : at + 7_000])
                    time.sleep(0.001)
            else:
                sock.sendall(body)
            answer = _response(sock)
            assert answer["sha256"] == hashlib.sha256(body).hexdigest()
            assert answer["types"] == ["bytes"]
