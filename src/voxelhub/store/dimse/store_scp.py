"""C-STORE SCP: each received instance is checked, made durable, and indexed in batches.

The dataset is taken as the peer encoded it (no decode and re-encode), prefixed with the
file meta, de-identified when the archive asks for it, read and validated. A new instance
is then appended to the association's journal segment (fdatasync) and acknowledged; the
indexer process (`indexer`) reads it back from the segment, splits and indexes it, many per
transaction, while the peer sends the next one. An instance whose UID is already stored or
on its way is split here and answered only once this process's `Committer` has judged it
(stored before, or a UID conflict).

Either way a success status names an instance that a crash cannot lose: the journal is
read back on start (see `journal`). Requests reach `StoreService.receive` from the thread
that reads the association's socket (see `receiver`), or, for the few that pynetdicom
decodes itself, as EVT_C_STORE events. Queries (C-FIND, C-GET, C-MOVE) first wait for the
acknowledged instances to be indexed, so a peer always finds what it stored.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import cast

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from sqlalchemy import Connection, create_engine, select
from sqlalchemy.pool import NullPool

from voxelhub.core.db import session_scope
from voxelhub.core.errors import VoxelhubError
from voxelhub.core.runtime import Runtime
from voxelhub.dicom.attributes import Attributes
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.fastsplit import read_plain
from voxelhub.dicom.keys import instance_keys
from voxelhub.dicom.read import read_dataset
from voxelhub.dicom.validate import validate
from voxelhub.store import ingest_guard
from voxelhub.store.deid import CachedPreparer, Prepare, preparer_for
from voxelhub.store.dicomweb.stow import split_part
from voxelhub.store.dimse.committer import Committer
from voxelhub.store.dimse.common import (
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH,
    OUT_OF_RESOURCES,
    SUCCESS,
    Peer,
    status,
)
from voxelhub.store.dimse.indexer import Indexer
from voxelhub.store.dimse.journal import Segment, Spares, leftovers, pending_records
from voxelhub.store.errors import UidConflict
from voxelhub.store.models import Instance, Series, Study

logger = logging.getLogger(__name__)

JOURNAL_FOLDER = "dimse-journal"
# How long a closing association waits for its instances to be indexed before it stops
# marking the archive in flight.
GUARD_FLUSH_S = 120.0
# How long an instance under a UID met before waits for the acknowledged one to be indexed.
PENDING_WAIT_S = 60.0


@dataclass
class _Association:
    """What the handler keeps per association: its peer, journal segment, known UIDs."""

    peer: Peer
    origin: bytes  # the peer, as journal records name it
    segment: Segment | None = None
    # Holds the archive's in-flight mark (see `ingest_guard`) while the association lasts.
    guard: Connection | None = None
    # Per study, the SOP Instance UIDs the archive held when the study was first seen,
    # and those acknowledged since.
    known: dict[str, set[str]] = field(default_factory=dict)
    # One instance at a time: a request decoded by pynetdicom is answered on another
    # thread than those the receive path takes, and a peer that does not wait for its
    # answers could overlap them.
    busy: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class _Received:
    data: bytes  # the Part-10 bytes to store (de-identified when asked)
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str


class StoreService:
    """The C-STORE handler of one DIMSE server; `close()` it when the server stops."""

    def __init__(self, runtime: Runtime, archive_id: uuid.UUID) -> None:
        self._runtime = runtime
        self._archive_id = archive_id
        self._prepare = CachedPreparer(self._lookup_preparer)
        self._folder = runtime.settings.home / JOURNAL_FOLDER / str(archive_id)
        # Instances whose answer waits for the index are indexed here; acknowledged ones by
        # the indexer process, away from this process's GIL (see `indexer`).
        self._committer = Committer(runtime, archive_id, refused=self._folder / "refused")
        self._indexer = Indexer(runtime, archive_id, refused=self._folder / "refused")
        # Existence checks only (one statement each, no transaction); a failed lookup
        # sends the instance the slow way.
        self._lookups = create_engine(
            runtime.database_url, isolation_level="AUTOCOMMIT", pool_size=2, max_overflow=30
        )
        # One connection per open association holds its in-flight mark: not pooled.
        self._guards = create_engine(
            runtime.database_url, isolation_level="AUTOCOMMIT", poolclass=NullPool
        )
        self._associations: dict[Association, _Association] = {}
        self._lock = threading.Lock()
        self._replay()
        # After the replay, which removes the segments it finds without records.
        self._spares = Spares(self._folder)

    def _replay(self) -> None:
        """Index again what a previous run acknowledged and may not have committed."""
        for path in leftovers(self._folder):
            records = pending_records(path)
            segment = Segment.leftover(path, len(records))
            logger.info("indexing %d C-STORE instance(s) left in %s", len(records), path)
            for origin, offset, length in records:
                # The UID is learnt when the instance is split; no peer waits on it.
                self._indexer.enqueue(segment, offset, length, origin=origin, uid="")
            if not records:
                segment.seal()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every acknowledged instance is indexed; False on timeout."""
        return self._indexer.flush(timeout) and self._committer.flush(timeout)

    def close(self) -> None:
        """Index the instances still queued and release the database connections."""
        self._indexer.close()
        self._committer.close()
        self._spares.close()
        with self._lock:
            states, self._associations = list(self._associations.values()), {}
        for state in states:
            if state.segment is not None:
                state.segment.seal()
            if state.guard is not None:
                self._release_guard(state.guard)
        self._lookups.dispose()
        self._guards.dispose()

    def handle_close(self, event: Event) -> None:
        """The association's connection closed: its journal segment takes no more, and once
        what it sent is indexed its archive is no longer marked in flight."""
        with self._lock:
            state = self._associations.pop(event.assoc, None)
        if state is None:
            return
        if state.segment is not None:
            state.segment.seal()
        if state.guard is not None:
            if not self.flush(GUARD_FLUSH_S):
                logger.warning("C-STORE instances of %s still being indexed", state.peer)
            self._release_guard(state.guard)

    def _hold_guard(self) -> Connection | None:
        """A connection marking the archive in flight; None (no mark) if the database is
        unreachable: storing goes on, a trigger may then fire on a paused series."""
        try:
            conn = self._guards.connect()
            ingest_guard.hold_on_connection(conn, self._archive_id)
        except Exception:
            logger.warning("cannot mark the C-STORE association in flight", exc_info=True)
            return None
        return conn

    def _release_guard(self, conn: Connection) -> None:
        try:
            ingest_guard.release_on_connection(conn, self._archive_id)
        except Exception:
            # The session ending releases the lock anyway.
            logger.warning("cannot unmark a C-STORE association", exc_info=True)
            conn.invalidate()
        finally:
            conn.close()

    def _lookup_preparer(self) -> Prepare | None:
        with session_scope(self._runtime.database_url) as db:
            return preparer_for(db, self._runtime.settings, self._archive_id)

    def handle(self, event: Event) -> int | Dataset:
        """The EVT_C_STORE handler, for the requests pynetdicom decodes itself."""
        request = cast(C_STORE, event.request)
        return self.receive(event.assoc, event.encoded_dataset(),
                            requested_uid=str(request.AffectedSOPInstanceUID or ""),
                            requested_class=str(request.AffectedSOPClassUID or ""))  # fmt: skip

    def receive(
        self, assoc: Association, data: bytes, *, requested_uid: str, requested_class: str = ""
    ) -> int | Dataset:
        """Check, journal and acknowledge one instance (its Part-10 bytes) that `assoc`
        sent for the C-STORE-RQ naming `requested_uid` of `requested_class`; the status to
        answer with."""
        state = self._association(assoc)
        with state.busy:
            return self._receive_one(
                state, data, requested_uid=requested_uid, requested_class=requested_class
            )

    def _receive_one(
        self, state: _Association, data: bytes, *, requested_uid: str, requested_class: str
    ) -> int | Dataset:
        prepare = self._prepare.get()
        # Without de-identification the bytes received are the bytes stored: they go to
        # the journal first, and the disk writes them while they are read and checked.
        written = self._write(state, data) if prepare is None else None
        received = self._receive(data, requested=(requested_uid, requested_class), prepare=prepare)
        if isinstance(received, Dataset) or self._met_before(state, received):
            if written is not None:
                written[0].cancel_last()
            if isinstance(received, Dataset):
                return received
            return self._store_after_pending(received, state.peer)
        if prepare is not None:
            written = self._write(state, received.data)
        if written is None or not self._synced(written[0]):
            return status(OUT_OF_RESOURCES, "storage failed: the journal cannot be written")
        segment, offset = written
        self._indexer.enqueue(segment, offset, len(received.data), origin=state.origin,
                              uid=received.sop_instance_uid)  # fmt: skip
        return SUCCESS

    def _association(self, assoc: Association) -> _Association:
        with self._lock:
            state = self._associations.get(assoc)
            new = state is None
            if state is None:
                peer = Peer.of_association(assoc)
                state = _Association(peer, json.dumps(peer.__dict__).encode())
                self._associations[assoc] = state
        if new:
            state.guard = self._hold_guard()
        return state

    def _write(self, state: _Association, data: bytes) -> tuple[Segment, int] | None:
        """Write `data` to the association's journal segment (not yet durable: see
        `_synced`): the segment and where the data starts in it; None if it cannot be
        written."""
        try:
            segment = state.segment
            if segment is None or segment.full:
                state.segment = None
                if segment is not None:
                    segment.seal()
                segment = state.segment = self._spares.take()
            return segment, segment.write(state.origin, data)
        except OSError:
            logger.error("a C-STORE instance could not be journaled", exc_info=True)
            return None

    @staticmethod
    def _synced(segment: Segment) -> bool:
        """Whether the record just written is durable; if not, it is withdrawn."""
        try:
            segment.sync()
        except OSError:
            logger.error("a C-STORE instance could not be journaled", exc_info=True)
            try:
                segment.cancel_last()
            except OSError:
                logger.warning("cannot withdraw the record from %s", segment.path)
            return False
        return True

    def _receive(
        self, data: bytes, *, requested: tuple[str, str], prepare: Prepare | None
    ) -> _Received | Dataset:
        """The received instance, read and validated, or the status that refuses it.
        `requested` is the SOP Instance and Class UID the C-STORE-RQ names."""
        requested_uid, requested_class = requested
        try:
            if prepare is not None:
                data = prepare(data)[0]
            # The plain-file reader is the quick way; anything else is read by pydicom.
            plain = read_plain(data)
            ds: Attributes = plain.attributes if plain is not None else read_dataset(data)
            validate(ds)
            keys = instance_keys(ds)
        except DicomError as err:
            logger.info("C-STORE of %s refused: %s", requested_uid, err.message)
            return status(CANNOT_UNDERSTAND, f"{err.code}: {err.message}")
        except Exception as err:  # a decoder crash must answer, not drop the association
            logger.warning("C-STORE of %s could not be read", requested_uid, exc_info=True)
            return status(CANNOT_UNDERSTAND, f"processing failed: {type(err).__name__}: {err}")
        # De-identification remaps the UIDs the request names.
        if prepare is None and requested_uid and keys.sop_instance_uid != requested_uid:
            return status(DATASET_DOES_NOT_MATCH, "SOPInstanceUID of the dataset differs from "
                          "the C-STORE request's Affected SOP Instance UID")  # fmt: skip
        # A CT dataset sent on an MR context is a sender's error; stored, it would be
        # offered back under a class its peers did not agree to.
        if requested_class and keys.sop_class_uid != requested_class:
            return status(DATASET_DOES_NOT_MATCH, f"SOPClassUID of the dataset "
                          f"({keys.sop_class_uid}) differs from the C-STORE request's Affected "
                          f"SOP Class UID ({requested_class})")  # fmt: skip
        return _Received(
            data, keys.sop_instance_uid, keys.series_instance_uid, keys.study_instance_uid
        )

    def _met_before(self, state: _Association, received: _Received) -> bool:
        """Whether the UID is stored or on its way: then only the index can answer.

        The archive's UIDs of a study are read once per association, so an instance sent
        again under another series of its study (a conflict) is refused on the spot, not
        acknowledged. A UID reused in another study is refused by the index afterwards
        (kept under refused/): a lookup per instance would cost a fifth of C-STORE's
        speed. A lookup that fails counts as met before, which is the safe way.
        """
        uid = received.sop_instance_uid
        if self._indexer.is_pending(uid):
            return True
        known = state.known.get(received.study_instance_uid)
        if known is None:
            try:
                known = self._study_uids(received.study_instance_uid)
            except Exception:
                logger.warning("looking up the instances of study %s failed",
                               received.study_instance_uid, exc_info=True)  # fmt: skip
                return True
            state.known[received.study_instance_uid] = known
        if uid in known:
            return True
        known.add(uid)
        return False

    def _study_uids(self, study_instance_uid: str) -> set[str]:
        query = (
            select(Instance.sop_instance_uid)
            .join(Series, Series.id == Instance.series_id)
            .join(Study, Study.id == Series.study_id)
            .where(
                Study.archive_id == self._archive_id,
                Study.study_instance_uid == study_instance_uid,
            )
        )
        with self._lookups.connect() as connection:
            return set(connection.execute(query).scalars())

    def _store_after_pending(self, received: _Received, peer: Peer) -> int | Dataset:
        """`_store_now` once an acknowledged instance under the same UID is indexed: that
        one was answered already, so it is the one kept, and this one is judged against it.
        """
        if not self._indexer.wait_for(received.sop_instance_uid, PENDING_WAIT_S):
            return status(OUT_OF_RESOURCES, "storage busy: an instance under its UID is "
                          "still being indexed; send it again later")  # fmt: skip
        return self._store_now(received, peer)

    def _store_now(self, received: _Received, peer: Peer) -> int | Dataset:
        """Split, index and answer with the index's verdict (a UID met before)."""
        try:
            split = split_part(received.data)
        except DicomError as err:
            return status(CANNOT_UNDERSTAND, f"{err.code}: {err.message}")
        except Exception as err:
            logger.warning("C-STORE of %s could not be split", received.sop_instance_uid,
                           exc_info=True)  # fmt: skip
            return status(CANNOT_UNDERSTAND, f"processing failed: {type(err).__name__}: {err}")
        try:
            outcome = self._committer.store(split, peer)
        except Exception as err:  # the committer logged it; the peer may send it again
            return status(OUT_OF_RESOURCES, f"storage failed: {type(err).__name__}")
        if isinstance(outcome, UidConflict):
            logger.info("C-STORE refused: %s", outcome.message)
            # The full reason names UIDs and overflows the 64-character Error Comment.
            return status(
                DATASET_DOES_NOT_MATCH, "UID conflict: other content is stored under its UIDs"
            )
        if isinstance(outcome, VoxelhubError):
            logger.error("C-STORE of %s failed: %s", received.sop_instance_uid, outcome.message)
            return status(OUT_OF_RESOURCES, f"storage failed: {outcome.message}")
        return SUCCESS
