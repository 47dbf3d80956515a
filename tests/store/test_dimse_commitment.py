"""Storage Commitment Push Model: a modality asks whether its images are safe, and is told."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, MRImageStorage, StorageCommitmentPushModel
from sqlalchemy import select

from tests.store.test_dimse import archive_name, free_port  # noqa: F401 - a fixture
from voxelhub.auth.models import AuditEvent
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.dicom.synthetic import ct_phantom
from voxelhub.store.dimse import DimseConfig, DimseServer, commit_scp, start_dimse
from voxelhub.store.dimse.commit_scp import NO_SUCH_OBJECT, STORAGE_COMMITMENT_INSTANCE

MODALITY = "MODALITY"


class Modality:
    """A modality: it stores, asks for commitment and listens for the report, as pynetdicom
    (a real implementation of the protocol) does it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.stopped = False
        self.reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()
        self.ae = AE(ae_title=MODALITY)
        # The archive performs the SCP role of the SOP class on the association it opens.
        self.ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        self.ae.add_requested_context(StorageCommitmentPushModel)
        self.ae.add_requested_context(CTImageStorage)

        def report(event: evt.Event) -> tuple[int, None]:
            self.reports.put((int(event.event_type), event.event_information))
            return 0x0000, None

        self.server = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, report)]
        )

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.server.shutdown()

    def request(self, server: DimseServer, instances: list[tuple[str, str]],
                transaction: str | None = None) -> Dataset:  # fmt: skip
        action = Dataset()
        if transaction is not None:
            action.TransactionUID = transaction
        items = []
        for sop_class, sop_instance in instances:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            items.append(item)
        action.ReferencedSOPSequence = items
        assoc = self.ae.associate("127.0.0.1", server.port, ae_title="VOXELHUB")
        assert assoc.is_established
        try:
            answer, _ = assoc.send_n_action(
                action, 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
            )
        finally:
            assoc.release()
        return answer

    def store(self, server: DimseServer, datasets: list[Dataset]) -> None:
        assoc = self.ae.associate("127.0.0.1", server.port, ae_title="VOXELHUB")
        assert assoc.is_established
        try:
            for ds in datasets:
                assert assoc.send_c_store(ds).Status == 0x0000
        finally:
            assoc.release()


@pytest.fixture
def modality() -> Iterator[Modality]:
    made = Modality()
    yield made
    made.stop()


@pytest.fixture
def dimse(runtime: Runtime, archive_name: str, modality: Modality) -> Iterator[DimseServer]:  # noqa: F811
    config = DimseConfig(archive=archive_name, ae_title="VOXELHUB", port=0,
                         remote_aes={MODALITY: ("127.0.0.1", modality.port)})  # fmt: skip
    with start_dimse(runtime, config) as server:
        yield server


def test_the_report_names_what_is_kept_and_what_is_not(
    dimse: DimseServer, modality: Modality, runtime: Runtime
) -> None:
    series = ct_phantom(slices=3, size=32)
    modality.store(dimse, series)  # answered before indexing: the report waits for it
    kept = [(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in series]
    unknown = (CTImageStorage, generate_uid())
    wrong_class = (MRImageStorage, str(series[0].SOPInstanceUID))
    transaction = generate_uid()
    answer = modality.request(dimse, [*kept, unknown, wrong_class], transaction)
    assert answer.Status == 0x0000

    event_type, report = modality.reports.get(timeout=60)
    assert event_type == 2  # some failed
    assert report.TransactionUID == transaction
    assert report.RetrieveAETitle == "VOXELHUB"
    committed = [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID)
                 for i in report.ReferencedSOPSequence]  # fmt: skip
    assert committed == kept
    failed = {(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID): i.FailureReason
              for i in report.FailedSOPSequence}  # fmt: skip
    assert failed == {unknown: NO_SUCH_OBJECT, wrong_class: 0x0119}

    # Everything asked for is kept: event type 1, no failed sequence.
    modality.request(dimse, kept, generate_uid())
    event_type, report = modality.reports.get(timeout=60)
    assert event_type == 1 and "FailedSOPSequence" not in report

    deadline = time.monotonic() + 30  # a report is recorded once it was delivered
    while True:
        with session_scope(runtime.database_url) as db:
            actions = list(db.scalars(select(AuditEvent.action).where(
                AuditEvent.action.like("dimse.commitment%"))))  # fmt: skip
        if actions.count("dimse.commitment_report") == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert actions.count("dimse.commitment_request") == 2
    assert actions.count("dimse.commitment_report") == 2


