"""Splitting instances in worker processes, so that STOW-RS uses every core.

Splitting an instance (reading, validating, HTJ2K-encoding it) is CPU-bound, and its Python
part holds the GIL: in threads of the web process it competes with the HTTP, multipart and
indexing work of every request, and under 4 STOW-RS clients one process used about 1.3 of
2 cores (bench/store.py). Each worker here is a process (`python -m` this module) that
loads only the DICOM code. A part goes to an idle worker over a socket pair and its split
instance comes back pickled, with its content hash; the calling thread waits without
holding the GIL. A worker that dies (a codec crash) fails only the part it held, and a new
one takes its place; a worker whose web process is gone sees its socket close and exits.
"""

from __future__ import annotations

import logging
import os
import pickle
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading

from voxelhub.core.sockets import receive_exactly
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.model import SplitInstance
from voxelhub.store.dicomweb.splitting import content_hash, split_for_store

logger = logging.getLogger(__name__)

_REQUEST = struct.Struct("<Q")  # the body's length; the body follows
_REPLY = struct.Struct("<BQ")  # status and the pickle's length; the pickle follows
_SPLIT, _INVALID, _FAILED = 0, 1, 2
# What the first read of a reply takes: enough for a split CT slice (~35 KB).
_FIRST_READ = 64 * 1024
# How long a worker whose socket closed may take to exit before it is killed.
_STOP_S = 5.0
# How long a caller waits for an idle worker before it looks again whether one must start.
_WAIT_S = 1.0


class SplitFailed(Exception):
    """A part could not be split for a reason other than its content (`str` says why)."""


def _split(body: bytes) -> tuple[int, bytes]:
    try:
        split = split_for_store(body)
        return _SPLIT, pickle.dumps((split, content_hash(split)), pickle.HIGHEST_PROTOCOL)
    except DicomError as err:
        return _INVALID, pickle.dumps((err.message, err.code, err.attribute))
    except Exception as err:  # this part's failure, reported to its sender; the worker goes on
        return _FAILED, pickle.dumps(f"{type(err).__name__}: {err}")


def serve(sock: socket.socket) -> None:
    """A worker's life: split each body it is sent, until its socket closes."""
    with sock:
        while (head := receive_exactly(sock, _REQUEST.size)) is not None:
            body = receive_exactly(sock, _REQUEST.unpack(head)[0])
            if body is None:
                return
            status, payload = _split(body)
            sock.sendall(_REPLY.pack(status, len(payload)) + payload)


class _Worker:
    """One worker process and the socket that talks to it; one part at a time.

    Started as `python -m` this module rather than by multiprocessing, whose spawned
    children import the parent's main module first (the whole command line and web app).
    """

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        self.sock = ours
        self.alive = True

    def split(self, body: bytes | bytearray) -> tuple[SplitInstance, str]:
        # One call out and usually one back: each blocking call gives up the GIL, and on a
        # busy web process taking it back can wait a whole switch interval.
        try:
            self._send(body)
            reply = self._reply()
        except OSError:
            reply = None
        if reply is None:
            raise self._died()
        status, payload = reply
        if status == _SPLIT:
            done: tuple[SplitInstance, str] = pickle.loads(payload)
            return done
        if status == _INVALID:
            message, code, attribute = pickle.loads(payload)
            raise DicomError(message, code=code, attribute=attribute)
        raise SplitFailed(pickle.loads(payload))

    def _send(self, body: bytes | bytearray) -> None:
        head, view = _REQUEST.pack(len(body)), memoryview(body)
        sent = self.sock.sendmsg([head, view])
        if sent < len(head):  # a signal cut the call short: send the rest as it is
            self.sock.sendall(head[sent:])
            sent = len(head)
        if sent < len(head) + len(view):
            self.sock.sendall(view[sent - len(head) :])

    def _reply(self) -> tuple[int, memoryview] | None:
        """(status, pickle) of the next reply, or None when the worker is gone."""
        buffer = bytearray(_FIRST_READ)
        got = 0
        while got < _REPLY.size:
            count = self.sock.recv_into(memoryview(buffer)[got:])
            if count == 0:
                return None
            got += count
        status, size = _REPLY.unpack_from(buffer)
        end = _REPLY.size + size
        if end > len(buffer):
            buffer.extend(bytes(end - len(buffer)))
        view = memoryview(buffer)
        while got < end:
            count = self.sock.recv_into(view[got:end])
            if count == 0:
                return None
            got += count
        return status, view[_REPLY.size : end]

    def _died(self) -> SplitFailed:
        self.close()
        return SplitFailed(
            f"the process splitting this instance stopped (exit code {self.process.returncode})"
        )

    def close(self) -> None:
        """Close the socket (the worker then exits) and wait for the process to end."""
        self.alive = False
        self.sock.close()
        try:
            self.process.wait(timeout=_STOP_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class SplitPool:
    """Up to `size` workers, started when first needed; `split` may be called from any thread."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._started = 0

    def split(self, body: bytes | bytearray) -> tuple[SplitInstance, str]:
        """`body` split in a worker, and its content hash; blocks until done."""
        worker = self._take()
        try:
            return worker.split(body)
        finally:
            self._give_back(worker)

    def _take(self) -> _Worker:
        while True:
            try:
                return self._idle.get(timeout=0 if self._can_start() else _WAIT_S)
            except queue.Empty:
                pass
            with self._lock:
                if self._started < self.size:
                    self._started += 1
                    break
        try:
            return _Worker()
        except BaseException:
            with self._lock:
                self._started -= 1
            raise

    def _can_start(self) -> bool:
        with self._lock:
            return self._started < self.size

    def _give_back(self, worker: _Worker) -> None:
        if worker.alive:
            self._idle.put(worker)
            return
        with self._lock:  # the next caller starts a new one
            self._started -= 1
        logger.warning("a split worker stopped (exit code %s)", worker.process.returncode)

    def close(self) -> None:
        """Stop the idle workers (they exit when their socket closes)."""
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                return
            worker.close()
            with self._lock:
                self._started -= 1


pool = SplitPool(os.cpu_count() or 1)


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group; the web process decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(socket.socket(fileno=int(sys.argv[1])))
