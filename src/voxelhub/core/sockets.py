"""Reading whole messages off stream sockets (the local socket pairs of worker processes)."""

from __future__ import annotations

import socket


def receive_exactly(sock: socket.socket, size: int) -> bytes | None:
    """Exactly `size` bytes, or None when the other end closed (or the connection broke)
    first."""
    try:
        data = sock.recv(size, socket.MSG_WAITALL)  # one call, unless a signal cuts it short
        if len(data) == size:
            return data
        chunks, got = [data], len(data)
        while got < size:
            more = sock.recv(size - got, socket.MSG_WAITALL)
            if not more:
                return None
            chunks.append(more)
            got += len(more)
    except OSError:
        return None
    return b"".join(chunks)
