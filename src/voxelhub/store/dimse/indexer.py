"""Indexing journaled C-STORE instances in a process of its own.

The thread that receives an instance and the work that indexes it (splitting, HTJ2K
encoding, the object writes, the database insert) used to share one process, and so its
GIL: every time the receiving thread came back from a system call (a socket read, the
journal's fdatasync, sending the answer) it waited for an indexing thread to let go, about
a millisecond per instance. Here the indexing runs in a child process
(`python -m voxelhub.store.dimse.indexer`) with its own `Committer`, and the two share
nothing but the journal: the receiving side sends where each acknowledged record lies in
its segment (a few dozen bytes), the child reads the record from the file, indexes it, and
reports its number back, upon which the segment may drop it.

A child that dies (a codec crash, the OOM killer) loses nothing: the parent starts another
and sends it every record not yet reported, in order; ingest is idempotent on
SOPInstanceUID, so a record indexed twice is stored once. Records still unreported when the
service stops stay in the journal for the next start, as before.

Messages are a 4-byte length and a JSON object, both ways. To the child: its configuration
first (settings, database URL, archive, the folder for refused instances), then one
``{"seq", "path", "offset", "length", "origin", "uid"}`` per record. From the child:
``{"done": [seq, ...]}``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from voxelhub.core.runtime import Runtime
from voxelhub.core.settings import Settings
from voxelhub.core.sockets import receive_exactly
from voxelhub.store.dimse.committer import MAX_OUTSTANDING
from voxelhub.store.dimse.journal import Segment

logger = logging.getLogger(__name__)

_LENGTH = struct.Struct("<I")
# How long a stopping child may take to index what it holds before it is killed.
STOP_TIMEOUT_S = 60.0


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    body = json.dumps(message, separators=(",", ":")).encode()
    sock.sendall(_LENGTH.pack(len(body)) + body)


def _receive(sock: socket.socket) -> dict[str, Any] | None:
    """The next message, or None when the other end closed."""
    head = receive_exactly(sock, _LENGTH.size)
    if head is None:
        return None
    body = receive_exactly(sock, _LENGTH.unpack(head)[0])
    return None if body is None else json.loads(body)


def _settings_document(settings: Settings) -> dict[str, Any]:
    """The settings as JSON values, secrets included (they go over a private socket)."""
    values = {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in settings.model_dump().items()
    }
    return json.loads(json.dumps(values, default=str))  # type: ignore[no-any-return]


@dataclass
class _Record:
    segment: Segment
    offset: int
    length: int
    origin: bytes
    uid: str


class Indexer:
    """The receiving side: hands acknowledged records to the child and tracks them."""

    def __init__(self, runtime: Runtime, archive_id: uuid.UUID, *, refused: Path) -> None:
        self._config = {
            "settings": _settings_document(runtime.settings),
            "database_url": runtime.database_url,
            "archive_id": str(archive_id),
            "refused": str(refused),
        }
        self._records: dict[int, _Record] = {}  # sent, not reported back yet
        self._uids: collections.Counter[str] = collections.Counter()
        self._sequence = 0
        self._closing = False
        self._progress = threading.Condition()
        self._send_lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._start_child()
        self._reader = threading.Thread(target=self._read, name="dimse-indexer", daemon=True)
        self._reader.start()

    # --- the receiving side's calls ------------------------------------------------------

    def enqueue(
        self, segment: Segment, offset: int, length: int, *, origin: bytes, uid: str
    ) -> None:
        """Index the record at `offset` (its payload, `length` bytes) of `segment`; the
        segment hears when it is done. Waits while too many are outstanding."""
        with self._progress:
            self._progress.wait_for(lambda: self._closing or len(self._records) < MAX_OUTSTANDING)
            self._sequence += 1
            sequence = self._sequence
            record = _Record(segment, offset, length, origin, uid)
            self._records[sequence] = record
            if uid:
                self._uids[uid] += 1
        self._send_record(sequence, record)

    def is_pending(self, sop_instance_uid: str) -> bool:
        """Whether an instance with this UID is acknowledged and not yet indexed."""
        with self._progress:
            return self._uids[sop_instance_uid] > 0

    def wait_for(self, sop_instance_uid: str, timeout: float | None = None) -> bool:
        """Wait until no record with this UID is left to index; False on timeout."""
        with self._progress:
            return self._progress.wait_for(lambda: self._uids[sop_instance_uid] <= 0, timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record handed in before this call is indexed; False on
        timeout."""
        with self._progress:
            target = self._sequence
            return self._progress.wait_for(
                lambda: not any(s <= target for s in self._records), timeout
            )

    def close(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Let the child index what it was sent, then stop it; what it did not report
        stays in the journal."""
        with self._progress:
            if self._closing:
                return
            self._closing = True
            self._progress.notify_all()
        sock, child = self._sock, self._child
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)  # the child ends once it has indexed the rest
        self._reader.join(timeout)
        if child is not None:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                logger.error("the C-STORE indexer did not stop; killing it")
                child.kill()
                child.wait()
        if sock is not None:
            sock.close()

    # --- the child -------------------------------------------------------------------------

    def _start_child(self) -> None:
        mine, theirs = socket.socketpair()
        with theirs:
            self._child = subprocess.Popen(
                [sys.executable, "-m", __name__, str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
            )  # fmt: skip
        _send(mine, self._config)
        self._sock = mine

    def _send_record(self, sequence: int, record: _Record) -> None:
        message = {
            "seq": sequence,
            "path": str(record.segment.path),
            "offset": record.offset,
            "length": record.length,
            "origin": record.origin.decode(),
            "uid": record.uid,
        }
        with self._send_lock:
            sock = self._sock
            if sock is None:
                return
            try:
                _send(sock, message)
            except OSError:  # the child is gone: the reader restarts it and sends again
                logger.debug("the C-STORE indexer is gone; record %d goes again", sequence)

    def _read(self) -> None:
        while True:
            sock = self._sock
            message = _receive(sock) if sock is not None else None
            if message is not None:
                self._done(message["done"])
                continue
            with self._progress:
                if self._closing:
                    return
            self._restart()

    def _done(self, sequences: list[int]) -> None:
        finished = []
        with self._progress:
            for sequence in sequences:
                record = self._records.pop(sequence, None)
                if record is None:
                    continue
                finished.append(record.segment)
                if record.uid:
                    self._uids[record.uid] -= 1
                    if self._uids[record.uid] <= 0:
                        del self._uids[record.uid]
            self._progress.notify_all()
        for segment in finished:
            segment.done()

    def _restart(self) -> None:
        """The child died: start another and send it every unreported record."""
        child = self._child
        code = child.wait() if child is not None else None
        logger.error("the C-STORE indexer stopped (exit status %s); starting another, which "
                     "indexes the %d instance(s) not yet indexed", code,
                     len(self._records))  # fmt: skip
        with self._send_lock:
            if self._sock is not None:
                self._sock.close()
            self._start_child()
        with self._progress:
            waiting = sorted(self._records.items())
        for sequence, record in waiting:
            self._send_record(sequence, record)


# --- the child process -------------------------------------------------------------------


class _Reported:
    """Stands for the parent's segment in the child's `Committer`: `done()` reports the
    record's number back."""

    def __init__(self, reporter: _Reporter, sequence: int) -> None:
        self._reporter = reporter
        self._sequence = sequence

    def done(self) -> None:
        self._reporter.report(self._sequence)


class _Reporter:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def report(self, sequence: int) -> None:
        with self._lock:
            _send(self._sock, {"done": [sequence]})


class _Files:
    """Read-only descriptors of the segments being read, the few most recent kept open."""

    KEEP = 4

    def __init__(self) -> None:
        self._open: collections.OrderedDict[str, int] = collections.OrderedDict()

    def read(self, path: str, offset: int, length: int) -> bytes:
        fd = self._open.pop(path, None)
        if fd is None:
            fd = os.open(path, os.O_RDONLY)
        self._open[path] = fd
        while len(self._open) > self.KEEP:
            os.close(self._open.popitem(last=False)[1])
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise OSError(f"journal segment {path} ends before the record at {offset}")
        return data


def _serve(sock: socket.socket) -> None:
    # Imported here: the parent imports this module too, and needs none of it.
    from voxelhub.core.objects import open_store
    from voxelhub.store.dimse.committer import Committer
    from voxelhub.store.dimse.common import Peer

    config = _receive(sock)
    if config is None:
        return
    settings = Settings.model_validate(config["settings"])
    logging.basicConfig(level=settings.log_level,
                        format="%(levelname)s %(name)s (C-STORE indexer): %(message)s")  # fmt: skip
    runtime = Runtime(settings=settings, database_url=config["database_url"],
                      store=open_store(settings))  # fmt: skip
    committer = Committer(runtime, uuid.UUID(config["archive_id"]),
                          refused=Path(config["refused"]))  # fmt: skip
    reporter, files = _Reporter(sock), _Files()
    try:
        while (message := _receive(sock)) is not None:
            try:
                payload = files.read(message["path"], message["offset"], message["length"])
            except OSError:
                # Not reported: the record stays in the journal for the next start.
                logger.error("cannot read a journaled C-STORE instance", exc_info=True)
                continue
            committer.enqueue(
                payload, Peer(**json.loads(message["origin"])),
                sop_instance_uid=message["uid"],
                segment=_Reported(reporter, message["seq"]),
            )  # fmt: skip
    finally:
        committer.close(STOP_TIMEOUT_S)


def main() -> None:
    """The child's entry point: the socket's descriptor is its one argument."""
    # Its parent decides when it ends (by closing the socket), also on Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(sys.argv[1]))
    with sock:
        _serve(sock)


if __name__ == "__main__":
    main()
