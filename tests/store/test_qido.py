"""QIDO-RS study search: the DICOM JSON PostgreSQL writes, paging, permissions, indexes."""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
from alembic import command
from pydicom import dcmread
from pydicom.data import get_charset_files
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from tests.store.conftest import ArchiveClient
from voxelhub.archives.service import ARCHIVE
from voxelhub.auth import permissions
from voxelhub.auth.models import User
from voxelhub.core import migrate
from voxelhub.core.db import engine_for, session_scope
from voxelhub.core.pg import EmbeddedPostgres
from voxelhub.dicom.synthetic import PatientInfo, ct_phantom
from voxelhub.store import qido, qido_document

DICOM_JSON = {"Accept": "application/dicom+json"}


def _study(patient_id: str, name: str, date: str, *, time: str = "120000", modalities=("CT",)):  # type: ignore[no-untyped-def]
    """One study of one single-slice series per modality."""
    datasets = []
    study_uid = generate_uid()
    for number, modality in enumerate(modalities, start=1):
        ds = ct_phantom(slices=1, size=16, patient=PatientInfo(patient_id, name))[0]
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, generate_uid()
        ds.Modality, ds.SeriesNumber = modality, number
        ds.StudyDate, ds.StudyTime = date, time
        ds.ReferringPhysicianName = ""
        datasets.append(ds)
    return datasets


def _get(archive: ArchiveClient, url: str, **params: str) -> httpx.Response:
    headers = {**DICOM_JSON, "Authorization": f"Bearer {archive.owner.token}"}
    return httpx.get(url, params=params, headers=headers)


# Rows as the schema of an earlier migration holds them.
_OLD_ARCHIVE = (
    "INSERT INTO archives (id, name, description, created_at) "
    "VALUES (gen_random_uuid(), 'Old', '', now())"
)
_INSERT_STUDIES = (
    "INSERT INTO dicom_studies (id, created_at, updated_at, archive_id, "
    "study_instance_uid, patient_id, patient_name, patient_birth_date, patient_sex, "
    "study_date, study_time, accession_number, study_id, study_description, "
    "referring_physician_name, modalities, number_of_series, number_of_instances) "
)


