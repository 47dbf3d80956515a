"""Indexing many instances with one INSERT: each instance gets its own outcome."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from tests.store.conftest import to_bytes
from voxelhub.archives import service as archives
from voxelhub.auth.service import Principal
from voxelhub.core.db import session_scope
from voxelhub.core.errors import VoxelhubError
from voxelhub.core.runtime import Runtime
from voxelhub.dicom.split import split_instance
from voxelhub.dicom.synthetic import ct_phantom
from voxelhub.store.imagesets import instances_of, read_instance
from voxelhub.store.ingest import Ingest, Stored
from voxelhub.store.models import Instance, Series, Study


def _archive(runtime: Runtime, make_user, name: str = "Batch") -> uuid.UUID:  # type: ignore[no-untyped-def]
    owner = make_user()
    principal = Principal(user_id=owner.id, username=owner.username, is_admin=False, via="token")
    with session_scope(runtime.database_url) as db:
        return archives.create_archive(db, principal, name).id


def test_a_batch_keeps_the_good_and_reports_each_refusal(runtime: Runtime, make_user) -> None:  # type: ignore[no-untyped-def]
    archive_id = _archive(runtime, make_user)
    series = [split_instance(to_bytes(ds)) for ds in ct_phantom(slices=4, size=16)]
    with session_scope(runtime.database_url) as db:
        ingest = Ingest(db, runtime.store, archive_id)
        first = ingest.add_many(series[:2])
        ingest.finish()
    assert all(isinstance(o, Stored) and not o.already_stored for o in first)

    changed = ct_phantom(slices=4, size=16)[1]
    changed.SOPInstanceUID = series[1].keys.sop_instance_uid  # reused UID, other content
    changed.StudyInstanceUID = series[1].keys.study_instance_uid
    changed.SeriesInstanceUID = series[1].keys.series_instance_uid
    batch = [series[0], split_instance(to_bytes(changed)), series[2], series[3], series[3]]
    with session_scope(runtime.database_url) as db:
        ingest = Ingest(db, runtime.store, archive_id)
        outcomes = ingest.add_many(batch)
        ingest.finish()

    same, conflict, new, newer, again = outcomes
    assert isinstance(same, Stored) and same.already_stored
    assert isinstance(conflict, VoxelhubError) and conflict.code == "uid_conflict"
    assert isinstance(new, Stored) and not new.already_stored
    assert isinstance(newer, Stored) and not newer.already_stored
    assert (
        isinstance(again, Stored)
        and again.already_stored
        and again.instance_id == newer.instance_id
    )
    with session_scope(runtime.database_url) as db:
        assert db.scalar(select(func.count()).select_from(Instance)) == 4
        row = db.scalars(select(Series)).one()
        assert row.number_of_instances == 4
        assert db.scalars(select(Study)).one().number_of_instances == 4
        stored = instances_of(db, row.id)
        for instance, split in zip(stored, series, strict=True):
            header, frames = read_instance(runtime.store, instance)
            assert (header, tuple(frames)) == (split.header, split.frames)


def _one_slice(modality: str, study: str | None = None, series: str | None = None):  # type: ignore[no-untyped-def]
    ds = ct_phantom(slices=1, size=16)[0]
    ds.Modality = modality
    if study is not None:
        ds.StudyInstanceUID = study
    if series is not None:
        ds.SeriesInstanceUID = series
    return ds


def test_a_batch_of_many_studies_and_series_counts_as_one_by_one(  # type: ignore[no-untyped-def]
    runtime: Runtime, make_user
) -> None:
    """Studies and series new to a batch are upserted together and their counters written
    together: the rows and counts equal those of instances stored one at a time."""
    archive_id = _archive(runtime, make_user)
    lone = [_one_slice("CR") for _ in range(5)]  # five one-instance studies
    two = _one_slice("CT")  # a study that gets a second series, of another modality
    two_mr = _one_slice("MR", study=two.StudyInstanceUID)
    other = _one_slice("CT")  # a series that a later instance claims for another study
    thief = _one_slice("CT", series=other.SeriesInstanceUID)
    with session_scope(runtime.database_url) as db:
        ingest = Ingest(db, runtime.store, archive_id)
        outcomes = ingest.add_many([split_instance(to_bytes(d)) for d in [*lone, two, other]])
        ingest.finish()
    assert all(isinstance(o, Stored) and not o.already_stored for o in outcomes)
    with session_scope(runtime.database_url) as db:
        ingest = Ingest(db, runtime.store, archive_id)
        later = ingest.add_many([split_instance(to_bytes(d)) for d in [two_mr, thief, lone[0]]])
        ingest.finish()
    added, refused, again = later
    assert isinstance(added, Stored) and not added.already_stored
    assert isinstance(refused, VoxelhubError) and refused.code == "uid_conflict"
    assert "another study" in refused.message
    assert isinstance(again, Stored) and again.already_stored

    with session_scope(runtime.database_url) as db:
        studies = {s.study_instance_uid: s for s in db.scalars(select(Study))}
        assert len(studies) == 7  # the refused instance's new study was not kept, empty
        for ds in lone:
            study = studies[ds.StudyInstanceUID]
            assert (study.number_of_instances, study.number_of_series) == (1, 1)
            assert study.modalities == ["CR"]
            assert (study.patient_id, study.patient_name, study.study_date) == (
                ds.PatientID,
                str(ds.PatientName),
                ds.StudyDate,
            )
        both = studies[two.StudyInstanceUID]
        assert (both.number_of_instances, both.number_of_series) == (2, 2)
        assert both.modalities == ["CT", "MR"]
        assert studies[other.StudyInstanceUID].number_of_instances == 1
        assert thief.StudyInstanceUID not in studies
        series = {s.series_instance_uid: s for s in db.scalars(select(Series))}
        assert len(series) == 8
        assert all(s.number_of_instances == 1 and s.version == 1 for s in series.values())
        first = series[lone[0].SeriesInstanceUID]
        assert (first.modality, first.series_number, first.metadata_version) == (
            "CR",
            lone[0].SeriesNumber,
            -1,
        )
        assert series[other.SeriesInstanceUID].study_id == studies[other.StudyInstanceUID].id
        assert db.scalar(select(func.count()).select_from(Instance)) == 8


def test_refused_instances_leave_no_empty_study_or_series(  # type: ignore[no-untyped-def]
    runtime: Runtime, make_user
) -> None:
    """A study or series that only refused instances name is not left behind, empty, for
    QIDO to list; one that already held instances is kept as it was."""
    archive_id = _archive(runtime, make_user)
    kept = _one_slice("CT")
    with session_scope(runtime.database_url) as db:
        ingest = Ingest(db, runtime.store, archive_id)
        assert isinstance(ingest.add_many([split_instance(to_bytes(kept))])[0], Stored)
        ingest.finish()
    # The same SOPInstanceUID with other content, once in a new study (in a batch with a
    # good instance, and alone: the batch and the one-by-one upserts) and once in a new
    # series of the kept study.
    reused = _one_slice("MR")
    reused.SOPInstanceUID = kept.SOPInstanceUID
    good = _one_slice("CR")
    alone = _one_slice("MR")
    alone.SOPInstanceUID = kept.SOPInstanceUID
    in_kept_study = _one_slice("MR", study=kept.StudyInstanceUID)
    in_kept_study.SOPInstanceUID = kept.SOPInstanceUID
    for batch in ([reused, good], [alone], [in_kept_study]):
        with session_scope(runtime.database_url) as db:
            ingest = Ingest(db, runtime.store, archive_id)
            outcomes = ingest.add_many([split_instance(to_bytes(d)) for d in batch])
            ingest.finish()
        assert isinstance(outcomes[0], VoxelhubError) and outcomes[0].code == "uid_conflict"
        assert all(isinstance(o, Stored) for o in outcomes[1:])

    with session_scope(runtime.database_url) as db:
        studies = {s.study_instance_uid: s for s in db.scalars(select(Study))}
        assert set(studies) == {kept.StudyInstanceUID, good.StudyInstanceUID}
        first = studies[kept.StudyInstanceUID]
        assert (first.number_of_series, first.number_of_instances) == (1, 1)
        series = {s.series_instance_uid for s in db.scalars(select(Series))}
        assert series == {kept.SeriesInstanceUID, good.SeriesInstanceUID}
        assert db.scalar(select(func.count()).select_from(Instance)) == 2


def _first_copies(runtime: Runtime, study_uid: str) -> dict[uuid.UUID, bool]:
    with session_scope(runtime.database_url) as db:
        rows = db.execute(
            select(Study.archive_id, Study.first_copy).where(Study.study_instance_uid == study_uid)
        ).all()
    return {archive_id: flag for archive_id, flag in rows}


def test_a_batch_of_series_marks_a_later_copy_of_a_study(  # type: ignore[no-untyped-def]
    runtime: Runtime, make_user
) -> None:
    """Studies upserted together (a batch of two series or more) know whether another
    archive holds the study already, as one upserted alone does."""
    first, second = _archive(runtime, make_user), _archive(runtime, make_user, "Copy")
    ct = _one_slice("CT")
    mr = _one_slice("MR", study=ct.StudyInstanceUID)
    for archive_id in (first, second):
        with session_scope(runtime.database_url) as db:
            ingest = Ingest(db, runtime.store, archive_id)
            outcomes = ingest.add_many([split_instance(to_bytes(d)) for d in (ct, mr)])
            ingest.finish()
        assert all(isinstance(o, Stored) for o in outcomes)
    assert _first_copies(runtime, ct.StudyInstanceUID) == {first: True, second: False}


def test_two_archives_receiving_a_new_study_at_once_keep_one_first_copy(  # type: ignore[no-untyped-def]
    runtime: Runtime, make_user
) -> None:
    """Neither transaction sees the other's new row before it commits: the second to mark
    its row waits for the first to end, then sees it."""
    first, second = _archive(runtime, make_user), _archive(runtime, make_user, "Copy")
    ds = _one_slice("CT")
    split = split_instance(to_bytes(ds))
    opened = threading.Event()

    def store_second() -> None:
        opened.wait(30)
        with session_scope(runtime.database_url) as db:
            ingest = Ingest(db, runtime.store, second)
            assert isinstance(ingest.add(split), Stored)
            ingest.finish()

    with ThreadPoolExecutor(1) as pool:
        with session_scope(runtime.database_url) as db:
            ingest = Ingest(db, runtime.store, first)
            assert isinstance(ingest.add(split), Stored)
            ingest.finish()
            waiting = pool.submit(store_second)
            opened.set()
            time.sleep(1.0)  # the other transaction inserts its row meanwhile, and waits
            assert not waiting.done()
        waiting.result(timeout=60)  # the first committed when its scope ended
    assert _first_copies(runtime, ds.StudyInstanceUID) == {first: True, second: False}
