"""The DIMSE service against dcmtk's command-line tools, as scanners and PACS drive it."""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import MaximumLengthNotification
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from sqlalchemy import func, select

from tests.conftest import Account
from voxelhub.archives import service as archives
from voxelhub.auth.models import AuditEvent
from voxelhub.auth.service import Principal
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.dicom.synthetic import PatientInfo, ct_phantom
from voxelhub.store import ingest_guard
from voxelhub.store.dimse import DimseConfig, DimseConfigError, DimseServer, start_dimse
from voxelhub.store.dimse.contexts import add_supported_contexts, cheap_to_copy
from voxelhub.store.dimse.journal import Segment, leftovers
from voxelhub.store.dimse.receiver import MAX_UNSENT, StoreDUL
from voxelhub.store.dimse.store_scp import JOURNAL_FOLDER
from voxelhub.store.models import Instance, Series, Study

TOOLS = ("echoscu", "storescu", "findscu", "getscu", "movescu", "storescp")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
needs_dcmtk = pytest.mark.skipif(
    bool(MISSING), reason=f"dcmtk is not installed (missing {', '.join(MISSING)}); "
    "install it with: apt-get install dcmtk",
)  # fmt: skip
AE_TITLE = "VOXELHUB"
DESTINATION = "DEST"
PATIENT = PatientInfo(patient_id="DIMSE-0001", patient_name="Dimse^Test")
# pydicom test files, each with the storescu option proposing its transfer syntax.
TEST_FILES = {
    "CT_small.dcm": "-x=",  # explicit VR little endian
    "SC_rgb_jpeg_gdcm.dcm": "-xs",  # JPEG lossless, first-order prediction
    "JPEG2000.dcm": "-xw",  # JPEG 2000
    "MR_small_RLE.dcm": "-xr",  # RLE lossless
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dcmtk(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TCP_NODELAY": "1"}
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60,
        check=False,
    )  # fmt: skip


@pytest.fixture
def archive_name(database_url: str, admin: Account) -> str:
    principal = Principal(user_id=admin.id, username=admin.username, is_admin=True, via="system")
    with session_scope(database_url) as db:
        archives.create_archive(db, principal, "Modalities")
    return "Modalities"


@pytest.fixture
def destination_port() -> int:
    return free_port()


@pytest.fixture
def dimse(runtime: Runtime, archive_name: str, destination_port: int) -> Iterator[DimseServer]:
    config = DimseConfig(
        archive=archive_name, ae_title=AE_TITLE, port=0,
        remote_aes={DESTINATION: ("127.0.0.1", destination_port)},
    )  # fmt: skip
    with start_dimse(runtime, config) as server:
        yield server


@pytest.fixture
def series_files(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "series"
    folder.mkdir()
    paths = []
    for index, ds in enumerate(ct_phantom(slices=8, size=128, patient=PATIENT)):
        path = folder / f"{index:03d}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def scu(tool: str, server: DimseServer, *args: object, cwd: Path | None = None) -> str:
    """Run a dcmtk SCU against the server; fail the test with its output when it fails."""
    result = dcmtk(tool, "-aec", AE_TITLE, "127.0.0.1", server.port, *args, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def stored_uids(runtime: Runtime, archive_id: object) -> list[str]:
    with session_scope(runtime.database_url) as db:
        return sorted(
            db.scalars(select(Instance.sop_instance_uid).where(Instance.archive_id == archive_id))
        )


def store_series(server: DimseServer, files: list[Path], proposal: str = "-x=") -> None:
    """storescu proposes uncompressed syntaxes and the one compressed syntax named by `proposal`.

    A compressed file goes as it is only when its syntax was proposed (and accepted).
    Returns once the acknowledged instances are indexed too.
    """
    scu("storescu", server, "-R", proposal, *files)
    assert server.flush(timeout=120), "the acknowledged instances were not indexed"


def store_all(server: DimseServer, series_files: list[Path]) -> None:
    store_series(server, series_files)
    for name, proposal in TEST_FILES.items():
        store_series(server, [Path(get_testdata_file(name))], proposal)


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "fragment"),
    [("A" * 17, "at most 16"), ("BAD\\AE", "backslash"), ("  ", "empty")],
)
def test_config_refuses_invalid_ae_titles(title: str, fragment: str) -> None:
    with pytest.raises(DimseConfigError, match=fragment):
        DimseConfig(archive="x", ae_title=title)
    with pytest.raises(DimseConfigError, match=fragment):
        DimseConfig(archive="x", remote_aes={title: ("127.0.0.1", 104)})


def _context_id(assoc: Any, abstract_syntax: str) -> int:
    """The ID of the accepted presentation context for `abstract_syntax`."""
    return next(
        cx.context_id for cx in assoc.accepted_contexts if cx.abstract_syntax == abstract_syntax
    )


def test_config_refuses_bad_ports_and_missing_archive() -> None:
    with pytest.raises(DimseConfigError, match="between 0 and 65535"):
        DimseConfig(archive="x", port=70000)
    with pytest.raises(DimseConfigError, match="between 1 and 65535"):
        DimseConfig(archive="x", remote_aes={"PACS": ("pacs", 0)})
    with pytest.raises(DimseConfigError, match="archive"):
        DimseConfig(archive=" ")
    with pytest.raises(DimseConfigError, match="idle timeout"):
        DimseConfig(archive="x", idle_timeout_s=0)


def test_contexts_copied_per_association_equal_the_supported_ones() -> None:
    ae = AE()
    add_supported_contexts(ae)
    originals = ae.supported_contexts
    contexts = cheap_to_copy(originals)
    copies = copy.deepcopy(contexts)
    assert [(c.abstract_syntax, c.transfer_syntax, c.scu_role, c.scp_role) for c in copies] == [
        (c.abstract_syntax, c.transfer_syntax, c.scu_role, c.scp_role) for c in originals
    ]
    copies[0].context_id = 7  # an association numbers and edits its own copies
    copies[0].transfer_syntax.clear()
    assert contexts[0].context_id is None and contexts[0].transfer_syntax


def test_start_refuses_an_unknown_archive(runtime: Runtime) -> None:
    with pytest.raises(DimseConfigError, match="no archive named 'nowhere'"):
        start_dimse(runtime, DimseConfig(archive="nowhere", port=0))


# --- dcmtk -----------------------------------------------------------------------------------


@pytest.mark.slow
@needs_dcmtk
def test_echoscu(dimse: DimseServer) -> None:
    scu("echoscu", dimse)


@pytest.mark.slow
@needs_dcmtk
@pytest.mark.parametrize("check", [True, False])
def test_the_called_ae_title_is_checked_when_asked(
    runtime: Runtime, archive_name: str, check: bool, caplog: pytest.LogCaptureFixture
) -> None:
    config = DimseConfig(archive=archive_name, ae_title=AE_TITLE, port=0, check_called_ae=check)
    with start_dimse(runtime, config) as server:
        right = dcmtk("echoscu", "-aet", "MODALITY", "-aec", AE_TITLE, "127.0.0.1", server.port)
        wrong = dcmtk("echoscu", "-aet", "MODALITY", "-aec", "OTHER", "127.0.0.1", server.port)
    assert right.returncode == 0, right.stdout + right.stderr
    if not check:
        assert wrong.returncode == 0, wrong.stdout + wrong.stderr
        return
    answer = wrong.stdout + wrong.stderr
    assert wrong.returncode != 0, answer
    # A-ASSOCIATE-RJ: result 1 (permanent), source 1 (service user), reason 7.
    assert "Rejected Permanent" in answer and "Called AE Title Not Recognized" in answer, answer
    [logged] = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert "calling AE MODALITY" in logged and "called AE OTHER, not VOXELHUB" in logged
    assert "127.0.0.1:" in logged


@pytest.mark.slow
@needs_dcmtk
def test_storescu_stores_each_instance_once(
    dimse: DimseServer, runtime: Runtime, series_files: list[Path]
) -> None:
    files = [*series_files, *(Path(get_testdata_file(name)) for name in TEST_FILES)]
    expected = sorted(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files)
    store_all(dimse, series_files)
    assert stored_uids(runtime, dimse.archive_id) == expected
    with session_scope(runtime.database_url) as db:
        rows = db.execute(select(Instance.sop_instance_uid, Instance.transfer_syntax_uid))
        syntaxes = {uid: syntax for uid, syntax in rows}
        study = db.scalar(select(Study).where(Study.patient_id == PATIENT.patient_id))
        assert study is not None and study.number_of_instances == 8
        audits = db.scalar(select(func.count()).where(AuditEvent.action == "dimse.store"))
        audit = db.scalars(select(AuditEvent).where(AuditEvent.action == "dimse.store")).first()
    assert audits == len(files)
    assert audit is not None and audit.user_id is None
    assert audit.detail["calling_ae"] == "STORESCU" and audit.object_id == str(dimse.archive_id)
    for name in TEST_FILES:  # compressed files arrive as they are, not decompressed by storescu
        ds = dcmread(get_testdata_file(name), stop_before_pixels=True)
        assert syntaxes[ds.SOPInstanceUID] == ds.file_meta.TransferSyntaxUID

    store_all(dimse, series_files)  # the same files again store nothing twice
    assert stored_uids(runtime, dimse.archive_id) == expected
    with session_scope(runtime.database_url) as db:
        series = db.scalars(select(Series.number_of_instances)).all()
    assert sorted(series) == [1, 1, 1, 1, 8]


@pytest.mark.slow
@needs_dcmtk
def test_retired_storage_sop_classes_are_accepted(dimse: DimseServer, runtime: Runtime) -> None:
    """Old ultrasound equipment (and archives of it) still send the retired US Image Storage
    SOP class; it is stored like any other."""
    path = Path(get_testdata_file("color-pl.dcm"))
    ds = dcmread(path, force=True)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.6"
    store_series(dimse, [path])
    assert stored_uids(runtime, dimse.archive_id) == [ds.SOPInstanceUID]


@pytest.mark.slow
@needs_dcmtk
def test_storescu_reports_a_uid_conflict(
    dimse: DimseServer, runtime: Runtime, series_files: list[Path], tmp_path: Path
) -> None:
    store_series(dimse, series_files[:1])
    changed = dcmread(series_files[0])
    changed.PixelData = bytes(len(changed.PixelData))
    path = tmp_path / "changed.dcm"
    dcmwrite(path, changed, enforce_file_format=True)
    result = dcmtk("storescu", "-d", "-aec", AE_TITLE, "-R", "127.0.0.1", dimse.port, path)
    output = result.stdout + result.stderr
    assert "0xa900" in output and "UID conflict" in output, output[-3000:]
    assert len(stored_uids(runtime, dimse.archive_id)) == 1


@pytest.mark.slow
@needs_dcmtk
def test_storescu_hears_of_a_uid_stored_in_another_series(
    dimse: DimseServer, runtime: Runtime, series_files: list[Path], tmp_path: Path
) -> None:
    """An instance whose SOPInstanceUID the archive holds in another series is refused on
    the spot, not acknowledged and then set aside where its sender never hears of it."""
    store_series(dimse, series_files[:1])
    moved = dcmread(series_files[0])
    moved.SeriesInstanceUID = generate_uid()
    path = tmp_path / "moved.dcm"
    dcmwrite(path, moved, enforce_file_format=True)
    result = dcmtk("storescu", "-d", "-aec", AE_TITLE, "-R", "127.0.0.1", dimse.port, path)
    output = result.stdout + result.stderr
    assert "0xa900" in output and "UID conflict" in output, output[-3000:]
    assert dimse.flush(timeout=60)
    assert stored_uids(runtime, dimse.archive_id) == [str(moved.SOPInstanceUID)]
    assert not (runtime.settings.home / JOURNAL_FOLDER / str(dimse.archive_id) / "refused").exists()


@pytest.mark.slow
@needs_dcmtk
def test_instances_left_in_the_journal_are_indexed_on_start(
    runtime: Runtime, archive_name: str, series_files: list[Path]
) -> None:
    """What a crash left acknowledged but not indexed is stored when the service starts;
    a withdrawn record and a record cut short (never acknowledged) are not, and segments
    prepared but never used are removed."""
    config = DimseConfig(archive=archive_name, ae_title=AE_TITLE, port=0)
    with start_dimse(runtime, config) as server:
        folder = runtime.settings.home / JOURNAL_FOLDER / str(server.archive_id)
    origin = b'{"calling_ae": "CT1", "address": "10.0.0.7:4100"}'
    segment = Segment.create(folder)
    for path in series_files[:5]:
        segment.append(origin, path.read_bytes())
    segment.cancel_last()  # refused after it was written: never acknowledged
    segment.append(origin, series_files[5].read_bytes())
    segment.seal()
    torn = series_files[6].read_bytes()
    with segment.path.open("ab") as journal:  # the crash came while this one was written
        journal.write(struct.pack("<4sIQI", b"VXJ1", len(origin), len(torn), 0) + origin)
        journal.write(torn[:1000])
    prepared = Segment.create(folder, zeroed=1 << 20)  # written over zeros
    prepared.append(origin, series_files[7].read_bytes())
    Segment.create(folder, zeroed=1 << 20)  # prepared, never used
    expected = sorted(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
                      for p in [*series_files[:4], series_files[5], series_files[7]])  # fmt: skip

    with start_dimse(runtime, config) as server:
        assert server.flush(timeout=120)
        assert stored_uids(runtime, server.archive_id) == expected
    assert leftovers(folder) == []
    with session_scope(runtime.database_url) as db:
        audit = db.scalars(select(AuditEvent).where(AuditEvent.action == "dimse.store")).first()
    assert audit is not None and audit.detail["calling_ae"] == "CT1"


def _in_flight(runtime: Runtime, archive_id: uuid.UUID) -> bool:
    with session_scope(runtime.database_url) as db:
        return ingest_guard.in_flight(db, archive_id)


def test_an_open_association_marks_its_archive_in_flight(
    dimse: DimseServer, runtime: Runtime, series_files: list[Path]
) -> None:
    """A modality pausing between instances of a series must not look finished to a
    trigger: the archive stays marked in flight until the association ends and what it
    sent is indexed."""
    ae = AE(ae_title="CT1")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        assert not _in_flight(runtime, dimse.archive_id)  # nothing sent yet
        answer = assoc.send_c_store(dcmread(series_files[0]))
        assert answer.Status == 0x0000
        time.sleep(0.5)  # a pause between two instances
        assert _in_flight(runtime, dimse.archive_id)
    finally:
        assoc.release()
    deadline = time.monotonic() + 60
    while _in_flight(runtime, dimse.archive_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _in_flight(runtime, dimse.archive_id)
    # Released only once indexed: what it sent is stored by then.
    uid = str(dcmread(series_files[0], stop_before_pixels=True).SOPInstanceUID)
    assert stored_uids(runtime, dimse.archive_id) == [uid]


def _peer_maximum(assoc: Association, length: int) -> None:
    """Make a client association send PDUs of at most `length` bytes (0: any), as if the
    server had negotiated that maximum."""
    for item in assoc.acceptor.user_information:
        if isinstance(item, MaximumLengthNotification):
            item.maximum_length_received = length


def test_a_c_store_in_small_fragments_is_stored_too(
    dimse: DimseServer, runtime: Runtime, series_files: list[Path]
) -> None:
    """A peer may cut its messages into fragments of any size: a command set in several
    fragments is decoded by pynetdicom instead of the receive path, with the same answer,
    and the requests after it on the association take the receive path again."""
    ae = AE(ae_title="CT1")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        _peer_maximum(assoc, 64)  # the client now sends 64-byte PDUs
        answers = [assoc.send_c_store(dcmread(path)) for path in series_files[:2]]
        _peer_maximum(assoc, 0)
        answers.append(assoc.send_c_store(dcmread(series_files[2])))
        answers.append(assoc.send_c_store(dcmread(series_files[0])))  # stored already
    finally:
        assoc.release()
    assert [answer.Status for answer in answers] == [0x0000] * 4
    assert dimse.flush(timeout=60)
    uids = [str(dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in series_files[:3]]
    assert stored_uids(runtime, dimse.archive_id) == sorted(uids)


def test_an_association_answers_echo_and_find_between_its_stores(
    dimse: DimseServer, runtime: Runtime, series_files: list[Path]
) -> None:
    """While instances come in, the association's own loop rests; a C-ECHO or C-FIND
    between C-STOREs wakes it, is answered, and the stores after it take the receive
    path again."""
    ae = AE(ae_title="CT1")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        stored = [assoc.send_c_store(dcmread(path)).Status for path in series_files[:3]]
        echoed = assoc.send_c_echo().Status
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.PatientID = PATIENT.patient_id
        query.StudyInstanceUID = ""
        found = [
            (answer.Status, identifier.StudyInstanceUID if identifier else None)
            for answer, identifier in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            )
        ]
        stored += [assoc.send_c_store(dcmread(path)).Status for path in series_files[3:5]]
        echoed_again = assoc.send_c_echo().Status
    finally:
        assoc.release()
    assert assoc.is_released
    assert stored == [0x0000] * 5
    assert echoed == echoed_again == 0x0000
    study = str(dcmread(series_files[0], stop_before_pixels=True).StudyInstanceUID)
    assert found == [(0xFF00, study), (0x0000, None)]
    assert dimse.flush(timeout=60)
    assert len(stored_uids(runtime, dimse.archive_id)) == 5


def _indexers() -> list[psutil.Process]:
    """The C-STORE indexer processes started by this test process."""
    return [
        child for child in psutil.Process().children()
        if "voxelhub.store.dimse.indexer" in " ".join(child.cmdline())
    ]  # fmt: skip


def test_instances_acknowledged_before_the_indexer_is_killed_are_indexed(
    dimse: DimseServer, runtime: Runtime, series_files: list[Path]
) -> None:
    """The process that indexes acknowledged instances may die (a codec crash, the OOM
    killer): another takes its place and indexes what the first had not, each once, and
    the association goes on."""
    ae = AE(ae_title="CT1")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        stored = [assoc.send_c_store(dcmread(path)).Status for path in series_files[:4]]
        (first,) = _indexers()
        first.kill()
        first.wait(10)
        stored += [assoc.send_c_store(dcmread(path)).Status for path in series_files[4:]]
    finally:
        assoc.release()
    assert stored == [0x0000] * len(series_files)
    assert dimse.flush(timeout=120)
    (second,) = _indexers()
    assert second.pid != first.pid
    expected = sorted(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in series_files)
    assert stored_uids(runtime, dimse.archive_id) == expected
    with session_scope(runtime.database_url) as db:
        first_stores = db.scalars(
            select(AuditEvent.detail["sop_instance_uid"].astext).where(
                AuditEvent.action == "dimse.store",
                AuditEvent.object_id == str(dimse.archive_id),
                AuditEvent.detail["already_stored"].astext == "false",
            )
        ).all()
    assert sorted(first_stores) == expected  # each stored once, whichever process did it


def test_a_peer_silent_after_its_stores_is_aborted_at_the_idle_timeout(
    runtime: Runtime, archive_name: str, series_files: list[Path]
) -> None:
    """A modality that stops talking in the middle of an association does not hold it
    forever, also while the association's loop rests between instances."""
    config = DimseConfig(archive=archive_name, ae_title=AE_TITLE, port=0, idle_timeout_s=1.0)
    with start_dimse(runtime, config) as server:
        ae = AE(ae_title="CT1")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate("127.0.0.1", server.port, ae_title=AE_TITLE)
        assert assoc.is_established
        assert assoc.send_c_store(dcmread(series_files[0])).Status == 0x0000
        deadline = time.monotonic() + 20
        while not assoc.is_aborted and time.monotonic() < deadline:
            time.sleep(0.05)
        assert assoc.is_aborted
        assert server.flush(timeout=60)
        assert len(stored_uids(runtime, server.archive_id)) == 1


def _store_rq_pdus(assoc: Association, ds: Dataset) -> list[bytes]:
    """The P-DATA-TF PDUs of a C-STORE-RQ of `ds` on the association's first context."""
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = ds.SOPClassUID
    request.AffectedSOPInstanceUID = ds.SOPInstanceUID
    request.Priority = 2
    request.DataSet = BytesIO(encode(ds, False, True) or b"")
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    context_id = assoc.accepted_contexts[0].context_id
    assert context_id is not None
    pdus = []
    for p_data in message.encode_msg(context_id, 16382):
        pdu = P_DATA_TF()
        pdu.from_primitive(p_data)
        pdus.append(pdu.encode())
    return pdus


def test_a_peer_that_breaks_off_an_instance_is_aborted(
    dimse: DimseServer, runtime: Runtime, series_files: list[Path]
) -> None:
    """A second command where the dataset of a C-STORE-RQ should go breaks the protocol:
    the association is aborted, what it sent before stays stored, its archive is no
    longer marked in flight, and the service goes on."""
    ae = AE(ae_title="CT1")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=AE_TITLE)
    assert assoc.is_established
    assert assoc.send_c_store(dcmread(series_files[0])).Status == 0x0000
    command, *_ = _store_rq_pdus(assoc, dcmread(series_files[1]))
    socket = assoc.dul.socket
    assert socket is not None
    socket.send(command)
    socket.send(command)
    deadline = time.monotonic() + 30
    while not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert assoc.is_aborted
    while _in_flight(runtime, dimse.archive_id) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _in_flight(runtime, dimse.archive_id)
    assert dimse.flush(timeout=60)
    assert len(stored_uids(runtime, dimse.archive_id)) == 1  # the one acknowledged
    store_series(dimse, series_files[1:2])
    assert len(stored_uids(runtime, dimse.archive_id)) == 2


def find(
    server: DimseServer, tmp_path: Path, *keys: str, model: str = "-S"
) -> list[dict[str, str]]:
    """findscu with --extract; each response as {keyword: value}."""
    folder = tmp_path / f"find-{time.monotonic_ns()}"
    folder.mkdir()
    args: list[object] = [model, "--extract"]
    for key in keys:
        args += ["-k", key]
    scu("findscu", server, *args, cwd=folder)
    responses = [dcmread(path) for path in sorted(folder.glob("rsp*.dcm"))]
    return [{el.keyword: str(el.value) for el in ds} for ds in responses]


@pytest.mark.slow
@needs_dcmtk
def test_findscu_at_every_level(
    dimse: DimseServer, runtime: Runtime, series_files: list[Path], tmp_path: Path
) -> None:
    store_series(dimse, series_files)
    first = dcmread(series_files[0], stop_before_pixels=True)
    study_uid, series_uid = str(first.StudyInstanceUID), str(first.SeriesInstanceUID)
    sop_uids = sorted(str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in series_files)

    studies = find(dimse, tmp_path, "QueryRetrieveLevel=STUDY", f"PatientID={PATIENT.patient_id}",
                   "StudyInstanceUID", "PatientName", "ModalitiesInStudy",
                   "NumberOfStudyRelatedInstances", "RetrieveAETitle")  # fmt: skip
    assert len(studies) == 1
    assert studies[0]["StudyInstanceUID"] == study_uid
    assert studies[0]["PatientName"] == PATIENT.patient_name
    assert studies[0]["ModalitiesInStudy"] == "CT"
    assert studies[0]["NumberOfStudyRelatedInstances"] == "8"
    assert studies[0]["RetrieveAETitle"] == AE_TITLE

    wildcard = find(dimse, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=dimse*",
                    "StudyInstanceUID")  # fmt: skip
    assert [s["StudyInstanceUID"] for s in wildcard] == [study_uid]
    assert find(dimse, tmp_path, "QueryRetrieveLevel=STUDY", "PatientName=Nobody*") == []

    series = find(dimse, tmp_path, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={study_uid}",
                  "SeriesInstanceUID", "Modality", "NumberOfSeriesRelatedInstances")  # fmt: skip
    assert [(s["SeriesInstanceUID"], s["Modality"]) for s in series] == [(series_uid, "CT")]
    assert series[0]["NumberOfSeriesRelatedInstances"] == "8"

    images = find(dimse, tmp_path, "QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study_uid}",
                  f"SeriesInstanceUID={series_uid}", "SOPInstanceUID", "InstanceNumber",
                  "ImageType")  # fmt: skip
    assert sorted(i["SOPInstanceUID"] for i in images) == sop_uids
    assert sorted(int(i["InstanceNumber"]) for i in images) == list(range(1, 9))
    assert all("AXIAL" in i["ImageType"] for i in images)  # filled from the stored JSON

    patients = find(dimse, tmp_path, "QueryRetrieveLevel=PATIENT", "PatientID=DIMSE*",
                    "PatientName", "NumberOfPatientRelatedStudies", model="-P")  # fmt: skip
    assert [(p["PatientID"], p["NumberOfPatientRelatedStudies"]) for p in patients] == [
        (PATIENT.patient_id, "1")
    ]
    with session_scope(runtime.database_url) as db:
        finds = db.scalars(select(AuditEvent).where(AuditEvent.action == "dimse.find")).all()
    assert len(finds) == 6 and finds[0].detail["calling_ae"] == "FINDSCU"


@pytest.mark.slow
@needs_dcmtk
def test_findscu_refuses_a_level_its_model_lacks(dimse: DimseServer) -> None:
    bad = dcmtk("findscu", "-d", "-aec", AE_TITLE, "127.0.0.1", dimse.port, "-S",
                "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID")  # fmt: skip
    output = bad.stdout + bad.stderr
    assert "0xa900" in output.lower() and "QueryRetrieveLevel PATIENT is not one of" in output


@pytest.mark.slow
@needs_dcmtk
def test_findscu_refuses_a_malformed_date_and_matches_an_empty_key_universally(
    dimse: DimseServer, series_files: list[Path], tmp_path: Path
) -> None:
    """A date key not in DICOM's form is refused (A900 with the reason), not matched against
    nothing; an empty key matches everything and is returned."""
    store_series(dimse, series_files[:1])
    first = dcmread(series_files[0], stop_before_pixels=True)
    bad = dcmtk("findscu", "-d", "-aec", AE_TITLE, "127.0.0.1", dimse.port, "-S",
                "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyDate=2020-01-01")  # fmt: skip
    output = bad.stdout + bad.stderr
    assert "0xa900" in output.lower() and "YYYYMMDD" in output
    found = find(dimse, tmp_path, "QueryRetrieveLevel=STUDY", "StudyDate=", "PatientName=",
                 "StudyInstanceUID")  # fmt: skip
    assert [f["StudyInstanceUID"] for f in found] == [str(first.StudyInstanceUID)]
    assert found[0]["StudyDate"] == str(first.StudyDate)


@pytest.mark.slow
@needs_dcmtk
@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns of "*" as a UID or IS value
def test_findscu_takes_a_lone_star_as_universal_matching_for_any_vr(
    dimse: DimseServer, series_files: list[Path], tmp_path: Path
) -> None:
    """A lone * matches everything (PS3.4 C.2.2.2.4), also for a UID or a number key: it is
    not compared with the value "*" (no match) nor refused as not a number."""
    store_series(dimse, series_files[:1])
    first = dcmread(series_files[0], stop_before_pixels=True)
    studies = find(dimse, tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID=*")
    assert [s["StudyInstanceUID"] for s in studies] == [str(first.StudyInstanceUID)]
    series = find(dimse, tmp_path, "QueryRetrieveLevel=SERIES", "SeriesInstanceUID",
                  "SeriesNumber=*")  # fmt: skip
    assert [(s["SeriesInstanceUID"], s["SeriesNumber"]) for s in series] == [
        (str(first.SeriesInstanceUID), str(first.SeriesNumber))
    ]


def test_a_sequence_return_key_is_no_unsupported_match_key(
    dimse: DimseServer, series_files: list[Path]
) -> None:
    """A sequence with one empty item asks for the sequence to be returned (PS3.4
    C.2.2.2.6): the matches are plain pending (FF00); only a sequence item with a value,
    which is not matched on, makes them pending with a warning (FF01)."""
    store_series(dimse, series_files[:1])
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=AE_TITLE)
    assert assoc.is_established
    statuses = []
    try:
        for code in ("", "P1"):
            item = Dataset()
            item.CodeValue = code
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = ""
            query.ProcedureCodeSequence = [item]
            answers = assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
            statuses.append([int(answer.Status) for answer, _ in answers])
    finally:
        assoc.release()
    assert statuses == [[0xFF00, 0x0000], [0xFF01, 0x0000]]


@pytest.mark.slow
@needs_dcmtk
def test_getscu_retrieves_a_series_and_a_compressed_instance(
    dimse: DimseServer, series_files: list[Path], tmp_path: Path
) -> None:
    rle = Path(get_testdata_file("MR_small_RLE.dcm"))
    store_series(dimse, series_files)
    store_series(dimse, [rle], TEST_FILES[rle.name])
    first = dcmread(series_files[0], stop_before_pixels=True)
    out = tmp_path / "got"
    out.mkdir()
    scu("getscu", dimse, "-S", "-od", out, "-k", "QueryRetrieveLevel=SERIES",
        "-k", f"StudyInstanceUID={first.StudyInstanceUID}",
        "-k", f"SeriesInstanceUID={first.SeriesInstanceUID}")  # fmt: skip
    originals = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, series_files)}
    got = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, out.iterdir())}
    assert got.keys() == originals.keys()
    for uid, ds in got.items():
        np.testing.assert_array_equal(ds.pixel_array, originals[uid].pixel_array)

    original = dcmread(rle)
    scu("getscu", dimse, "-S", "-od", out, "-k", "QueryRetrieveLevel=IMAGE",
        "-k", f"StudyInstanceUID={original.StudyInstanceUID}",
        "-k", f"SeriesInstanceUID={original.SeriesInstanceUID}",
        "-k", f"SOPInstanceUID={original.SOPInstanceUID}")  # fmt: skip
    retrieved = dcmread(next(out.glob(f"*{original.SOPInstanceUID}*")))
    np.testing.assert_array_equal(retrieved.pixel_array, original.pixel_array)