def test_requests_that_cannot_be_answered_are_refused_with_the_reason(
    dimse: DimseServer, modality: Modality
) -> None:
    answer = modality.request(dimse, [(CTImageStorage, generate_uid())], transaction=None)
    assert answer.Status == 0x0120
    assert "TransactionUID" in answer.ErrorComment
    stranger = AE(ae_title="UNKNOWN")
    stranger.add_requested_context(StorageCommitmentPushModel)
    assoc = stranger.associate("127.0.0.1", dimse.port, ae_title="VOXELHUB")
    action = Dataset()
    action.TransactionUID = generate_uid()
    action.ReferencedSOPSequence = []
    try:
        refused, _ = assoc.send_n_action(
            action, 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
        )
    finally:
        assoc.release()
    assert refused.Status == 0x0110
    assert "dicom_remote_aes" in refused.ErrorComment or "UNKNOWN" in refused.ErrorComment
    assert modality.reports.empty()


def test_a_report_the_modality_does_not_take_is_tried_again_and_recorded(
    dimse: DimseServer, modality: Modality, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commit_scp, "RETRY_AFTER_S", 0.2)
    modality.stop()  # the modality went away after asking
    answer = modality.request(dimse, [(CTImageStorage, generate_uid())], generate_uid())
    assert answer.Status == 0x0000
    deadline = time.monotonic() + 60
    detail = None
    while detail is None and time.monotonic() < deadline:
        with session_scope(runtime.database_url) as db:
            detail = db.scalar(select(AuditEvent.detail).where(
                AuditEvent.action == "dimse.commitment_report"))  # fmt: skip
        time.sleep(0.2)
    assert detail is not None
    assert detail["delivered"] is False
    assert "no association with MODALITY" in detail["problem"]


@pytest.fixture
def same_association(
    runtime: Runtime,
    archive_name: str,  # noqa: F811
    modality: Modality,
) -> Iterator[DimseServer]:
    config = DimseConfig(archive=archive_name, ae_title="VOXELHUB", port=0,
                         remote_aes={MODALITY: ("127.0.0.1", modality.port)},
                         commitment_same_association=True)  # fmt: skip
    with start_dimse(runtime, config) as server:
        yield server


def _report_details(runtime: Runtime, count: int) -> list[dict]:  # type: ignore[type-arg]
    deadline = time.monotonic() + 60
    while True:
        with session_scope(runtime.database_url) as db:
            details = list(db.scalars(select(AuditEvent.detail).where(
                AuditEvent.action == "dimse.commitment_report")))  # fmt: skip
        if len(details) >= count or time.monotonic() > deadline:
            return details
        time.sleep(0.2)


def test_a_modality_that_waits_on_its_association_gets_the_report_there(
    same_association: DimseServer, modality: Modality, runtime: Runtime
) -> None:
    series = ct_phantom(slices=2, size=16)
    modality.store(same_association, series)
    kept = [(str(ds.SOPClassUID), str(ds.SOPInstanceUID)) for ds in series]

    # An AE the archive has no address for: the report can only come on its association.
    waiting = AE(ae_title="WAITING")
    waiting.add_requested_context(StorageCommitmentPushModel)
    reports: queue.Queue[tuple[int, Dataset]] = queue.Queue()

    def report(event: evt.Event) -> tuple[int, None]:
        reports.put((int(event.event_type), event.event_information))
        return 0x0000, None

    assoc = waiting.associate("127.0.0.1", same_association.port, ae_title="VOXELHUB",
                              evt_handlers=[(evt.EVT_N_EVENT_REPORT, report)])  # fmt: skip
    assert assoc.is_established
    action = Dataset()
    action.TransactionUID = transaction = generate_uid()
    action.ReferencedSOPSequence = []
    for sop_class, sop_instance in kept:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
        action.ReferencedSOPSequence.append(item)
    try:
        answer, _ = assoc.send_n_action(
            action, 1, StorageCommitmentPushModel, STORAGE_COMMITMENT_INSTANCE
        )
        assert answer.Status == 0x0000
        event_type, got = reports.get(timeout=60)  # while the association is still open
    finally:
        assoc.release()
    assert event_type == 1 and got.TransactionUID == transaction
    assert [(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID)
            for i in got.ReferencedSOPSequence] == kept  # fmt: skip
    assert modality.reports.empty()  # nothing came on a new association

    # A modality that released its association at once gets it on a new one, as before.
    modality.request(same_association, kept, generate_uid())
    event_type, _ = modality.reports.get(timeout=60)
    assert event_type == 1
    details = _report_details(runtime, 2)
    assert sorted((d["delivered"], d["association"]) for d in details) == [
        (True, "new"),
        (True, "same"),
    ]
