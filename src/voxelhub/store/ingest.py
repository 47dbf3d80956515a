"""Storing DICOM instances into image sets. Flushes, never commits.

Objects are written before the index rows are flushed; if the transaction then fails the
object has no row and the orphan sweep removes it, so no reader ever sees half an instance.
Ingest is idempotent on SOPInstanceUID within an archive: the same object twice is stored
once, a different object under a known UID is refused.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, any_, case, delete, func, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from voxelhub.core.db import insert_from_json, json_rows, utcnow
from voxelhub.core.errors import VoxelhubError
from voxelhub.core.objects import ObjectStore
from voxelhub.dicom.model import SplitInstance
from voxelhub.store.dicomweb.splitting import content_hash
from voxelhub.store.errors import UidConflict
from voxelhub.store.models import Instance, Series, Study

logger = logging.getLogger(__name__)

IMAGESET_PREFIX = "imagesets"
_INSTANCES = cast(Table, Instance.__table__)
# Object writes of one batch overlap where the store gains by it (S3 calls wait on the
# network and release the GIL); local files are written one after another in the calling
# thread (`_now`).
_writers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ingest-put")


def _now(call: Callable[..., None], *args: Any) -> Future[None]:
    """`call(*args)` run here, as a finished future (`_writers.submit`'s stand-in)."""
    done: Future[None] = Future()
    try:
        call(*args)
        done.set_result(None)
    except Exception as err:  # returned as the pool would, to the caller's result()
        done.set_exception(err)
    return done


# Objects up to this size are written from one joined copy.
_JOIN_BYTES = 4 * 1024 * 1024


@functools.cache
def _insert_instances(columns: tuple[str, ...]) -> str:
    """`insert_from_json` for instance rows, skipping a UID already stored in the archive."""
    return (
        f"{insert_from_json(_INSTANCES, columns)} "
        "ON CONFLICT ON CONSTRAINT uq_dicom_instances_uid DO NOTHING "
        "RETURNING sop_instance_uid, id"
    )


@dataclass(frozen=True)
class Stored:
    """The outcome of storing one instance."""

    instance_id: uuid.UUID
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    already_stored: bool


def _study_values(archive_id: uuid.UUID, split: SplitInstance) -> dict[str, Any]:
    k = split.keys
    return dict(
        archive_id=archive_id,
        study_instance_uid=k.study_instance_uid,
        patient_id=k.patient_id,
        issuer_of_patient_id=k.issuer_of_patient_id,
        patient_name=k.patient_name,
        patient_birth_date=k.patient_birth_date,
        patient_sex=k.patient_sex,
        study_date=k.study_date,
        study_time=k.study_time,
        accession_number=k.accession_number,
        study_id=k.study_id,
        study_description=k.study_description,
        referring_physician_name=k.referring_physician_name,
    )


def _series_values(
    archive_id: uuid.UUID, study_id: uuid.UUID, split: SplitInstance
) -> dict[str, Any]:
    k = split.keys
    return dict(
        id=uuid.uuid4(),
        created_at=utcnow(),
        archive_id=archive_id,
        study_id=study_id,
        series_instance_uid=k.series_instance_uid,
        modality=k.modality,
        series_number=k.series_number,
        series_description=k.series_description,
    )


def _upsert_study(
    db: Session, archive_id: uuid.UUID, split: SplitInstance
) -> tuple[uuid.UUID, bool]:
    """The study's id, and whether this call inserted its row (it had the id made here)."""
    values = _study_values(archive_id, split)
    made = uuid.uuid4()
    statement = (
        insert(Study)
        .values(id=made, created_at=utcnow(), **values)
        .on_conflict_do_update(constraint="uq_dicom_studies_uid", set_={"updated_at": utcnow()})
        .returning(Study.id)
    )
    study_id: uuid.UUID = db.execute(statement).scalar_one()
    if study_id == made:
        _mark_later_copies(db, {values["study_instance_uid"]: made})
    return study_id, study_id == made


# The class of the advisory locks `_mark_later_copies` takes (the other key is the hash of a
# StudyInstanceUID): an arbitrary constant that no other lock of the project uses.
_FIRST_COPY_LOCK = 0x5D1C0
_LOCK_STUDY_UIDS = text(
    "SELECT count(pg_advisory_xact_lock(CAST(:class AS integer), hashtext(u))) FROM "
    "(SELECT DISTINCT u FROM unnest(CAST(:uids AS text[])) AS u ORDER BY u) AS t"
)
_MARK_LATER_COPIES = text(
    "UPDATE dicom_studies AS s SET first_copy = false "
    "WHERE s.id = ANY(CAST(:ids AS uuid[])) AND EXISTS (SELECT 1 FROM dicom_studies AS o "
    "WHERE o.study_instance_uid = s.study_instance_uid AND o.archive_id <> s.archive_id)"
)


def _mark_later_copies(db: Session, inserted: dict[str, uuid.UUID]) -> None:
    """Mark the study rows just inserted (UID → id) that are not the first copy of their
    UID: another archive holds the study already.

    Two archives may insert the same new study at the same moment, each unable to see the
    other's row until it commits. So the UIDs are locked (until this transaction ends)
    before the rows are looked at: the second transaction to lock one waits for the first
    to commit, then sees its row. Only new rows take the lock, so adding to a study an
    archive holds never waits; the UIDs of one batch are locked in one order.
    """
    if not inserted:
        return
    db.execute(_LOCK_STUDY_UIDS, {"class": _FIRST_COPY_LOCK, "uids": sorted(inserted)})
    db.execute(_MARK_LATER_COPIES, {"ids": list(inserted.values())})


def _upsert_series(
    db: Session, archive_id: uuid.UUID, study_id: uuid.UUID, split: SplitInstance
) -> tuple[uuid.UUID, bool]:
    """The series' id, and whether this call inserted its row; a series held by another
    study is refused."""
    k = split.keys
    values = _series_values(archive_id, study_id, split)
    statement = (
        insert(Series)
        .values(**values)
        .on_conflict_do_update(constraint="uq_dicom_series_uid", set_={"updated_at": utcnow()})
        .returning(Series.id, Series.study_id)
    )
    series_id: uuid.UUID
    series_id, owner = db.execute(statement).one()
    if owner != study_id:
        raise UidConflict(
            f"series {k.series_instance_uid} is stored under another study; an instance of "
            f"it names study {k.study_instance_uid}. Check the StudyInstanceUID"
        )
    return series_id, series_id == values["id"]


_STUDIES = cast(Table, Study.__table__)
_SERIES = cast(Table, Series.__table__)
_STUDY_COLUMNS = (
    "id", "created_at", "updated_at", "archive_id", "study_instance_uid", "patient_id",
    "issuer_of_patient_id", "patient_name", "patient_birth_date", "patient_sex", "study_date",
    "study_time", "accession_number", "study_id", "study_description",
    "referring_physician_name", "modalities", "number_of_series", "number_of_instances",
)  # fmt: skip
_SERIES_COLUMNS = (
    "id", "created_at", "updated_at", "archive_id", "study_id", "series_instance_uid",
    "modality", "series_number", "series_description", "number_of_instances", "size_bytes",
    "version", "metadata_version",
)  # fmt: skip


@functools.cache
def _upsert_studies_sql() -> str:
    return (
        f"{insert_from_json(_STUDIES, _STUDY_COLUMNS)} "
        "ON CONFLICT ON CONSTRAINT uq_dicom_studies_uid DO UPDATE "
        "SET updated_at = excluded.updated_at RETURNING study_instance_uid, id"
    )


@functools.cache
def _upsert_series_sql() -> str:
    return (
        f"{insert_from_json(_SERIES, _SERIES_COLUMNS)} "
        "ON CONFLICT ON CONSTRAINT uq_dicom_series_uid DO UPDATE "
        "SET updated_at = excluded.updated_at RETURNING series_instance_uid, id, study_id"
    )


def _upsert_studies(
    db: Session, archive_id: uuid.UUID, splits: Sequence[SplitInstance]
) -> tuple[dict[str, uuid.UUID], set[uuid.UUID]]:
    """`_upsert_study` for one split of each of many studies, in one short statement (see
    `insert_from_json`): UID → id, and the ids of the rows it inserted."""
    now = utcnow()
    rows = []
    for split in splits:
        values = {"id": uuid.uuid4(), "created_at": now, "updated_at": now,
                  **_study_values(archive_id, split), "modalities": [],
                  "number_of_series": 0, "number_of_instances": 0}  # fmt: skip
        rows.append(tuple(values[name] for name in _STUDY_COLUMNS))
    made = {row[0] for row in rows}
    returned = db.connection().exec_driver_sql(
        _upsert_studies_sql(), {"rows": json_rows(_STUDY_COLUMNS, rows)}
    )
    found = {uid: study_id for uid, study_id in returned}
    _mark_later_copies(db, {uid: study_id for uid, study_id in found.items() if study_id in made})
    return found, made & set(found.values())


def _upsert_many_series(
    db: Session, archive_id: uuid.UUID, splits: Sequence[tuple[uuid.UUID, SplitInstance]]
) -> tuple[dict[str, tuple[uuid.UUID, uuid.UUID]], set[uuid.UUID]]:
    """`_upsert_series` for one split of each of many series (with the id of the study it
    names), in one short statement: UID → (series id, id of the study that holds it), and
    the ids of the rows it inserted."""
    now = utcnow()
    rows = []
    for study_id, split in splits:
        values = {**_series_values(archive_id, study_id, split), "created_at": now,
                  "updated_at": now, "number_of_instances": 0, "size_bytes": 0, "version": 0,
                  "metadata_version": -1}  # fmt: skip
        rows.append(tuple(values[name] for name in _SERIES_COLUMNS))
    made = {row[0] for row in rows}
    returned = db.connection().exec_driver_sql(
        _upsert_series_sql(), {"rows": json_rows(_SERIES_COLUMNS, rows)}
    )
    found = {uid: (series_id, owner) for uid, series_id, owner in returned}
    return found, made & {series_id for series_id, _ in found.values()}


def _existing(db: Session, archive_id: uuid.UUID, sop_uid: str) -> Instance | None:
    return db.scalar(
        select(Instance).where(
            Instance.archive_id == archive_id, Instance.sop_instance_uid == sop_uid
        )
    )


def _same_or_conflict(existing: Instance, split: SplitInstance, digest: str) -> Stored:
    if existing.content_sha256 != digest:
        raise UidConflict(
            f"SOPInstanceUID {split.keys.sop_instance_uid} is already stored with different "
            "content; a new object needs a new SOPInstanceUID"
        )
    return Stored(
        existing.id,
        split.keys.study_instance_uid,
        split.keys.series_instance_uid,
        split.keys.sop_instance_uid,
        split.keys.sop_class_uid,
        already_stored=True,
    )


def _new(split: SplitInstance, instance_id: uuid.UUID) -> Stored:
    k = split.keys
    return Stored(instance_id, k.study_instance_uid, k.series_instance_uid,
                  k.sop_instance_uid, k.sop_class_uid, already_stored=False)  # fmt: skip


def _layout(split: SplitInstance) -> tuple[list[int], int]:
    """Frame offsets in the instance object (header first), and its total size."""
    offsets, position = [], len(split.header)
    for frame in split.frames:
        offsets.append(position)
        position += len(frame)
    offsets.append(position)
    return offsets, position


class _Concat:
    """A read()-able view of several byte strings, so a put streams without joining them."""

    def __init__(self, parts: list[bytes]) -> None:
        self._parts = [memoryview(p) for p in parts if p]
        self._index = 0
        self._offset = 0

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while self._index < len(self._parts) and (n < 0 or len(out) < n):
            part = self._parts[self._index]
            left = len(part) - self._offset
            take = left if n < 0 else min(n - len(out), left)
            out += part[self._offset : self._offset + take]
            self._offset += take
            if self._offset >= len(part):
                self._index += 1
                self._offset = 0
        return bytes(out)


def _object_body(split: SplitInstance) -> Any:
    """The instance object's bytes: joined when small (one copy is cheaper than streaming
    in Python), streamed from the parts when large."""
    parts = [split.header, *split.frames]
    if sum(len(part) for part in parts) <= _JOIN_BYTES:
        return b"".join(parts)
    return _Concat(parts)


@dataclass
class _Tally:
    instances: int = 0
    size: int = 0
    modalities: set[str] = field(default_factory=set)


class Ingest:
    """Stores many instances into one archive in one transaction, with few round trips.

    Study and series rows are upserted once per UID; counters are added up and written by
    `finish()`, which must run before the transaction commits.
    """

    def __init__(self, db: Session, store: ObjectStore, archive_id: uuid.UUID) -> None:
        self.db, self.store, self.archive_id = db, store, archive_id
        self._studies: dict[str, uuid.UUID] = {}
        self._series: dict[str, tuple[uuid.UUID, uuid.UUID]] = {}
        self._series_tally: dict[uuid.UUID, _Tally] = {}
        self._study_tally: dict[uuid.UUID, _Tally] = {}
        # Rows this transaction inserted: those no instance went into (every one refused)
        # are deleted by finish(), so a refusal leaves no empty study or series behind.
        self._created_studies: set[uuid.UUID] = set()
        self._created_series: set[uuid.UUID] = set()
        self._unsynced = False

    def _upsert_batch(self, splits: Sequence[SplitInstance]) -> None:
        """Upsert the studies and series of a batch not seen yet with two statements, not
        two per series: a batch of one-instance studies (radiographs, a migrated archive)
        otherwise costs two round trips an instance. A series found under another study is
        left out: `_series_for` then refuses its instances as before. Should either
        statement fail, nothing is cached and `_series_for` upserts one by one."""
        studies: dict[str, SplitInstance] = {}
        series: dict[str, SplitInstance] = {}
        for split in splits:
            k = split.keys
            if k.series_instance_uid in self._series or k.series_instance_uid in series:
                continue
            series[k.series_instance_uid] = split
            if k.study_instance_uid not in self._studies:
                studies.setdefault(k.study_instance_uid, split)
        if len(series) < 2:
            return
        try:
            with self.db.begin_nested():
                found, new_studies = _upsert_studies(
                    self.db, self.archive_id, list(studies.values())
                )
                known = {**self._studies, **found}
                upserted, new_series = _upsert_many_series(
                    self.db,
                    self.archive_id,
                    [(known[s.keys.study_instance_uid], s) for s in series.values()],
                )
        except DBAPIError:
            logger.warning("a batch upsert of studies and series failed; one by one instead",
                           exc_info=True)  # fmt: skip
            return
        self._studies.update(found)
        self._created_studies |= new_studies
        self._created_series |= new_series
        for uid, (series_id, owner) in upserted.items():
            study_id = known[series[uid].keys.study_instance_uid]
            if owner == study_id:
                self._series[uid] = (study_id, series_id)

    def _series_for(self, split: SplitInstance) -> tuple[uuid.UUID, uuid.UUID]:
        k = split.keys
        known = self._series.get(k.series_instance_uid)
        if known is not None:
            if self._studies.get(k.study_instance_uid) != known[0]:
                raise UidConflict(
                    f"series {k.series_instance_uid} is stored under another study; an "
                    f"instance of it names study {k.study_instance_uid}. Check the "
                    "StudyInstanceUID"
                )
            return known
        study_id = self._studies.get(k.study_instance_uid)
        if study_id is None:
            study_id, inserted = _upsert_study(self.db, self.archive_id, split)
            self._studies[k.study_instance_uid] = study_id
            if inserted:
                self._created_studies.add(study_id)
        series_id, inserted = _upsert_series(self.db, self.archive_id, study_id, split)
        self._series[k.series_instance_uid] = (study_id, series_id)
        if inserted:
            self._created_series.add(series_id)
        return study_id, series_id

    def add(self, split: SplitInstance) -> Stored:
        """Index one instance; its object is written before the transaction can commit."""
        try:
            return self._add(split)
        except BaseException:
            # A savepoint around this call may roll back rows the caches point to.
            self._studies.clear()
            self._series.clear()
            raise

    def _row(self, split: SplitInstance, series_id: uuid.UUID, digest: str) -> dict[str, Any]:
        k = split.keys
        offsets, size = _layout(split)
        key = f"{IMAGESET_PREFIX}/{series_id}/{k.sop_instance_uid}.{uuid.uuid4().hex[:8]}"
        return dict(
            id=uuid.uuid4(), created_at=utcnow(), archive_id=self.archive_id,
            series_id=series_id, sop_instance_uid=k.sop_instance_uid,
            sop_class_uid=k.sop_class_uid, instance_number=k.instance_number,
            transfer_syntax_uid=split.original_transfer_syntax,
            frames_transfer_syntax_uid=split.frames_transfer_syntax,
            number_of_frames=len(split.frames), rows=k.rows, columns=k.columns,
            pixel=split.pixel.__dict__ if split.pixel is not None else None,
            object_key=key, header_length=len(split.header), frame_offsets=offsets,
            size_bytes=size, content_sha256=digest, dataset_json=split.dataset_json,
        )  # fmt: skip

    def _put(self, split: SplitInstance, key: str) -> None:
        # The row is not visible before the commit, and the commit comes after this write.
        # Not fsynced one by one: finish() makes the whole batch durable before the commit.
        self.store.put(key, _object_body(split), content_type="application/octet-stream",
                       durable=False)  # fmt: skip
        self._unsynced = True

    def _count(self, split: SplitInstance, study_id: uuid.UUID, series_id: uuid.UUID) -> None:
        size = _layout(split)[1]
        for tally, owner in ((self._series_tally, series_id), (self._study_tally, study_id)):
            entry = tally.setdefault(owner, _Tally())
            entry.instances += 1
            entry.size += size
            if split.keys.modality:
                entry.modalities.add(split.keys.modality)

    def _add(self, split: SplitInstance) -> Stored:
        k = split.keys
        digest = content_hash(split)
        study_id, series_id = self._series_for(split)
        row = self._row(split, series_id, digest)
        statement = (
            insert(Instance)
            .values(**row)
            .on_conflict_do_nothing(constraint="uq_dicom_instances_uid")
            .returning(Instance.id)
        )
        instance_id = self.db.execute(statement).scalar_one_or_none()
        if instance_id is None:  # stored before: the same object, or a reused UID
            existing = _existing(self.db, self.archive_id, k.sop_instance_uid)
            assert existing is not None
            return _same_or_conflict(existing, split, digest)
        self._put(split, row["object_key"])
        self._count(split, study_id, series_id)
        return _new(split, instance_id)

    def add_many(
        self, splits: Sequence[SplitInstance], *, digests: Sequence[str] | None = None
    ) -> list[Stored | VoxelhubError]:
        """Index many instances with one INSERT; each gets its outcome, in order.

        An instance refused (a UID conflict, an object that could not be written) is
        reported in its place and leaves no row; the others are kept. Should the batch
        statement fail as a whole, every instance is tried on its own. `digests` are the
        splits' `content_hash`es where the caller computed them already.
        """
        outcomes: list[Stored | VoxelhubError | None] = [None] * len(splits)
        batch: dict[str, tuple[int, dict[str, Any], uuid.UUID, uuid.UUID]] = {}
        alone: list[int] = []
        self._upsert_batch(splits)
        for index, split in enumerate(splits):
            uid = split.keys.sop_instance_uid
            if uid in batch:  # the same UID twice in one batch: compared after the first
                alone.append(index)
                continue
            try:
                study_id, series_id = self._series_for(split)
            except UidConflict as err:
                outcomes[index] = err
                continue
            digest = digests[index] if digests is not None else content_hash(split)
            batch[uid] = (index, self._row(split, series_id, digest), study_id, series_id)
        if batch:
            try:
                self._insert_batch(splits, batch, outcomes)
            except DBAPIError:
                logger.warning("a batch insert failed; storing its instances one by one",
                               exc_info=True)  # fmt: skip
                self._studies.clear()
                self._series.clear()
                alone.extend(index for index, *_ in batch.values())
        for index in sorted(alone):
            try:
                with self.db.begin_nested():
                    outcomes[index] = self.add(splits[index])
            except VoxelhubError as err:
                outcomes[index] = err
        return [
            outcome if outcome is not None else VoxelhubError("the instance was not indexed")
            for outcome in outcomes
        ]

    def _insert_batch(
        self,
        splits: Sequence[SplitInstance],
        batch: dict[str, tuple[int, dict[str, Any], uuid.UUID, uuid.UUID]],
        outcomes: list[Stored | VoxelhubError | None],
    ) -> None:
        rows = [row for _, row, _, _ in batch.values()]
        with self.db.begin_nested():
            # All rows as one JSON parameter of one short statement, prepared once: a
            # multi-row VALUES statement would be new text for the driver to parse and
            # the server to plan for every batch. The table, not the entity: no ORM
            # bookkeeping per row.
            returned = self.db.connection().exec_driver_sql(
                _insert_instances(tuple(rows[0])),
                {"rows": json_rows(tuple(rows[0]), [tuple(row.values()) for row in rows])},
            )
            inserted: dict[str, uuid.UUID] = {uid: id_ for uid, id_ in returned}
        missing = [uid for uid in batch if uid not in inserted]
        if missing:  # stored before: the same object, or a reused UID
            for existing in self.db.scalars(
                select(Instance).where(
                    Instance.archive_id == self.archive_id, Instance.sop_instance_uid.in_(missing)
                )
            ):
                index, row, _, _ = batch[existing.sop_instance_uid]
                try:
                    outcomes[index] = _same_or_conflict(
                        existing, splits[index], row["content_sha256"]
                    )
                except UidConflict as err:
                    outcomes[index] = err
        submit = _writers.submit if self.store.puts_in_parallel else _now
        writes = {
            uid: submit(self._put, splits[batch[uid][0]], batch[uid][1]["object_key"])
            for uid in inserted
        }
        failed = []
        for uid, write in writes.items():
            index, row, study_id, series_id = batch[uid]
            split = splits[index]
            try:
                write.result()
            except VoxelhubError as err:
                outcomes[index] = err
                failed.append(inserted[uid])
                continue
            self._count(split, study_id, series_id)
            outcomes[index] = _new(split, inserted[uid])
        if failed:
            self.db.execute(delete(Instance).where(Instance.id.in_(failed)))

    def sync(self) -> None:
        """Make the objects written so far durable (`finish` does it for the rest)."""
        if self._unsynced:
            self.store.sync()
            self._unsynced = False

    def finish(self) -> None:
        """Make the objects durable and write the counters; call before the commit."""
        self.sync()
        self._drop_empty()
        now = utcnow()
        self._add_to_series(now)
        self._add_to_studies(now)
        self._series_tally.clear()
        self._study_tally.clear()

    def _drop_empty(self) -> None:
        """Delete the series and studies this transaction inserted that hold nothing: every
        instance naming them was refused. No other transaction can see these rows yet, so
        none can be adding to them."""
        series = self._created_series - self._series_tally.keys()
        studies = self._created_studies - self._study_tally.keys()
        self._created_series.clear()
        self._created_studies.clear()
        if series:
            self.db.execute(
                delete(Series).where(
                    Series.id.in_(series),
                    ~select(Instance.id).where(Instance.series_id == Series.id).exists(),
                )
            )
        if studies:
            self.db.execute(
                delete(Study).where(
                    Study.id.in_(studies),
                    ~select(Series.id).where(Series.study_id == Study.id).exists(),
                )
            )
        if series or studies:
            # A deleted row may still be cached for the next batch of this Ingest.
            self._studies.clear()
            self._series.clear()

    def _add_to_series(self, now: datetime) -> None:
        if len(self._series_tally) > 1:  # one statement for many series
            rows = [(owner, t.instances, t.size) for owner, t in self._series_tally.items()]
            self.db.connection().exec_driver_sql(
                _ADD_TO_SERIES, {"rows": json_rows(("id", "instances", "size"), rows), "now": now}
            )
            return
        for series_id, tally in self._series_tally.items():
            self.db.execute(
                update(Series)
                .where(Series.id == series_id)
                .values(number_of_instances=Series.number_of_instances + tally.instances,
                        size_bytes=Series.size_bytes + tally.size,
                        version=Series.version + 1, updated_at=now)
            )  # fmt: skip

    def _add_to_studies(self, now: datetime) -> None:
        if len(self._study_tally) > 1:  # one statement for many studies
            rows = [
                (owner, t.instances, sorted(t.modalities)) for owner, t in self._study_tally.items()
            ]
            self.db.connection().exec_driver_sql(
                _ADD_TO_STUDIES,
                {"rows": json_rows(("id", "instances", "modalities"), rows), "now": now},
            )
            return
        for study_id, tally in self._study_tally.items():
            series_count = select(func.count()).where(Series.study_id == study_id)
            modalities: Any = Study.modalities
            for modality in sorted(tally.modalities):
                modalities = case(
                    (literal(modality) == any_(modalities), modalities),
                    else_=func.array_append(modalities, modality),
                )
            self.db.execute(
                update(Study)
                .where(Study.id == study_id)
                .values(number_of_instances=Study.number_of_instances + tally.instances,
                        number_of_series=series_count.scalar_subquery(),
                        modalities=modalities, updated_at=now)
            )  # fmt: skip


# `finish`'s counters for many series and studies at once, from one JSON parameter each: the
# same changes as its statements for one (modalities new to a study appended in order).
_ADD_TO_SERIES = """
UPDATE dicom_series AS s
SET number_of_instances = s.number_of_instances + t.instances,
    size_bytes = s.size_bytes + t.size, version = s.version + 1, updated_at = %(now)s
FROM jsonb_to_recordset(%(rows)s::jsonb) AS t(id uuid, instances integer, size bigint)
WHERE s.id = t.id
"""
_ADD_TO_STUDIES = """
UPDATE dicom_studies AS st
SET number_of_instances = st.number_of_instances + t.instances,
    number_of_series = (SELECT count(*) FROM dicom_series se WHERE se.study_id = st.id),
    modalities = coalesce(st.modalities, '{}') || ARRAY(
        SELECT m::varchar(16) FROM jsonb_array_elements_text(t.modalities) AS m
        WHERE NOT m = ANY(coalesce(st.modalities, '{}')) ORDER BY m),
    updated_at = %(now)s
FROM jsonb_to_recordset(%(rows)s::jsonb) AS t(id uuid, instances integer, modalities jsonb)
WHERE st.id = t.id
"""


def store_instance(
    db: Session, store: ObjectStore, archive_id: uuid.UUID, split: SplitInstance
) -> Stored:
    """Index one split instance in `archive_id` (see `Ingest` for many at once)."""
    ingest = Ingest(db, store, archive_id)
    stored = ingest.add(split)
    ingest.finish()
    return stored
