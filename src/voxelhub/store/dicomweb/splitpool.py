"""Splitting instances in worker processes, so that STOW-RS uses every core.

Splitting an instance (reading, validating, HTJ2K-encoding it) is CPU-bound, and its Python
part holds the GIL: in threads of the web process it competes with the HTTP, multipart and
indexing work of every request, and under 4 STOW-RS clients one process used about 1.3 of
2 cores (bench/store.py). Each worker here is a process (`python -m` this module) that
loads only the DICOM code.

A part and its split instance cross in memory both processes map (a memfd, or an unlinked
temporary file where there is none): the web process copies the part in and sends the
worker a few bytes over a socket pair; the worker reads the part where it lies, puts its
reply (the split instance pickled, with its content hash) in the same memory and answers
with its length. The web process's event loop waits on the socket itself, so a part costs
neither a thread nor a 512 KiB trip through the kernel's socket buffers: that trip, in a
thread, cost about 0.45 ms of the web process's CPU per CT slice under 4 clients, most of
it in the kernel (bench/store.py, 2026-11-24).

A worker that dies (a codec crash) fails only the part it held, and a new one takes its
place; a worker whose web process is gone sees its socket close and exits.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import mmap
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Sequence

from voxelhub.core.sockets import receive_exactly
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.model import SplitInstance
from voxelhub.store.dicomweb.splitting import content_hash, split_for_store

logger = logging.getLogger(__name__)

# A part, or a piece of one (a multipart part as it arrived: `multipart.Part.pieces`).
Piece = bytes | bytearray | memoryview

# A request: the part's length and the shared memory's size (the worker maps it anew when
# the size changed). A reply: status, where its pickle is (_IN_MEMORY or _FOLLOWS on the
# socket, when it does not fit) and the pickle's length.
_REQUEST = struct.Struct("<QQ")
_REPLY = struct.Struct("<BBQ")
_SPLIT, _INVALID, _FAILED = 0, 1, 2
_IN_MEMORY, _FOLLOWS = 0, 1
# The shared memory's size to begin with and to go back to after a larger part: a CT slice
# and its reply fit; a larger part grows it to the part's size, rounded up. Memory grown
# past `_KEEP_BYTES` is given back as soon as its part is done, not kept for the next one.
_MEMORY_BYTES = 2 * 1024 * 1024
_ROUND_BYTES = 1024 * 1024
_KEEP_BYTES = 64 * 1024 * 1024
# How long a worker whose socket closed may take to exit before it is killed.
_STOP_S = 5.0


class SplitFailed(Exception):
    """A part could not be split for a reason other than its content (`str` says why)."""


def _split(body: memoryview) -> tuple[int, bytes]:
    try:
        split = split_for_store(body)
        return _SPLIT, pickle.dumps((split, content_hash(split)), pickle.HIGHEST_PROTOCOL)
    except DicomError as err:
        return _INVALID, pickle.dumps((err.message, err.code, err.attribute))
    except Exception as err:  # this part's failure, reported to its sender; the worker goes on
        return _FAILED, pickle.dumps(f"{type(err).__name__}: {err}")


def serve(sock: socket.socket, memory_fd: int) -> None:
    """A worker's life: split each part it is given, until its socket closes."""
    memory: mmap.mmap | None = None
    with sock:
        while (head := receive_exactly(sock, _REQUEST.size)) is not None:
            length, size = _REQUEST.unpack(head)
            if memory is None or len(memory) != size:
                # A new mapping; the old one goes when nothing refers to it any more.
                memory = mmap.mmap(memory_fd, size)
            # Not released explicitly: what splitting made of the part may still refer to it
            # until collected, and a mapping stays until nothing does.
            status, payload = _split(memoryview(memory)[:length])
            if len(payload) <= size:
                memory[: len(payload)] = payload
                sock.sendall(_REPLY.pack(status, _IN_MEMORY, len(payload)))
            else:
                sock.sendall(_REPLY.pack(status, _FOLLOWS, len(payload)) + payload)


