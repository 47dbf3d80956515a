"""Indexing C-STORE instances in the background, many per transaction.

Two kinds of instance arrive here. Journaled ones were made durable in the journal and
already acknowledged (in the indexer process, see `indexer`): they are split (HTJ2K
encoding) in a thread pool while the next ones arrive, and indexed in batches. Waited-for
ones (a UID already stored or on its way, whose answer depends on the index) were split by
the handler, which waits for the commit to answer. One thread indexes whatever has
arrived with `Ingest.add_many` (one multi-row INSERT, objects written in parallel and
fsynced in one pass), commits, and then lets the journal drop what is indexed.

A journaled instance whose indexing fails on the database is tried again until it is
stored (or, when the service stops, left in the journal for the next start); one that can
never be stored (it cannot be split, or a UID conflict raced its acknowledgement) is kept
under `refused/` beside the journal and logged as an error.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from voxelhub.core.db import engine_for
from voxelhub.core.errors import VoxelhubError
from voxelhub.core.runtime import Runtime
from voxelhub.dicom.model import SplitInstance
from voxelhub.store.dicomweb.stow import split_part
from voxelhub.store.dimse.common import Peer, record
from voxelhub.store.ingest import Ingest, Stored

logger = logging.getLogger(__name__)

# The most instances and bytes indexed in one transaction (as STOW-RS batches them).
BATCH_INSTANCES = 64
BATCH_BYTES = 64 * 1024 * 1024
# How long a batch of acknowledged instances waits for more before it is indexed.
BATCH_WINDOW_S = 0.05
RETRY_MAX_S = 30.0
# Acknowledged instances held in memory before the next one waits (backpressure: its
# answer is delayed until indexing catches up).
MAX_OUTSTANDING = 256

Outcome = Stored | VoxelhubError


class Journaled(Protocol):
    """Where an acknowledged instance is kept until it is indexed (a journal segment)."""

    def done(self) -> None:
        """The instance is indexed (or will never be): the journal may drop it."""


_splitters = ThreadPoolExecutor(
    max_workers=max(os.cpu_count() or 1, 1), thread_name_prefix="dimse-split"
)


@dataclass
class _Pending:
    peer: Peer
    sop_instance_uid: str
    split: Future[SplitInstance]
    segment: Journaled | None = None  # journaled: acknowledged already
    payload: bytes = b""
    done: Future[Outcome] = field(default_factory=Future)
    finished: bool = False


class _Closed:
    """Put on the queue by `close()`: the thread ends after the batches before it."""


class Committer:
    """The thread that indexes and commits the instances of every association of a server.

    It keeps one database connection (no pool checkout or ping per transaction) and one
    `Ingest`, whose study and series ids stay valid across its commits; after a failure
    both are made anew.
    """

    def __init__(self, runtime: Runtime, archive_id: uuid.UUID, *, refused: Path) -> None:
        self._runtime = runtime
        self._archive_id = archive_id
        self._refused = refused
        self._queue: queue.SimpleQueue[_Pending | _Closed] = queue.SimpleQueue()
        self._connection: Connection | None = None
        self._db: Session | None = None
        self._ingest: Ingest | None = None
        self._closed = False
        self._progress = threading.Condition()
        self._submitted = 0
        self._finished = 0
        self._pending_uids: Counter[str] = Counter()
        self._thread = threading.Thread(target=self._run, name="dimse-commit", daemon=True)
        self._thread.start()

    # --- what handlers call ------------------------------------------------------------

    def is_pending(self, sop_instance_uid: str) -> bool:
        """Whether an instance with this UID is acknowledged but not yet indexed."""
        with self._progress:
            return self._pending_uids[sop_instance_uid] > 0

    def store(self, split: SplitInstance, peer: Peer) -> Outcome:
        """Index one instance and wait until it is committed (or refused)."""
        ready: Future[SplitInstance] = Future()
        ready.set_result(split)
        pending = _Pending(peer, split.keys.sop_instance_uid, ready)
        self._put(pending)
        return pending.done.result()

    def enqueue(
        self, payload: bytes, peer: Peer, *, sop_instance_uid: str, segment: Journaled
    ) -> None:
        """Index a journaled (durable, acknowledged) instance; `segment` hears when it is."""
        with self._progress:
            self._progress.wait_for(
                lambda: self._closed or self._submitted - self._finished < MAX_OUTSTANDING
            )
        splitting = _splitters.submit(split_part, payload)
        self._put(_Pending(peer, sop_instance_uid, splitting, segment, payload))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything handed in before this call is indexed; False on timeout."""
        with self._progress:
            target = self._submitted
            return self._progress.wait_for(lambda: self._finished >= target, timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Index what is queued, then stop the thread and release the connection."""
        if self._closed:
            return
        with self._progress:
            self._closed = True
            self._progress.notify_all()
        self._queue.put(_Closed())
        self._thread.join(timeout)

    def _put(self, pending: _Pending) -> None:
        with self._progress:
            self._submitted += 1
            if pending.segment is not None:
                self._pending_uids[pending.sop_instance_uid] += 1
        self._queue.put(pending)

    # --- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        closing = False
        while not closing:
            batch, closing = self._gather(self._queue.get())
            try:
                self._index(batch, closing=closing)
            except Exception:  # the thread must live on, and nobody may wait forever
                logger.error("indexing C-STORE instances failed unexpectedly; the acknowledged "
                             "ones stay in the journal until the next start",
                             exc_info=True)  # fmt: skip
                for pending in batch:
                    if not pending.done.done():
                        pending.done.set_exception(RuntimeError("indexing failed"))
                    self._finish(pending, None, keep=True)
        self._disconnect()

    def _gather(self, first: _Pending | _Closed) -> tuple[list[_Pending], bool]:
        """One batch: what has arrived, and for acknowledged ones a short wait for more."""
        if isinstance(first, _Closed):
            return [], True
        batch = [first]
        deadline = time.monotonic() + BATCH_WINDOW_S
        while len(batch) < BATCH_INSTANCES:
            # Nobody waits on journaled instances: a few more per commit costs less.
            waiting = any(p.segment is None for p in batch)
            timeout = 0.0 if waiting else max(deadline - time.monotonic(), 0.0)
            try:
                item = self._queue.get(timeout=timeout) if timeout else self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Closed):
                return batch, True
            batch.append(item)
            if sum(len(p.payload) for p in batch) >= BATCH_BYTES:
                break
        return batch, False

    def _index(self, batch: list[_Pending], *, closing: bool) -> None:
        ready: list[tuple[_Pending, SplitInstance]] = []
        for pending in batch:
            try:
                ready.append((pending, pending.split.result()))
            except Exception as err:
                self._refuse(pending, f"it could not be split: {type(err).__name__}: {err}")
                self._finish(pending, VoxelhubError(str(err)))
        indexed = self._commit_retrying(ready, closing=closing)
        for pending, outcome in indexed:
            if pending.segment is not None and not isinstance(outcome, Stored):
                self._refuse(pending, f"indexing refused it: {outcome.message}")
            self._finish(pending, outcome)

    def _commit_retrying(
        self, ready: list[tuple[_Pending, SplitInstance]], *, closing: bool
    ) -> list[tuple[_Pending, Outcome]]:
        """Commit; on failure answer the waiting handlers and retry the acknowledged."""
        delay = 1.0
        while ready:
            try:
                outcomes = self._commit([p for p, _ in ready], [s for _, s in ready])
                return [(p, o) for (p, _), o in zip(ready, outcomes, strict=True)]
            except Exception as err:
                logger.error("indexing %d C-STORE instance(s) failed", len(ready), exc_info=True)
                self._disconnect()
                for pending, _ in ready:
                    if pending.segment is None:  # not acknowledged: its peer hears of it
                        pending.done.set_exception(err)
                        self._finish(pending, None)
                ready = [(p, s) for p, s in ready if p.segment is not None]
            if ready and (closing or self._closed):
                logger.error("%d acknowledged instance(s) stay in the journal until the next "
                             "start", len(ready))  # fmt: skip
                for pending, _ in ready:
                    self._finish(pending, None, keep=True)
                return []
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)
        return []

    def _commit(self, batch: list[_Pending], splits: list[SplitInstance]) -> list[Outcome]:
        db, ingest = self._session()
        outcomes = ingest.add_many(splits)
        for pending, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Stored):
                record(db, "dimse.store", self._archive_id, pending.peer,
                       sop_instance_uid=outcome.sop_instance_uid,
                       already_stored=outcome.already_stored)  # fmt: skip
        ingest.finish()
        db.commit()
        return outcomes

    def _finish(self, pending: _Pending, outcome: Outcome | None, *, keep: bool = False) -> None:
        if pending.finished:
            return
        pending.finished = True
        if outcome is not None and not pending.done.done():
            pending.done.set_result(outcome)
        if pending.segment is not None and not keep:
            pending.segment.done()
        with self._progress:
            self._finished += 1
            if pending.segment is not None:
                self._pending_uids[pending.sop_instance_uid] -= 1
                if self._pending_uids[pending.sop_instance_uid] <= 0:
                    del self._pending_uids[pending.sop_instance_uid]
            self._progress.notify_all()

    def _refuse(self, pending: _Pending, why: str) -> None:
        if pending.segment is None:
            return
        self._refused.mkdir(parents=True, exist_ok=True)
        path = self._refused / f"{pending.sop_instance_uid or uuid.uuid4().hex}.dcm"
        path.write_bytes(pending.payload)
        logger.error("C-STORE of %s from %s was acknowledged but %s; the instance is kept "
                     "in %s", pending.sop_instance_uid, pending.peer.calling_ae, why,
                     path)  # fmt: skip

    def _session(self) -> tuple[Session, Ingest]:
        if self._db is None or self._ingest is None:
            self._connection = engine_for(self._runtime.database_url).connect()
            self._db = Session(bind=self._connection, expire_on_commit=False)
            self._ingest = Ingest(self._db, self._runtime.store, self._archive_id)
        return self._db, self._ingest

    def _disconnect(self) -> None:
        db, connection = self._db, self._connection
        self._db = self._ingest = self._connection = None
        try:
            if db is not None:
                db.close()
            if connection is not None:
                connection.close()
        except Exception:  # a broken connection is dropped either way
            logger.debug("closing the C-STORE connection failed", exc_info=True)