@pytest.mark.slow
@needs_dcmtk
@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns of the excess pixel data
def test_padded_pixel_data_is_stored_and_retrieved_bit_for_bit(
    dimse: DimseServer, tmp_path: Path
) -> None:
    padded = Path(get_testdata_file("MR_small_padded.dcm"))  # 128 bytes after its frame
    store_series(dimse, [padded])
    original = dcmread(padded)
    out = tmp_path / "got"
    out.mkdir()
    scu("getscu", dimse, "-S", "-od", out, "-k", "QueryRetrieveLevel=IMAGE",
        "-k", f"StudyInstanceUID={original.StudyInstanceUID}",
        "-k", f"SeriesInstanceUID={original.SeriesInstanceUID}",
        "-k", f"SOPInstanceUID={original.SOPInstanceUID}")  # fmt: skip
    retrieved = dcmread(next(out.glob(f"*{original.SOPInstanceUID}*")))
    assert retrieved["PixelData"].VR == original["PixelData"].VR
    assert retrieved.PixelData == original.PixelData  # the padding included


@pytest.mark.slow
@needs_dcmtk
def test_movescu_sends_to_a_known_destination_only(
    dimse: DimseServer, runtime: Runtime, series_files: list[Path], tmp_path: Path,
    destination_port: int,
) -> None:  # fmt: skip
    rle = Path(get_testdata_file("MR_small_RLE.dcm"))
    store_series(dimse, series_files)
    store_series(dimse, [rle], TEST_FILES[rle.name])
    first, compressed = dcmread(series_files[0]), dcmread(rle)
    study = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={first.StudyInstanceUID}"]
    image = ["-k", "QueryRetrieveLevel=IMAGE",
             "-k", f"StudyInstanceUID={compressed.StudyInstanceUID}",
             "-k", f"SeriesInstanceUID={compressed.SeriesInstanceUID}",
             "-k", f"SOPInstanceUID={compressed.SOPInstanceUID}"]  # fmt: skip
    received = tmp_path / "received"
    received.mkdir()
    # storescp accepts uncompressed syntaxes only: HTJ2K and RLE frames are decoded to send.
    storescp = subprocess.Popen(
        ["storescp", "-aet", DESTINATION, "-od", str(received), str(destination_port)],
        env={**os.environ, "TCP_NODELAY": "1"}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_port(destination_port)
        scu("movescu", dimse, "-S", "-aem", DESTINATION, *study)
        scu("movescu", dimse, "-S", "-aem", DESTINATION, *image)
    finally:
        storescp.terminate()
        storescp.wait(timeout=10)
    originals = {str(ds.SOPInstanceUID): ds for ds in [*map(dcmread, series_files), compressed]}
    arrived = {str(ds.SOPInstanceUID): ds for ds in map(dcmread, received.iterdir())}
    assert arrived.keys() == originals.keys()
    for uid, ds in arrived.items():
        np.testing.assert_array_equal(ds.pixel_array, originals[uid].pixel_array)

    unknown = dcmtk("movescu", "-aec", AE_TITLE, "-S", "-aem", "NOWHERE", "127.0.0.1",
                    dimse.port, *study)  # fmt: skip
    output = (unknown.stdout + unknown.stderr).lower()
    assert "movedestinationunknown" in output, output
    with session_scope(runtime.database_url) as db:
        moves = db.scalars(select(AuditEvent).where(AuditEvent.action == "dimse.move")).all()
    assert sorted((m.detail["destination"], m.detail["instances"]) for m in moves) == [
        (DESTINATION, 1), (DESTINATION, 8)
    ]  # fmt: skip


@pytest.mark.slow
@needs_dcmtk
def test_retrieves_without_their_unique_key_fail(dimse: DimseServer, tmp_path: Path) -> None:
    get = dcmtk("getscu", "-d", "-aec", AE_TITLE, "-S", "127.0.0.1", dimse.port,
                "-k", "QueryRetrieveLevel=SERIES", cwd=tmp_path)  # fmt: skip
    output = get.stdout + get.stderr
    assert "0xa900" in output and "SeriesInstanceUID is required" in output, output[-3000:]
    move = dcmtk("movescu", "-d", "-aec", AE_TITLE, "-S", "-aem", DESTINATION, "127.0.0.1",
                 dimse.port, "-k", "QueryRetrieveLevel=STUDY")  # fmt: skip
    output = move.stdout + move.stderr
    assert "0xa900" in output, output[-3000:]
    assert "StudyInstanceUID is required to retrieve at STUDY level" in output, output[-3000:]


@pytest.mark.slow
@needs_dcmtk
def test_a_retrieve_takes_no_wildcards_in_its_keys(
    dimse: DimseServer, series_files: list[Path], tmp_path: Path
) -> None:
    """A retrieve names its patient exactly (PS3.4 C.4.3.2.1): PatientID=* or a prefix with
    a wildcard must not send every patient of the archive."""
    store_series(dimse, series_files)
    patient_root = ["-P", "-k", "QueryRetrieveLevel=PATIENT"]
    for pattern in ("*", "DIMSE*", "DIMSE?0001"):
        out = tmp_path / f"got-{len(pattern)}"
        out.mkdir()
        result = dcmtk("getscu", "-d", "-aec", AE_TITLE, "127.0.0.1", dimse.port, "-od", out,
                       *patient_root, "-k", f"PatientID={pattern}")  # fmt: skip
        assert list(out.iterdir()) == [], (result.stdout + result.stderr)[-3000:]
    out = tmp_path / "exact"
    out.mkdir()
    scu("getscu", dimse, "-od", out, *patient_root, "-k", f"PatientID={PATIENT.patient_id}")
    assert len(list(out.iterdir())) == len(series_files)


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns of "1.2.*" as a UID
@pytest.mark.parametrize("get", [True, False], ids=["C-GET", "C-MOVE"])
@pytest.mark.parametrize(
    ("keys", "comment", "offending"),
    [
        ({"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": "1.2.3"},
         "SeriesInstanceUID is required to retrieve at SERIES level", 0x0020000E),
        ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.3", "SOPInstanceUID": "1.2.4"},
         "SOPInstanceUID needs QueryRetrieveLevel IMAGE, not STUDY", 0x00080018),
        ({"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.*"},
         "StudyInstanceUID takes no wildcards (* or ?) in a retrieve", 0x0020000D),
        ({"StudyInstanceUID": "1.2.3"},
         "QueryRetrieveLevel (missing) is not one of STUDY, SERIES, IMAGE", 0x00080052),
    ],
    ids=["missing", "lower level", "wildcard", "no level"],
)  # fmt: skip
def test_a_refused_retrieve_says_which_key_is_wrong(
    dimse: DimseServer, get: bool, keys: dict[str, str], comment: str, offending: int
) -> None:
    """A retrieve whose identifier does not name what to send is refused with 0xA900, an
    Error Comment saying which key is wrong and how, and that key as the Offending Element;
    no sub-operation is counted and a C-MOVE destination is not contacted (none listens)."""
    query = Dataset()
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    assoc = _retriever(get=get).associate("127.0.0.1", dimse.port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        answers = list(
            assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet) if get
            else assoc.send_c_move(query, DESTINATION, StudyRootQueryRetrieveInformationModelMove)
        )  # fmt: skip
    finally:
        assoc.release()
    [(answer, _)] = answers
    assert int(answer.Status) == 0xA900
    assert answer.ErrorComment == comment
    assert answer.OffendingElement == offending
    assert _counts(answer)[:3] == (0, 0, 0)


