"""/dicom-web over several archives that hold the same study: every UID once, no duplicates."""

from __future__ import annotations

import json
import uuid

import httpx
import psycopg
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from sqlalchemy import select

from tests.conftest import Account
from tests.store.conftest import ArchiveClient
from voxelhub.core import migrate
from voxelhub.core.db import session_scope
from voxelhub.store.models import Study


def _uids(datasets) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        (d["00080018"]["Value"][0] if isinstance(d, dict) else d.SOPInstanceUID) for d in datasets
    ]


def test_a_study_in_two_archives_reads_as_one(  # type: ignore[no-untyped-def]
    make_archive, make_user, live_server: str, database_url: str
) -> None:
    owner: Account = make_user()
    first: ArchiveClient = make_archive("First", owner)
    second: ArchiveClient = make_archive("Second", owner)
    ct = dcmread(get_testdata_file("CT_small.dcm", download=False))
    extra = dcmread(get_testdata_file("CT_small.dcm", download=False))
    extra.SOPInstanceUID = generate_uid()
    extra.InstanceNumber = 2
    first.scoped.store_instances([ct])
    second.scoped.store_instances([ct, extra])  # the same study, and one instance more
    study, series = ct.StudyInstanceUID, ct.SeriesInstanceUID
    both = sorted([ct.SOPInstanceUID, extra.SOPInstanceUID])

    with session_scope(database_url) as db:  # the second archive's row is a later copy
        flags = dict(db.execute(select(Study.archive_id, Study.first_copy).where(
            Study.study_instance_uid == study)).all())  # fmt: skip
    assert flags == {first.archive_id: True, second.archive_id: False}

    root = first.everything
    (found,) = root.search_for_studies()
    assert found["0020000D"]["Value"] == [study]
    # Counted over both copies, as retrieval joins them, not from the oldest copy alone.
    assert (found["00201206"]["Value"], found["00201208"]["Value"]) == ([1], [2])
    assert found["00080061"]["Value"] == ["CT"]
    (found_series,) = root.search_for_series(study)
    assert found_series["00201209"]["Value"] == [2]
    assert first.scoped.search_for_studies()[0]["00201208"]["Value"] == [1]
    assert first.scoped.search_for_series(study)[0]["00201209"]["Value"] == [1]
    assert sorted(_uids(root.search_for_instances(study))) == both
    assert sorted(_uids(root.retrieve_study_metadata(study))) == both
    series_metadata = root.retrieve_series_metadata(study, series)
    assert _uids(series_metadata) == [ct.SOPInstanceUID, extra.SOPInstanceUID]  # by number
    assert sorted(_uids(root.retrieve_study(study))) == both
    assert sorted(_uids(root.retrieve_series(study, series))) == both
    # The shared instance is read from its oldest copy, the first archive's, everywhere.
    (shared,) = [d for d in series_metadata if d["00080018"]["Value"][0] == ct.SOPInstanceUID]
    first_copy = first.scoped.retrieve_instance_metadata(study, series, ct.SOPInstanceUID)
    # The same attributes; read in the archive, its bulk data is the archive's own copy's.
    scoped_prefix = f"/dicom-web/archives/{first.archive_id}/studies/"
    pixel_uri = first_copy["7FE00010"]["BulkDataURI"]
    assert pixel_uri.startswith(scoped_prefix)
    assert shared["7FE00010"]["BulkDataURI"] == pixel_uri.replace(
        scoped_prefix, "/dicom-web/studies/"
    )
    assert (
        json.loads(json.dumps(first_copy).replace(scoped_prefix, "/dicom-web/studies/")) == shared
    )

    # An archive's own base URL still shows what it holds, and only that.
    assert _uids(first.scoped.search_for_instances(study)) == [ct.SOPInstanceUID]
    assert sorted(_uids(second.scoped.search_for_instances(study))) == both

    # Deleting through /dicom-web deletes every copy the caller can edit.
    auth = {"Authorization": f"Bearer {owner.token}"}
    url = f"{live_server}/dicom-web/studies/{study}/series/{series}/instances/{ct.SOPInstanceUID}"
    assert httpx.delete(url, headers=auth, timeout=60).status_code == 204
    assert _uids(root.search_for_instances(study)) == [extra.SOPInstanceUID]
    assert first.scoped.search_for_studies() == []
    with session_scope(database_url) as db:  # the copy left is now the first one
        flags = dict(db.execute(select(Study.archive_id, Study.first_copy).where(
            Study.study_instance_uid == study)).all())  # fmt: skip
    assert flags == {second.archive_id: True}
    gone = httpx.delete(
        f"{live_server}/dicom-web/studies/{study}/series/{series}", headers=auth, timeout=60
    )
    assert gone.status_code == 204
    assert root.search_for_studies() == []


def test_copies_a_reader_cannot_see_are_left_out(  # type: ignore[no-untyped-def]
    make_archive, make_user
) -> None:
    ct = dcmread(get_testdata_file("CT_small.dcm", download=False))
    hidden: ArchiveClient = make_archive("Hidden", make_user())  # older, another owner's
    hidden.scoped.store_instances([ct])
    mine: ArchiveClient = make_archive("Mine", make_user())
    mine.scoped.store_instances([ct])
    # The oldest copy is not visible to this reader: theirs is found, once.
    root = mine.everything
    assert len(root.search_for_studies()) == 1
    assert _uids(root.search_for_instances()) == [ct.SOPInstanceUID]
    assert _uids(root.retrieve_series_metadata(ct.StudyInstanceUID, ct.SeriesInstanceUID)) == [
        ct.SOPInstanceUID
    ]


def test_upgrade_marks_the_later_copies_of_studies(pg_server) -> None:  # type: ignore[no-untyped-def]
    name = f"u_{uuid.uuid4().hex[:12]}"
    dsn = f"host={pg_server.socket_dir} port={pg_server.port} user=postgres"
    with psycopg.connect(f"{dsn} dbname=postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = pg_server.url.replace("/voxelhub?", f"/{name}?")
    migrate.upgrade(url, "0006")
    with psycopg.connect(f"{dsn} dbname={name}") as conn:
        for archive, uid, age in (("A", "1.2.3", 2), ("B", "1.2.3", 1), ("B", "1.2.4", 1)):
            conn.execute(
                "INSERT INTO archives (id, name, description, created_at) VALUES "
                "(gen_random_uuid(), %s, '', now()) ON CONFLICT DO NOTHING",
                [archive],
            )
            conn.execute(
                "INSERT INTO dicom_studies (id, created_at, updated_at, archive_id, "
                "study_instance_uid, patient_id, patient_name, patient_birth_date, patient_sex, "
                "study_date, study_time, accession_number, study_id, study_description, "
                "referring_physician_name, modalities, number_of_series, number_of_instances) "
                "SELECT gen_random_uuid(), now() - make_interval(days => %s), now(), id, %s, "
                "'', '', '', '', '', '', '', '', '', '', '{}', 0, 0 FROM archives "
                "WHERE name = %s", [age, uid, archive]
            )  # fmt: skip
    migrate.upgrade(url)
    with psycopg.connect(f"{dsn} dbname={name}") as conn:
        rows = conn.execute(
            "SELECT a.name, s.study_instance_uid, s.first_copy FROM dicom_studies s "
            "JOIN archives a ON a.id = s.archive_id ORDER BY 1, 2"
        ).fetchall()
    assert rows == [("A", "1.2.3", True), ("B", "1.2.3", False), ("B", "1.2.4", True)]