def _memory_file() -> int:
    if hasattr(os, "memfd_create"):
        return os.memfd_create("voxelhub-split", os.MFD_CLOEXEC)
    with tempfile.TemporaryFile() as file:  # unlinked; the descriptor keeps it
        return os.dup(file.fileno())


def _rounded(size: int) -> int:
    return max(_MEMORY_BYTES, -(-size // _ROUND_BYTES) * _ROUND_BYTES)


class _Worker:
    """One worker process, the socket that talks to it and the memory both map.

    Started as `python -m` this module rather than by multiprocessing, whose spawned
    children import the parent's main module first (the whole command line and web app).
    """

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self.memory_fd = _memory_file()
        try:
            os.ftruncate(self.memory_fd, _MEMORY_BYTES)
            self.memory = mmap.mmap(self.memory_fd, _MEMORY_BYTES)
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno()), str(self.memory_fd)],
                pass_fds=(theirs.fileno(), self.memory_fd),
            )
        except BaseException:
            ours.close()
            os.close(self.memory_fd)
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self.alive = True

    def _fit(self, length: int) -> None:
        """Size the memory for a part of `length` bytes: grown to fit, shrunk after a large
        one (the old mapping goes when nothing refers to it any more)."""
        size = _rounded(length)
        if size != len(self.memory):
            os.ftruncate(self.memory_fd, size)
            self.memory = mmap.mmap(self.memory_fd, size)

    async def split(self, pieces: Sequence[Piece]) -> tuple[SplitInstance, str]:
        loop = asyncio.get_running_loop()
        length = sum(len(piece) for piece in pieces)
        self._fit(length)
        at = 0
        for piece in pieces:  # copied in where they lie, never joined first
            self.memory[at : at + len(piece)] = piece
            at += len(piece)
        try:
            await loop.sock_sendall(self.sock, _REQUEST.pack(length, len(self.memory)))
            head = await self._receive(loop, _REPLY.size)
            reply = None
            if head is not None:
                status, where, length = _REPLY.unpack(head)
                if where == _IN_MEMORY:
                    with memoryview(self.memory) as view, view[:length] as in_memory:
                        reply = status, pickle.loads(in_memory)
                elif (followed := await self._receive(loop, length)) is not None:
                    reply = status, pickle.loads(followed)
        except OSError:
            reply = None
        if reply is None:
            raise await self._died()
        if len(self.memory) > _KEEP_BYTES:  # the worker maps it anew with the next part
            self._fit(0)
        status, value = reply
        if status == _SPLIT:
            done: tuple[SplitInstance, str] = value
            return done
        if status == _INVALID:
            message, code, attribute = value
            raise DicomError(message, code=code, attribute=attribute)
        raise SplitFailed(value)

    async def _receive(self, loop: asyncio.AbstractEventLoop, size: int) -> bytearray | None:
        """Exactly `size` bytes off the socket, or None when the worker closed it first."""
        buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        while got < size:
            count = await loop.sock_recv_into(self.sock, view[got:])
            if count == 0:
                return None
            got += count
        return buffer

    async def _died(self) -> SplitFailed:
        await asyncio.to_thread(self.close)
        return SplitFailed(
            f"the process splitting this instance stopped (exit code {self.process.returncode})"
        )

    def abandon(self) -> None:
        """Stop the worker without waiting for it (subprocess reaps it later)."""
        self.alive = False
        self.sock.close()
        self.process.kill()
        os.close(self.memory_fd)

    def close(self) -> None:
        """Close the socket (the worker then exits) and wait for the process to end."""
        self.alive = False
        self.sock.close()
        try:
            self.process.wait(timeout=_STOP_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.memory_fd)


