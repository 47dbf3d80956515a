"""Storage Commitment Push Model SCP (PS3.4 Annex J): the archive takes responsibility.

A modality that sent its images asks, with an N-ACTION listing their SOP Instance UIDs,
whether the archive now keeps them safe; only then may it delete its own copies. The
request is accepted at once; once the instances acknowledged so far are indexed, each one
asked for is looked up in the archive, and the answer (an N-EVENT-REPORT: all committed,
or some failed with the reason) goes to the requesting AE on an association of its own, at
the address `dicom_remote_aes` gives for its AE title (PS3.4 J.3.3 lets the report come on
another association; most modalities expect that). A modality that does not answer is
tried again a few times. A requesting AE with no address configured is refused at once
(0x0110, with the reason), so that it does not wait for a report that cannot come.

With `same_association` (`dicom_commitment_same_association`), the report is first sent
on the requesting association if the modality still holds it open, as some modalities wait
for it there; one that has released it gets the report on a new association as above. An
AE with no address is then accepted: it gets its report if it waits for it. Each request
and report is in the audit log, with the association the report went on.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pydicom import uid
from pydicom.dataset import Dataset
from pynetdicom import AE, build_context, build_role
from pynetdicom.association import Association
from pynetdicom.events import Event
from sqlalchemy import select

from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.store.dimse.common import Peer, record, status
from voxelhub.store.dimse.contexts import STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
from voxelhub.store.models import Instance

logger = logging.getLogger(__name__)

REQUEST_COMMITMENT = 1  # Action Type ID of a Storage Commitment Request (PS3.4 J.3.2)
ALL_COMMITTED, SOME_FAILED = 1, 2  # Event Type IDs of the report (PS3.4 J.3.3)
# Failure Reason (0008,1197) values (PS3.3 C.14.1.1).
NO_SUCH_OBJECT = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
# N-ACTION statuses (PS3.7 Annex C).
PROCESSING_FAILURE = 0x0110
NO_SUCH_ACTION = 0x0123
MISSING_ATTRIBUTE = 0x0120
INVALID_ATTRIBUTE_VALUE = 0x0106
FLUSH_TIMEOUT_S = 60.0
REPORT_ATTEMPTS = 3
RETRY_AFTER_S = 5.0


@dataclass(frozen=True)
class Request:
    """One storage commitment request: who asked, and for which instances."""

    calling_ae: str
    transaction_uid: str
    instances: tuple[tuple[str, str], ...]  # (SOP Class UID, SOP Instance UID)
    address: tuple[str, int] | None  # None: the report can come on its association only


class CommitmentService:
    """The N-ACTION handler of one DIMSE server, and the reports it sends afterwards."""

    def __init__(
        self,
        runtime: Runtime,
        archive_id: uuid.UUID,
        *,
        ae_title: str,
        remote_aes: Mapping[str, tuple[str, int]],
        flush: Callable[[float], bool],
        retry_after_s: float | None = None,
        same_association: bool = False,
    ) -> None:
        self._runtime, self._archive_id = runtime, archive_id
        self._ae_title, self._remote_aes = ae_title, remote_aes
        self._flush = flush
        self._same_association = same_association
        self._retry_after_s = RETRY_AFTER_S if retry_after_s is None else retry_after_s
        self._reports = ThreadPoolExecutor(max_workers=2, thread_name_prefix="dimse-commitment")

    def handle_action(self, event: Event) -> tuple[Dataset | int, Dataset | None]:
        peer = Peer.of(event)
        requested = getattr(event.request, "RequestedSOPInstanceUID", None)
        if str(requested) != STORAGE_COMMITMENT_INSTANCE:
            return status(INVALID_ATTRIBUTE_VALUE, "the SOP instance must be the well-known "
                          f"{STORAGE_COMMITMENT_INSTANCE}"), None  # fmt: skip
        if event.action_type != REQUEST_COMMITMENT:
            return status(NO_SUCH_ACTION, f"no action type {event.action_type}; "
                          "1 requests storage commitment"), None  # fmt: skip
        try:
            request = self._request(peer, event.action_information)
        except _Refused as refused:
            logger.warning("storage commitment from %s refused: %s", peer.calling_ae,
                           refused.answer.ErrorComment)  # fmt: skip
            return refused.answer, None
        with session_scope(self._runtime.database_url) as db:
            record(db, "dimse.commitment_request", self._archive_id, peer,
                   transaction_uid=request.transaction_uid,
                   instances=len(request.instances))  # fmt: skip
        self._reports.submit(self._report, request, event.assoc)
        return 0x0000, None

    def _request(self, peer: Peer, information: Dataset | None) -> Request:
        address = self._remote_aes.get(peer.calling_ae)
        if address is None and not self._same_association:
            raise _Refused(status(PROCESSING_FAILURE, f"no address for AE {peer.calling_ae}: "
                                  "add it to dicom_remote_aes"))  # fmt: skip
        transaction = str((information or Dataset()).get("TransactionUID", "") or "")
        items = (information or Dataset()).get("ReferencedSOPSequence")
        if not transaction or items is None:
            raise _Refused(status(MISSING_ATTRIBUTE, "the request needs TransactionUID "
                                  "and ReferencedSOPSequence"))  # fmt: skip
        instances = []
        for item in items:
            sop_class = str(item.get("ReferencedSOPClassUID", "") or "")
            sop_instance = str(item.get("ReferencedSOPInstanceUID", "") or "")
            if not (sop_class and sop_instance):
                raise _Refused(status(MISSING_ATTRIBUTE, "each ReferencedSOPSequence item "
                                      "needs its SOP Class and Instance UIDs"))  # fmt: skip
            instances.append((sop_class, sop_instance))
        return Request(peer.calling_ae, transaction, tuple(instances), address)

    def report_for(self, request: Request) -> tuple[int, Dataset]:
        """The event type and the report: each instance asked for, committed or not."""
        if not self._flush(FLUSH_TIMEOUT_S):
            logger.warning("storage commitment checked before every acknowledged C-STORE "
                           "is indexed")  # fmt: skip
        wanted = [sop_instance for _, sop_instance in request.instances]
        with session_scope(self._runtime.database_url) as db:
            rows = db.execute(
                select(Instance.sop_instance_uid, Instance.sop_class_uid).where(
                    Instance.archive_id == self._archive_id,
                    Instance.sop_instance_uid.in_(wanted),
                )
            )
            held = {sop_instance: sop_class for sop_instance, sop_class in rows}
        report = Dataset()
        report.TransactionUID = request.transaction_uid
        report.RetrieveAETitle = self._ae_title
        committed, failed = [], []
        for sop_class, sop_instance in request.instances:
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = sop_instance
            found = held.get(sop_instance)
            if found == sop_class:
                committed.append(item)
                continue
            item.FailureReason = NO_SUCH_OBJECT if found is None else CLASS_INSTANCE_CONFLICT
            failed.append(item)
        if committed:
            report.ReferencedSOPSequence = committed
        if failed:
            report.FailedSOPSequence = failed
        return (SOME_FAILED if failed else ALL_COMMITTED), report

    def _report(self, request: Request, requesting: Association | None = None) -> None:
        try:
            event_type, report = self.report_for(request)
        except Exception:
            logger.exception("storage commitment %s could not be checked", request.transaction_uid)
            return
        delivered, why, on = False, "", "new"
        if self._same_association and requesting is not None:
            delivered, why = _send_on(requesting, event_type, report)
            on = "same"
        address = None if delivered else request.address
        if address is not None:
            on = "new"
            for attempt in range(REPORT_ATTEMPTS):
                if attempt:
                    time.sleep(self._retry_after_s)
                delivered, why = self._send(request.calling_ae, address, event_type, report)
                if delivered:
                    break
                logger.warning(
                    "storage commitment report %s to %s not delivered (try %d): %s",
                    request.transaction_uid, request.calling_ae, attempt + 1, why,
                )  # fmt: skip
        where = f"{request.address[0]}:{request.address[1]}" if request.address else ""
        with session_scope(self._runtime.database_url) as db:
            record(db, "dimse.commitment_report", self._archive_id,
                   Peer(request.calling_ae, where), transaction_uid=request.transaction_uid,
                   committed=len(report.get("ReferencedSOPSequence", [])),
                   failed=len(report.get("FailedSOPSequence", [])),
                   delivered=delivered, association=on, problem=why)  # fmt: skip

    def _send(
        self, calling_ae: str, address: tuple[str, int], event_type: int, report: Dataset
    ) -> tuple[bool, str]:
        ae = AE(ae_title=self._ae_title)
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 30
        context = build_context(STORAGE_COMMITMENT, [uid.ExplicitVRLittleEndian,
                                                     uid.ImplicitVRLittleEndian])  # fmt: skip
        # This side performs the SCP role of the SOP class on an association it requests.
        role = build_role(STORAGE_COMMITMENT, scp_role=True)
        host, port = address
        assoc = ae.associate(host, port, contexts=[context], ae_title=calling_ae,
                             ext_neg=[role])  # fmt: skip
        if not assoc.is_established:
            return False, f"no association with {calling_ae} at {host}:{port}"
        try:
            answer, _ = assoc.send_n_event_report(
                report, event_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
            )
        finally:
            assoc.release()
        return _answered(answer)

    def close(self) -> None:
        self._reports.shutdown(wait=False, cancel_futures=False)


def _send_on(assoc: Association, event_type: int, report: Dataset) -> tuple[bool, str]:
    """Send the report on the association the request came on, if the modality still holds
    it open (pynetdicom pauses the association's own thread while it waits for the answer)."""
    if not assoc.is_established:
        return False, "the requesting association was closed before the report was ready"
    try:
        answer, _ = assoc.send_n_event_report(
            report, event_type, STORAGE_COMMITMENT, STORAGE_COMMITMENT_INSTANCE
        )
    except (RuntimeError, ValueError) as err:  # released meanwhile, or no usable context
        return False, f"not sent on the requesting association: {err}"
    return _answered(answer)


def _answered(answer: Dataset | None) -> tuple[bool, str]:
    code = answer.get("Status") if answer is not None else None
    if code != 0x0000:
        return False, f"the N-EVENT-REPORT was answered with status {code}"
    return True, ""


class _Refused(Exception):
    def __init__(self, answer: Dataset) -> None:
        super().__init__(str(answer.ErrorComment))
        self.answer = answer