def _wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"storescp did not listen on port {port}")


@pytest.mark.slow
@needs_dcmtk
def test_a_second_instance_under_an_acknowledged_uid_is_refused_not_the_first(
    dimse: DimseServer, runtime: Runtime, series_files: list[Path], tmp_path: Path
) -> None:
    """Two objects under one SOPInstanceUID on one association: the first was acknowledged,
    so it is the one kept, and the second is refused (not stored in its place while the
    first waits to be indexed)."""
    changed = dcmread(series_files[0])
    changed.PixelData = bytes(len(changed.PixelData))
    path = tmp_path / "changed.dcm"
    dcmwrite(path, changed, enforce_file_format=True)
    result = dcmtk("storescu", "-v", "-nh", "-aec", AE_TITLE, "-R", "127.0.0.1", dimse.port,
                   series_files[0], path)  # fmt: skip
    output = result.stdout + result.stderr
    responses = [line for line in output.splitlines() if "Received Store Response" in line]
    assert len(responses) == 2 and "Success" in responses[0], output[-3000:]
    assert "DataSetDoesNotMatchSOPClass" in responses[1], output[-3000:]
    assert dimse.flush(timeout=60)
    assert stored_uids(runtime, dimse.archive_id) == [str(changed.SOPInstanceUID)]
    assert not (runtime.settings.home / JOURNAL_FOLDER / str(dimse.archive_id) / "refused").exists()