class SplitPool:
    """Up to `size` workers, started when first needed, shared by any number of event loops.

    A caller that finds no idle worker and may not start one waits for the next worker
    given back; an exchange with a worker is never cut short (a cancelled request still
    lets its part's reply arrive), so a worker is only ever given back between parts.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._idle: collections.deque[_Worker] = collections.deque()
        self._waiting: collections.deque[asyncio.Future[_Worker]] = collections.deque()
        self._started = 0

    async def split(self, body: Piece | Sequence[Piece]) -> tuple[SplitInstance, str]:
        """`body` split in a worker, and its content hash; `body` may be given as the pieces
        it arrived in (a multipart part's), which are then never joined."""
        pieces = (body,) if isinstance(body, bytes | bytearray | memoryview) else tuple(body)
        worker = await self._take()
        exchange = asyncio.ensure_future(self._exchange(worker, pieces))
        exchange.add_done_callback(_retrieved)  # read when its caller was cancelled meanwhile
        return await asyncio.shield(exchange)

    def split_blocking(self, body: Piece | Sequence[Piece]) -> tuple[SplitInstance, str]:
        """`split` for a caller without an event loop."""
        return asyncio.run(self.split(body))

    async def _exchange(
        self, worker: _Worker, pieces: Sequence[Piece]
    ) -> tuple[SplitInstance, str]:
        try:
            return await worker.split(pieces)
        except (DicomError, SplitFailed):  # its reply read in full, or the worker gone
            raise
        except BaseException:  # cut short (the loop stopping): its reply may still come
            worker.abandon()
            raise
        finally:
            self._give_back(worker)

    async def _take(self) -> _Worker:
        with self._lock:
            if self._idle:
                return self._idle.popleft()
            start = self._started < self.size
            if start:
                self._started += 1
            else:
                waiter: asyncio.Future[_Worker] = asyncio.get_running_loop().create_future()
                self._waiting.append(waiter)
        if not start:
            return await waiter
        try:
            return await asyncio.to_thread(_Worker)
        except BaseException:
            with self._lock:
                self._started -= 1
            raise

    def _give_back(self, worker: _Worker) -> None:
        if not worker.alive:
            with self._lock:  # the next caller starts a new one
                self._started -= 1
                waiter = self._waiting.popleft() if self._waiting else None
            logger.warning("a split worker stopped (exit code %s)", worker.process.returncode)
            if waiter is not None:  # it would wait for a worker that never comes back
                waiter.get_loop().call_soon_threadsafe(self._start_for, waiter)
            return
        with self._lock:
            while self._waiting:
                waiter = self._waiting.popleft()
                if not waiter.done():
                    break
            else:
                self._idle.append(worker)
                return
        waiter.get_loop().call_soon_threadsafe(self._hand, waiter, worker)

    def _hand(self, waiter: asyncio.Future[_Worker], worker: _Worker) -> None:
        if waiter.done():  # cancelled meanwhile: the next one takes it
            self._give_back(worker)
        else:
            waiter.set_result(worker)

    def _start_for(self, waiter: asyncio.Future[_Worker]) -> None:
        if waiter.done():
            return
        with self._lock:
            self._started += 1

        def started(task: asyncio.Task[_Worker]) -> None:
            if task.cancelled() or task.exception() is not None:
                with self._lock:
                    self._started -= 1
                if not waiter.done():
                    waiter.set_exception(SplitFailed("could not start a split worker"))
            else:
                self._hand(waiter, task.result())

        asyncio.ensure_future(asyncio.to_thread(_Worker)).add_done_callback(started)

    def close(self) -> None:
        """Stop the idle workers (they exit when their socket closes)."""
        while True:
            with self._lock:
                if not self._idle:
                    return
                worker = self._idle.popleft()
                self._started -= 1
            worker.close()


def _retrieved(task: asyncio.Future[tuple[SplitInstance, str]]) -> None:
    if not task.cancelled():
        task.exception()


pool = SplitPool(os.cpu_count() or 1)


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group; the web process decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(socket.socket(fileno=int(sys.argv[1])), int(sys.argv[2]))