def test_every_study_attribute(make_archive, live_server: str, database_url: str) -> None:  # type: ignore[no-untyped-def]
    archive: ArchiveClient = make_archive()
    datasets = _study("P1", "Müller^Jürgen", "20240131", modalities=("MR", "CT", "MR"))
    archive.scoped.store_instances(datasets)
    uid = datasets[0].StudyInstanceUID
    scoped = f"{live_server}/dicom-web/archives/{archive.archive_id}"

    response = _get(archive, f"{scoped}/studies", PatientID="P1")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom+json")
    [study] = response.json()
    assert list(study) == sorted(study)
    assert study == {
        "00080020": {"vr": "DA", "Value": ["20240131"]},
        "00080030": {"vr": "TM", "Value": ["120000"]},
        "00080050": {"vr": "SH", "Value": ["DEMO0001"]},
        "00080056": {"vr": "CS", "Value": ["ONLINE"]},
        "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
        "00080090": {"vr": "PN"},
        "00081030": {"vr": "LO", "Value": ["Demo phantom"]},
        "00081190": {"vr": "UR", "Value": [f"{scoped}/studies/{uid}"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Müller^Jürgen"}]},
        "00100020": {"vr": "LO", "Value": ["P1"]},
        "00100021": {"vr": "LO"},
        "00100030": {"vr": "DA", "Value": ["19700101"]},
        "00100040": {"vr": "CS", "Value": ["O"]},
        "0020000D": {"vr": "UI", "Value": [uid]},
        "00200010": {"vr": "SH", "Value": ["1"]},
        "00201206": {"vr": "IS", "Value": [3]},
        "00201208": {"vr": "IS", "Value": [3]},
    }
    everywhere = _get(archive, f"{live_server}/dicom-web/studies", PatientID="P1").json()
    assert everywhere[0]["00081190"]["Value"] == [f"{live_server}/dicom-web/studies/{uid}"]
    # What C-FIND gets (through qido.search_studies) is the same document.
    with session_scope(database_url) as db:
        query = qido.parse_query([("PatientID", "P1")])
        found = qido.search_studies(
            db, query, archives=None, scope=archive.archive_id, base_url=scoped
        )
    assert found.items == [study]


def test_includefield_takes_stored_attributes_without_overriding(make_archive) -> None:  # type: ignore[no-untyped-def]
    archive: ArchiveClient = make_archive()
    archive.scoped.store_instances(_study("P2", "Doe^Jane", "20230101"))
    search = archive.scoped.search_for_studies
    [plain] = search(search_filters={"PatientID": "P2"})
    [some] = search(
        search_filters={"PatientID": "P2"}, fields=["Modality", "BodyPartExamined", "00081030"]
    )
    assert some == {**plain, "00080060": {"vr": "CS", "Value": ["CT"]},
                    "00180015": {"vr": "CS", "Value": ["CHEST"]}}  # fmt: skip
    [everything] = search(search_filters={"PatientID": "P2"}, fields=["all"])
    assert everything["00080070"] == {"vr": "LO", "Value": ["voxelhub"]}
    assert not any(tag.startswith("7FE0") for tag in everything)
    assert all("BulkDataURI" not in element for element in everything.values())
    assert {tag: everything[tag] for tag in plain} == plain
    assert list(everything) == sorted(everything)
    [absent] = search(search_filters={"PatientID": "P2"}, fields=["PatientComments"])
    assert absent == plain


def test_newest_first_and_pages_add_up(make_archive) -> None:  # type: ignore[no-untyped-def]
    archive: ArchiveClient = make_archive()
    stored = [
        ("20200101", "080000"),
        ("20220615", "070000"),
        ("20220615", "093000"),
        ("20210301", "120000"),
        ("", ""),
    ]
    for index, (date, time) in enumerate(stored):
        archive.scoped.store_instances(_study(f"Q{index}", "Page^Test", date, time=time))
    search = archive.scoped.search_for_studies
    everything = search()
    dates = [(s["00080020"].get("Value", [""])[0], s["00080030"].get("Value", [""])[0])
             for s in everything]  # fmt: skip
    assert dates == sorted(stored, reverse=True)
    pages = [search(limit=2, offset=offset) for offset in (0, 2, 4)]
    assert [s for page in pages for s in page] == everything
    assert search(limit=2, offset=10) == []
    in_2022 = search(search_filters={"StudyDate": "20220101-20221231"})
    assert [s["00100020"]["Value"][0] for s in in_2022] == ["Q2", "Q1"]


def test_time_range_ends_take_in_their_whole_precision(make_archive) -> None:  # type: ignore[no-untyped-def]
    # PS3.4 C.2.2.2.5: a range takes in every value up to its end; "-1030" is 10:30 to the
    # minute, so 10:30:15 and 10:30:45 are both in it (not one of them by string order).
    archive: ArchiveClient = make_archive()
    for index, time in enumerate(["093000", "102000", "103015", "103045", "110000"]):
        archive.scoped.store_instances(_study(f"T{index}", "Time^Test", "20200101", time=time))

    def times(value: str) -> list[str]:
        found = archive.scoped.search_for_studies(search_filters={"StudyTime": value})
        return sorted(s["00080030"]["Value"][0] for s in found)

    assert times("1000-1030") == ["102000", "103015", "103045"]
    assert times("-10") == ["093000", "102000", "103015", "103045"]
    assert times("103016-") == ["103045", "110000"]
    assert times("-103015") == ["093000", "102000", "103015"]
    assert qido.range_end("TM", "1030") == "103059.999999"
    assert qido.range_end("DA", "20201231") == "20201231"
    assert qido.range_end("DT", "2020") == "20201231235959.999999"


def test_a_page_cut_by_the_server_limit_says_there_may_be_more(  # type: ignore[no-untyped-def]
    make_archive, live_server: str, monkeypatch
) -> None:
    # PS3.18 §8.3.4.4.1: when the server's own maximum, not the client's limit, ends the
    # page, the response carries a Warning that more results can be asked for.
    monkeypatch.setattr(qido, "DEFAULT_LIMIT", 2)
    monkeypatch.setattr(qido, "MAX_LIMIT", 2)
    archive: ArchiveClient = make_archive()
    for index in range(5):
        archive.scoped.store_instances(_study(f"L{index}", "Limit^Test", "20200101"))
    scoped = f"{live_server}/dicom-web/archives/{archive.archive_id}"

    for path, params in [("studies", {}), ("studies", {"limit": "5"}), ("series", {}),
                         ("instances", {"limit": "3"})]:  # fmt: skip
        response = _get(archive, f"{scoped}/{path}", **params)
        assert len(response.json()) == 2
        assert "at most 2 results" in response.headers["warning"], path
        assert "offset=2" in response.headers["warning"]
    response = _get(archive, f"{scoped}/studies", offset="1")
    assert "offset=3" in response.headers["warning"]
    for params in ({"limit": "2"}, {"offset": "4"}, {"limit": "1", "offset": "1"}):
        response = _get(archive, f"{scoped}/studies", **params)
        assert "warning" not in response.headers, params
    both = _get(archive, f"{scoped}/studies", BodyPartExamined="CHEST").headers["warning"]
    assert both.startswith('299 voxelhub "not matched on: BodyPartExamined", 299 voxelhub')


def test_names_match_case_insensitively_by_prefix_and_whole(make_archive) -> None:  # type: ignore[no-untyped-def]
    archive: ArchiveClient = make_archive()
    for index, name in enumerate(["SMITH^JOHN", "Smithers^Ann", "SMYTHE^JO", "O'Neil^Pat"]):
        archive.scoped.store_instances(_study(f"N{index}", name, "20200101"))

    def names(value: str) -> set[str]:
        found = archive.scoped.search_for_studies(search_filters={"PatientName": value})
        return {s["00100010"]["Value"][0]["Alphabetic"] for s in found}

    assert names("smith*") == {"SMITH^JOHN", "Smithers^Ann"}
    assert names("SM?TH*") == {"SMITH^JOHN", "Smithers^Ann", "SMYTHE^JO"}
    assert names("smith^john") == {"SMITH^JOHN"}
    assert names("o'neil*") == {"O'Neil^Pat"}
    assert names("50%*") == set()
    assert names("*") == {"SMITH^JOHN", "Smithers^Ann", "SMYTHE^JO", "O'Neil^Pat"}


def test_searches_see_only_readable_archives(make_archive, make_user, database_url: str) -> None:  # type: ignore[no-untyped-def]
    mine: ArchiveClient = make_archive("Mine")
    theirs: ArchiveClient = make_archive("Theirs")
    mine.scoped.store_instances(_study("M1", "Mine^One", "20200101"))
    theirs.scoped.store_instances(_study("T1", "Theirs^One", "20200101"))

    def patients(archive: ArchiveClient) -> list[str]:
        return [s["00100020"]["Value"][0] for s in archive.everything.search_for_studies()]

    assert patients(mine) == ["M1"]
    assert patients(theirs) == ["T1"]
    refused = _get(mine, f"{theirs.scoped.base_url}/studies")
    assert refused.status_code == 404
    with session_scope(database_url) as db:
        user = db.get(User, mine.owner.id)
        assert user is not None
        permissions.grant(db, ARCHIVE, theirs.archive_id, user, "viewer")
    assert sorted(patients(mine)) == ["M1", "T1"]
    assert _get(mine, f"{theirs.scoped.base_url}/studies").status_code == 200


@contextlib.contextmanager
def _scratch_database(pg_server: EmbeddedPostgres) -> Iterator[tuple[str, str]]:
    """A new empty database: its SQLAlchemy URL and its libpq connection string."""
    name = f"u_{uuid.uuid4().hex[:12]}"
    dsn = f"host={pg_server.socket_dir} port={pg_server.port} user=postgres"
    with psycopg.connect(f"{dsn} dbname=postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    url = pg_server.url.replace("/voxelhub?", f"/{name}?")
    try:
        yield url, f"{dsn} dbname={name}"
    finally:
        engine_for(url).dispose()
        with psycopg.connect(f"{dsn} dbname=postgres", autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_upgrade_renders_the_studies_already_indexed(pg_server: EmbeddedPostgres) -> None:
    """A database at the previous revision gains the search indexes and every study's
    stored result on upgrade."""
    with _scratch_database(pg_server) as (url, dsn):
        migrate.upgrade(url, "0005")
        with psycopg.connect(dsn) as conn:
            archive = conn.execute(
                "INSERT INTO archives (id, name, description, created_at) "
                "VALUES (gen_random_uuid(), 'Old', '', now()) RETURNING id"
            ).fetchone()
            conn.execute(
                _INSERT_STUDIES
                + "VALUES (gen_random_uuid(), now(), now(), %s, '1.2.3', 'P\"1', 'Ünal^Ayşe', "
                "'', 'F', '20240101', '', 'A1', '', 'CT \\ HEAD', '', '{MR,CT}', 2, 7)",
                [archive[0] if archive else None],
            )
        migrate.upgrade(url)
        with psycopg.connect(dsn) as conn:
            indexes = {
                row[0]
                for row in conn.execute(
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'dicom_studies'"
                )
            }
            row = conn.execute("SELECT qido_head, qido_tail FROM dicom_studies").fetchone()
        assert {
            "ix_dicom_studies_newest",
            "ix_dicom_studies_archive_newest",
            "ix_dicom_studies_patient_name_lower",
        } <= indexes
        assert row is not None
        document = json.loads("{" + row[0] + "," + row[1] + "}")
        assert document == {
            "00080020": {"vr": "DA", "Value": ["20240101"]},
            "00080030": {"vr": "TM"},
            "00080050": {"vr": "SH", "Value": ["A1"]},
            "00080056": {"vr": "CS", "Value": ["ONLINE"]},
            "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
            "00080090": {"vr": "PN"},
            "00081030": {"vr": "LO", "Value": ["CT \\ HEAD"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Ünal^Ayşe"}]},
            "00100020": {"vr": "LO", "Value": ['P"1']},
            "00100021": {"vr": "LO"},
            "00100030": {"vr": "DA"},
            "00100040": {"vr": "CS", "Value": ["F"]},
            "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
            "00200010": {"vr": "SH"},
            "00201206": {"vr": "IS", "Value": [2]},
            "00201208": {"vr": "IS", "Value": [7]},
        }


def test_person_names_of_several_component_groups(make_archive, live_server: str) -> None:  # type: ignore[no-untyped-def]
    # pydicom's Japanese and Korean files: ISO 2022 names with ideographic and phonetic groups.
    archive: ArchiveClient = make_archive()
    japanese = dcmread(get_charset_files("chrH31.dcm")[0])
    korean = dcmread(get_charset_files("chrI2.dcm")[0])
    archive.scoped.store_instances([japanese, korean])
    scoped = f"{live_server}/dicom-web/archives/{archive.archive_id}"

    def found(name: str, level: str = "studies") -> list[str]:
        response = _get(archive, f"{scoped}/{level}", PatientName=name, includefield="PatientName")
        assert response.status_code == 200, response.text
        return [r["00100010"]["Value"][0].get("Alphabetic", "") for r in response.json()]

    [study] = _get(archive, f"{scoped}/studies", PatientID=japanese.PatientID).json()
    assert study["00100010"]["Value"] == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]
    [instance] = _get(
        archive, f"{scoped}/instances", SOPInstanceUID=korean.SOPInstanceUID, includefield="all"
    ).json()
    assert instance["00100010"]["Value"] == [
        {"Alphabetic": "Hong^Gildong", "Ideographic": "洪^吉洞", "Phonetic": "홍^길동"}
    ]
    assert found("Yamada^Tarou") == ["Yamada^Tarou"]
    assert found("yamada^*") == ["Yamada^Tarou"]
    assert found("山田^太郎") == ["Yamada^Tarou"]
    assert found("やまだ*") == ["Yamada^Tarou"]
    assert found("홍^길동", "series") == ["Hong^Gildong"]
    assert found("Hong^Gildong=洪^吉洞=홍^길동", "instances") == ["Hong^Gildong"]
    assert found("Yamada") == []  # a whole group, not part of one
    assert found("山田") == []


def test_names_indexed_before_component_groups_come_out_in_groups(
    pg_server: EmbeddedPostgres,
) -> None:
    """Upgrading past 0008 renders the names already indexed in groups; downgrading gives
    the earlier document back."""
    with _scratch_database(pg_server) as (url, dsn):
        migrate.upgrade(url, "0007")
        with psycopg.connect(dsn) as conn:
            conn.execute(_OLD_ARCHIVE)
            conn.execute(
                _INSERT_STUDIES + "SELECT gen_random_uuid(), now(), now(), id, '1.2.3', 'P1', "
                "'Yamada^Tarou=山田^太郎=やまだ^たろう', '', '', '', '', '', '', '', "
                "'=山田', '{MR}', 1, 1 FROM archives"
            )

        def names() -> tuple[Any, Any]:
            with psycopg.connect(dsn) as conn:
                row = conn.execute("SELECT qido_head, qido_tail FROM dicom_studies").fetchone()
            assert row is not None
            document = json.loads("{" + row[0] + "," + row[1] + "}")
            return document["00100010"]["Value"], document["00080090"]["Value"]

        migrate.upgrade(url)
        assert names() == (
            [
                {
                    "Alphabetic": "Yamada^Tarou",
                    "Ideographic": "山田^太郎",
                    "Phonetic": "やまだ^たろう",
                }
            ],
            [{"Ideographic": "山田"}],
        )
        command.downgrade(migrate.alembic_config(url), "0007")
        assert names() == (
            [{"Alphabetic": "Yamada^Tarou=山田^太郎=やまだ^たろう"}],
            [{"Alphabetic": "=山田"}],
        )


def test_the_latest_migration_writes_the_documents_the_model_declares() -> None:
    latest = importlib.import_module("voxelhub.migrations.versions.0009_study_issuer_of_patient_id")
    names = importlib.import_module("voxelhub.migrations.versions.0008_study_person_names")

    def spaced(sql: str) -> str:
        return " ".join(sql.split())

    assert spaced(latest.HEAD) == spaced(qido_document.HEAD_SQL)
    assert spaced(latest.TAIL) == spaced(qido_document.TAIL_SQL)
    assert spaced(names.FUNCTION) == spaced(qido_document.FUNCTIONS[-1])


def _issued(datasets: list[Any], issuer: str) -> list[Any]:
    for ds in datasets:
        ds.IssuerOfPatientID = issuer
    return datasets


def test_issuer_of_patient_id_is_matched_and_returned(make_archive) -> None:  # type: ignore[no-untyped-def]
    """IssuerOfPatientID (0010,0021) is a study attribute, as PatientID is: every study
    result carries it, and it is matched on at study, series and instance level."""
    archive: ArchiveClient = make_archive()
    archive.scoped.store_instances(_issued(_study("I1", "Issued^One", "20200101"), "HOSP-A"))
    archive.scoped.store_instances(_issued(_study("I1", "Issued^Two", "20200102"), "HOSP-B"))
    archive.scoped.store_instances(_study("I1", "Not^Issued", "20200103"))
    search = archive.scoped.search_for_studies

    def issuers(**filters: str) -> list[str]:
        found = search(search_filters={"PatientID": "I1", **filters})
        return [s["00100021"].get("Value", [""])[0] for s in found]

    assert issuers() == ["", "HOSP-B", "HOSP-A"]
    assert issuers(IssuerOfPatientID="HOSP-A") == ["HOSP-A"]
    assert issuers(IssuerOfPatientID="HOSP-*") == ["HOSP-B", "HOSP-A"]
    assert issuers(IssuerOfPatientID="OTHER") == []
    [series] = archive.scoped.search_for_series(search_filters={"IssuerOfPatientID": "HOSP-B"})
    assert series["00080060"]["Value"] == ["CT"]
    [instance] = archive.scoped.search_for_instances(
        search_filters={"00100021": "HOSP-A"}, fields=["IssuerOfPatientID"]
    )
    assert instance["00100021"] == {"vr": "LO", "Value": ["HOSP-A"]}


def test_a_study_keeps_the_patient_of_its_first_instance(make_archive) -> None:  # type: ignore[no-untyped-def]
    """Instances of one study that disagree on the patient leave the study with the
    PatientID and IssuerOfPatientID of the instance it was made from; each instance keeps
    its own."""
    archive: ArchiveClient = make_archive()
    first, second = _study("C1", "Conflict^Test", "20200101", modalities=("CT", "MR"))
    first.IssuerOfPatientID = "HOSP-A"
    second.PatientID, second.IssuerOfPatientID = "C2", "HOSP-B"
    archive.scoped.store_instances([first])
    archive.scoped.store_instances([second])
    [study] = archive.scoped.search_for_studies()
    assert study["00100020"]["Value"] == ["C1"]
    assert study["00100021"]["Value"] == ["HOSP-A"]
    assert archive.scoped.search_for_studies(search_filters={"IssuerOfPatientID": "HOSP-B"}) == []
    [kept] = archive.scoped.search_for_instances(
        search_filters={"SOPInstanceUID": second.SOPInstanceUID}, fields=["IssuerOfPatientID"]
    )
    assert kept["00100021"]["Value"] == ["HOSP-B"]


def test_upgrade_fills_the_issuer_of_the_studies_already_indexed(
    pg_server: EmbeddedPostgres,
) -> None:
    """Upgrading past 0009 gives each study the IssuerOfPatientID of its first stored
    instance, in its column and its result document; downgrading drops it again."""
    with _scratch_database(pg_server) as (url, dsn):
        migrate.upgrade(url, "0008")
        with psycopg.connect(dsn) as conn:
            conn.execute(_OLD_ARCHIVE)
            # Study 1.1: two instances that disagree, the older's issuer is the study's;
            # 1.2: an issuer with padding; 1.3: none; 1.4: an empty one.
            conn.execute(
                _INSERT_STUDIES
                + "SELECT gen_random_uuid(), now(), now(), a.id, u, 'P1', '', '', '', '', '', "
                "'', '', '', '', '{CT}', 1, 1 FROM archives AS a, "
                "unnest(ARRAY['1.1', '1.2', '1.3', '1.4']) AS u"
            )
            conn.execute(
                "INSERT INTO dicom_series (id, created_at, updated_at, archive_id, study_id, "
                "series_instance_uid, modality, series_number, series_description, "
                "number_of_instances, size_bytes, version, metadata_version) "
                "SELECT gen_random_uuid(), now(), now(), archive_id, id, "
                "study_instance_uid || '.1', 'CT', 1, '', 1, 0, 0, -1 FROM dicom_studies"
            )
            issuers = [("1.1", 2, "HOSP-A"), ("1.1", 1, "HOSP-B"), ("1.2", 1, " HOSP-C "),
                       ("1.3", 1, None), ("1.4", 1, "")]  # fmt: skip
            for study, age, issuer in issuers:
                element = {} if issuer is None else {"00100021": {"vr": "LO", "Value": [issuer]}}
                if issuer == "":
                    element = {"00100021": {"vr": "LO"}}
                conn.execute(
                    "INSERT INTO dicom_instances (id, created_at, archive_id, series_id, "
                    "sop_instance_uid, sop_class_uid, instance_number, transfer_syntax_uid, "
                    "frames_transfer_syntax_uid, number_of_frames, object_key, header_length, "
                    "frame_offsets, size_bytes, content_sha256, dataset_json) "
                    "SELECT gen_random_uuid(), now() - make_interval(days => %s), archive_id, "
                    "id, %s, '1.2.840.10008.5.1.4.1.1.2', 1, '1.2.840.10008.1.2.1', "
                    "'1.2.840.10008.1.2.1', 1, 'k', 0, '[]', 0, '', %s::jsonb "
                    "FROM dicom_series WHERE series_instance_uid = %s",
                    [age, generate_uid(), json.dumps(element), f"{study}.1"],
                )

        def stored() -> dict[str, Any]:
            with psycopg.connect(dsn) as conn:
                rows = conn.execute(
                    "SELECT study_instance_uid, issuer_of_patient_id, qido_tail "
                    "FROM dicom_studies ORDER BY 1"
                ).fetchall()
            return {uid: (issuer, json.loads("{" + tail + "}")["00100021"])
                    for uid, issuer, tail in rows}  # fmt: skip

        migrate.upgrade(url)
        assert stored() == {
            "1.1": ("HOSP-A", {"vr": "LO", "Value": ["HOSP-A"]}),
            "1.2": ("HOSP-C", {"vr": "LO", "Value": ["HOSP-C"]}),
            "1.3": ("", {"vr": "LO"}),
            "1.4": ("", {"vr": "LO"}),
        }
        command.downgrade(migrate.alembic_config(url), "0008")
        with psycopg.connect(dsn) as conn:
            columns = {row[0] for row in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'dicom_studies'"
            )}  # fmt: skip
            row = conn.execute("SELECT qido_tail FROM dicom_studies LIMIT 1").fetchone()
        assert "issuer_of_patient_id" not in columns
        assert row is not None and "00100021" not in row[0]


def test_sop_classes_in_study_are_those_of_its_instances(make_archive, make_user) -> None:  # type: ignore[no-untyped-def]
    """SOPClassesInStudy (0008,0062), asked for, lists the distinct SOP classes of the
    study's instances, across every copy a search over several archives merges."""
    owner = make_user()
    first: ArchiveClient = make_archive("First", owner)
    second: ArchiveClient = make_archive("Second", owner)
    ct = _study("P9", "Sop^Classes", "20240202", modalities=("CT", "CT"))
    mr = copy.deepcopy(ct[0])
    mr.SOPClassUID = mr.file_meta.MediaStorageSOPClassUID = MRImageStorage
    mr.SOPInstanceUID = mr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    mr.SeriesInstanceUID, mr.Modality, mr.SeriesNumber = generate_uid(), "MR", 3
    first.scoped.store_instances(ct)
    second.scoped.store_instances([*ct, mr])

    [plain] = first.scoped.search_for_studies()
    assert "00080062" not in plain
    [asked] = first.scoped.search_for_studies(fields=["SOPClassesInStudy"])
    assert asked == {**plain, "00080062": {"vr": "UI", "Value": [CTImageStorage]}}
    [merged] = first.everything.search_for_studies(fields=["00080062", "StudyDescription"])
    assert merged["00080062"] == {"vr": "UI", "Value": sorted([CTImageStorage, MRImageStorage])}
    [everything] = second.scoped.search_for_studies(fields=["all"])
    assert everything["00080062"] == merged["00080062"]
    assert list(everything) == sorted(everything)