def test_a_dataset_of_another_sop_class_than_its_request_is_refused(
    dimse: DimseServer, runtime: Runtime, series_files: list[Path]
) -> None:
    """A CT dataset sent as MR Image Storage is refused with 0xA900, not stored under a
    class its sender did not name."""
    ct = dcmread(series_files[0])
    ae = AE(ae_title="MR1")
    ae.add_requested_context(MRImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=AE_TITLE)
    assert assoc.is_established
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = MRImageStorage
    request.AffectedSOPInstanceUID = ct.SOPInstanceUID
    request.Priority = 2
    request.DataSet = BytesIO(encode(ct, False, True) or b"")
    # As `send_c_store` does: the reactor paused so that it leaves the answer to us.
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.001)
    try:
        assoc.dimse.send_msg(request, assoc.accepted_contexts[0].context_id)
        _, answer = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
        assoc.release()
    assert answer is not None and answer.Status == 0xA900
    assert "SOPClassUID of the dataset" in str(answer.ErrorComment)
    assert dimse.flush(timeout=60)
    assert stored_uids(runtime, dimse.archive_id) == []


@pytest.mark.slow
@needs_dcmtk
def test_a_move_to_a_known_destination_that_is_down_is_no_unknown_destination(
    dimse: DimseServer, series_files: list[Path], destination_port: int
) -> None:
    """An integrator tells "not configured" (0xA801) from "configured but not answering":
    the latter fails with 0xA702 and a comment naming the destination and its address."""
    store_series(dimse, series_files[:1])
    first = dcmread(series_files[0], stop_before_pixels=True)
    move = dcmtk("movescu", "-d", "-aec", AE_TITLE, "-S", "-aem", DESTINATION, "127.0.0.1",
                 dimse.port, "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={first.StudyInstanceUID}")  # fmt: skip
    output = move.stdout + move.stderr
    assert "MoveDestinationUnknown" not in output and "0xa801" not in output.lower(), output
    assert "0xa702" in output.lower(), output[-3000:]
    assert f"{DESTINATION} at 127.0.0.1:{destination_port} is not listening" in output, output
    refusing = subprocess.Popen(
        ["storescp", "--refuse", "-aet", DESTINATION, str(destination_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for_port(destination_port)
        move = dcmtk("movescu", "-d", "-aec", AE_TITLE, "-S", "-aem", DESTINATION, "127.0.0.1",
                     dimse.port, "-k", "QueryRetrieveLevel=STUDY",
                     "-k", f"StudyInstanceUID={first.StudyInstanceUID}")  # fmt: skip
    finally:
        refusing.terminate()
        refusing.wait(timeout=10)
    output = move.stdout + move.stderr
    assert "0xa702" in output.lower() and "refused the association" in output, output[-3000:]


def test_a_c_cancel_ends_a_long_c_find_at_once(
    dimse: DimseServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A C-CANCEL sent after the first matches ends the C-FIND with 0xFE00 while most
    matches are still unsent, not after all of them (the peer is on a slow link: the
    matches are found faster than they are sent)."""
    studies = 300
    ae = AE(ae_title="PACS1")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", dimse.port, ae_title=AE_TITLE)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = PATIENT.patient_id
    query.StudyInstanceUID = ""
    query.PatientName = ""
    find_context = _context_id(assoc, StudyRootQueryRetrieveInformationModelFind)
    statuses: list[int] = []
    try:
        for _ in range(studies):
            (ds,) = ct_phantom(slices=1, size=8, patient=PATIENT)
            assert assoc.send_c_store(ds).Status == 0x0000
        assert dimse.flush(timeout=120)
        send = StoreDUL._send

        def slow_send(dul: StoreDUL, pdu: Any) -> None:
            time.sleep(0.001)
            send(dul, pdu)

        monkeypatch.setattr(StoreDUL, "_send", slow_send)
        for answer, _ in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind, msg_id=7
        ):
            statuses.append(int(answer.Status))
            if len(statuses) == 3:
                assoc.send_c_cancel(7, find_context)
    finally:
        assoc.release()
    assert statuses[-1] == 0xFE00, f"{len(statuses)} responses, the last 0x{statuses[-1]:04X}"
    assert len(statuses) < studies // 3


# --- C-GET and C-MOVE: back-pressure and C-CANCEL --------------------------------------------


def _store_datasets(server: DimseServer, datasets: list[Dataset]) -> None:
    """Store `datasets` over one association and wait until they are indexed."""
    ae = AE(ae_title="CT1")
    for sop_class in dict.fromkeys(str(ds.SOPClassUID) for ds in datasets):
        ae.add_requested_context(sop_class, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        assert all(assoc.send_c_store(ds).Status == 0x0000 for ds in datasets)
    finally:
        assoc.release()
    assert server.flush(timeout=120)


class _Receiver:
    """A storage SCP (the C-MOVE destination or the C-GET requester) counting what arrives."""

    def __init__(self) -> None:
        self.received: list[str] = []

    def handle(self, event: Any) -> int:
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000


@contextlib.contextmanager
def _destination(port: int) -> Iterator[_Receiver]:
    receiver = _Receiver()
    ae = AE(ae_title=DESTINATION)
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, receiver.handle)])  # fmt: skip
    try:
        yield receiver
    finally:
        server.shutdown()


def _queue_depths(monkeypatch: pytest.MonkeyPatch, *, delay: float) -> list[int]:
    """Slow down what the server sends (a slow link) and record, at each PDU sent, how many
    more wait to be sent."""
    depths: list[int] = []
    send = StoreDUL._send

    def slow_send(dul: StoreDUL, pdu: Any) -> None:
        depths.append(dul.to_provider_queue.qsize())
        time.sleep(delay)
        send(dul, pdu)

    monkeypatch.setattr(StoreDUL, "_send", slow_send)
    return depths


def _retriever(*, get: bool) -> AE:
    ae = AE(ae_title="VIEWER")
    model = (StudyRootQueryRetrieveInformationModelGet if get
             else StudyRootQueryRetrieveInformationModelMove)  # fmt: skip
    ae.add_requested_context(model)
    if get:
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    return ae


def _series_query(ds: Dataset) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES"
    query.StudyInstanceUID = ds.StudyInstanceUID
    query.SeriesInstanceUID = ds.SeriesInstanceUID
    return query


def test_a_c_get_sends_large_instances_a_few_pdus_at_a_time(
    dimse: DimseServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A C-STORE sub-operation cut into many PDUs for a peer with a small maximum PDU length
    is queued to the socket a bounded number of PDUs at a time, not all at once."""
    datasets = ct_phantom(slices=2, size=512, patient=PATIENT)  # 512 KiB per instance
    _store_datasets(dimse, datasets)
    depths = _queue_depths(monkeypatch, delay=0.0005)
    receiver = _Receiver()
    assoc = _retriever(get=True).associate(
        "127.0.0.1", dimse.port, ae_title=AE_TITLE, max_pdu=4096,  # 128 PDUs an instance
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, receiver.handle)],
    )  # fmt: skip
    assert assoc.is_established
    try:
        answers = [int(s.Status) for s, _ in assoc.send_c_get(
            _series_query(datasets[0]), StudyRootQueryRetrieveInformationModelGet)]  # fmt: skip
    finally:
        assoc.release()
    assert answers[-1] == 0x0000 and len(receiver.received) == len(datasets)
    assert max(depths) <= MAX_UNSENT, f"{max(depths)} PDUs queued at once"


def _counts(answer: Dataset) -> tuple[int, int, int, int]:
    """A C-GET/C-MOVE response's completed, failed, warning and remaining sub-operations."""
    completed, failed, warning, remaining = (
        int(answer.get(f"NumberOf{kind}Suboperations") or 0)
        for kind in ("Completed", "Failed", "Warning", "Remaining")
    )
    return completed, failed, warning, remaining


def test_a_c_move_waits_for_a_slow_requester_and_stops_at_its_c_cancel(
    dimse: DimseServer, monkeypatch: pytest.MonkeyPatch, destination_port: int
) -> None:
    """The pending C-MOVE responses go to the requester as fast as it reads them: while it
    reads nothing, only a bounded number of sub-operations go ahead of it, so its C-CANCEL
    leaves the rest undone, and the Cancel response counts what was done and what was not
    (PS3.4 C.4.2.1.5)."""
    count = MAX_UNSENT * 3
    datasets = ct_phantom(slices=count, size=8, patient=PATIENT)
    _store_datasets(dimse, datasets)
    released = threading.Event()
    send = StoreDUL._send
    depths: list[int] = []

    def held_send(dul: StoreDUL, pdu: Any) -> None:
        released.wait(30)  # the requester reads nothing until then
        depths.append(dul.to_provider_queue.qsize())
        send(dul, pdu)

    assoc = _retriever(get=False).associate("127.0.0.1", dimse.port, ae_title=AE_TITLE)
    assert assoc.is_established
    context = assoc.accepted_contexts[0].context_id
    answers: list[Dataset] = []

    def move() -> None:
        for answer, _ in assoc.send_c_move(
            _series_query(datasets[0]), DESTINATION, StudyRootQueryRetrieveInformationModelMove,
            msg_id=9,
        ):  # fmt: skip
            answers.append(answer)
            if len(answers) == 3:
                assoc.send_c_cancel(9, context)

    with _destination(destination_port) as destination:
        monkeypatch.setattr(StoreDUL, "_send", held_send)
        moving = threading.Thread(target=move)
        moving.start()
        deadline = time.monotonic() + 3  # held this long, or until too many went ahead
        while len(destination.received) <= MAX_UNSENT + 16 and time.monotonic() < deadline:
            time.sleep(0.01)
        ahead = len(destination.received)
        released.set()
        moving.join(60)
        assoc.release()
    assert ahead <= MAX_UNSENT + 4, f"{ahead} sub-operations went ahead of an unread requester"
    assert max(depths) <= MAX_UNSENT
    final = answers[-1]
    assert int(final.Status) == 0xFE00, f"{len(answers)} responses, 0x{int(final.Status):04X}"
    completed, failed, warning, remaining = _counts(final)
    assert completed == len(destination.received) and failed == warning == 0
    assert completed + remaining == count and remaining > count // 3


def test_a_c_cancel_ends_a_long_c_get_with_its_counts(
    dimse: DimseServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A C-CANCEL after the first sub-operations of a C-GET over a slow link ends it with
    0xFE00 while most are still to do, and counts what was done and what was not (PS3.4
    C.4.3.1.5)."""
    count = 200
    datasets = ct_phantom(slices=count, size=8, patient=PATIENT)
    _store_datasets(dimse, datasets)
    _queue_depths(monkeypatch, delay=0.002)
    receiver = _Receiver()
    assoc = _retriever(get=True).associate(
        "127.0.0.1", dimse.port, ae_title=AE_TITLE,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, receiver.handle)],
    )  # fmt: skip
    assert assoc.is_established
    context = _context_id(assoc, StudyRootQueryRetrieveInformationModelGet)
    answers: list[Dataset] = []
    try:
        for answer, _ in assoc.send_c_get(
            _series_query(datasets[0]), StudyRootQueryRetrieveInformationModelGet, msg_id=11
        ):
            answers.append(answer)
            if len(answers) == 3:
                assoc.send_c_cancel(11, context)
    finally:
        assoc.release()
    final = answers[-1]
    assert int(final.Status) == 0xFE00, f"{len(answers)} responses, 0x{int(final.Status):04X}"
    # How many sub-operations end before the cancel is read depends on the machine's load;
    # that some never started, and the counts add up, does not.
    completed, failed, warning, remaining = _counts(final)
    assert completed == len(receiver.received) and failed == warning == 0
    assert completed + remaining == count and remaining > 0


# --- C-FIND: patients and computed study attributes -----------------------------------------


def _c_find(server: DimseServer, query: Dataset, *, patient_root: bool = False) -> list[Dataset]:
    """The identifiers of the matches of a C-FIND (its final status Success)."""
    model = (PatientRootQueryRetrieveInformationModelFind if patient_root
             else StudyRootQueryRetrieveInformationModelFind)  # fmt: skip
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", server.port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        answers = list(assoc.send_c_find(query, model))
    finally:
        assoc.release()
    assert int(answers[-1][0].Status) == 0x0000, answers[-1][0]
    return [identifier for _, identifier in answers[:-1]]


def _patient_study(
    name: str, date: str, *, slices: int, issuer: str | None = None
) -> list[Dataset]:
    datasets = ct_phantom(slices=slices, size=8, patient=PatientInfo(PATIENT.patient_id, name))
    for ds in datasets:
        ds.StudyDate = date
        if issuer is not None:
            ds.IssuerOfPatientID = issuer
    return datasets


def test_a_patient_is_found_once_by_id_and_issuer_whatever_the_names(dimse: DimseServer) -> None:
    """A PATIENT-level C-FIND answers each PatientID and IssuerOfPatientID once, with the
    name of the most recent study and counts over all of that patient's studies; the same
    ID from another issuer is another patient."""
    _store_datasets(dimse, [
        *_patient_study("Dimse^Tset", "20200101", slices=2),  # misspelt, then corrected
        *_patient_study("Dimse^Test", "20230101", slices=3),
        *_patient_study("Other^Person", "20210101", slices=1, issuer="OTHER-HOSPITAL"),
    ])  # fmt: skip

    def find(**keys: str) -> list[tuple[str, ...]]:
        query = Dataset()
        query.QueryRetrieveLevel = "PATIENT"
        query.PatientID = PATIENT.patient_id
        query.IssuerOfPatientID = ""
        query.PatientName = ""
        query.NumberOfPatientRelatedStudies = None
        query.NumberOfPatientRelatedSeries = None
        query.NumberOfPatientRelatedInstances = None
        for keyword, value in keys.items():
            setattr(query, keyword, value)
        return [
            (str(ds.PatientID), str(ds.IssuerOfPatientID or ""), str(ds.PatientName),
             *(str(ds[f"NumberOfPatientRelated{what}"].value)
               for what in ("Studies", "Series", "Instances")))
            for ds in _c_find(dimse, query, patient_root=True)
        ]  # fmt: skip

    patient = (PATIENT.patient_id, "", "Dimse^Test", "2", "2", "5")
    other = (PATIENT.patient_id, "OTHER-HOSPITAL", "Other^Person", "1", "1", "1")
    assert find() == [patient, other]
    assert find(PatientName="dimse^test") == [patient]
    assert find(PatientName="Dimse^Tset") == []  # a patient's name is its latest
    assert find(IssuerOfPatientID="OTHER-HOSPITAL") == [other]

    # A retrieve of the patient with its issuer sends that patient's instances only.
    receiver = _Receiver()
    ae = AE(ae_title="VIEWER")
    ae.add_requested_context(PatientRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(
        "127.0.0.1", dimse.port, ae_title=AE_TITLE,
        ext_neg=[build_role(CTImageStorage, scp_role=True)],
        evt_handlers=[(evt.EVT_C_STORE, receiver.handle)],
    )  # fmt: skip
    query = Dataset()
    query.QueryRetrieveLevel = "PATIENT"
    query.PatientID = PATIENT.patient_id
    query.IssuerOfPatientID = "OTHER-HOSPITAL"
    try:
        answers = list(assoc.send_c_get(query, PatientRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    assert int(answers[-1][0].Status) == 0x0000 and len(receiver.received) == 1


def test_sop_classes_in_study_lists_those_of_its_instances(dimse: DimseServer) -> None:
    """SOPClassesInStudy, asked for at STUDY level, lists the distinct SOP classes of the
    study's instances."""
    datasets = ct_phantom(slices=2, size=8, patient=PATIENT)
    mr = copy.deepcopy(datasets[0])
    mr.SOPClassUID = mr.file_meta.MediaStorageSOPClassUID = MRImageStorage
    mr.SOPInstanceUID = mr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    mr.SeriesInstanceUID, mr.Modality = generate_uid(), "MR"
    _store_datasets(dimse, [*datasets, mr])
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.SOPClassesInStudy = ""
    query.ModalitiesInStudy = ""
    [study] = _c_find(dimse, query)
    assert list(study.SOPClassesInStudy) == sorted([CTImageStorage, MRImageStorage])
    assert list(study.ModalitiesInStudy) == ["CT", "MR"]
