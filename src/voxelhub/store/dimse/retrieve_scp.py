"""C-GET and C-MOVE SCP: send the matching instances over the same or a new association."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse_messages import C_GET_RSP, C_MOVE_RSP
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext

from voxelhub.core.db import session_scope
from voxelhub.core.errors import VoxelhubError
from voxelhub.core.runtime import Runtime
from voxelhub.store.dimse.common import (
    CANCELLED,
    CANNOT_UNDERSTAND,
    DATASET_DOES_NOT_MATCH,
    MOVE_DESTINATION_UNKNOWN,
    PENDING,
    SUBOPERATIONS_IMPOSSIBLE,
    SUCCESS,
    Peer,
    record,
    status,
)
from voxelhub.store.dimse.contexts import PATIENT_ROOT, proposed_contexts
from voxelhub.store.dimse.identifier import IdentifierError, check_retrieve, parse_identifier
from voxelhub.store.dimse.retrieve import (
    UNCOMPRESSED,
    accepted_syntaxes,
    instance_dataset,
    matching_instances,
    offers,
    target_syntax,
    unsendable,
)
from voxelhub.store.models import Instance

logger = logging.getLogger(__name__)

MAX_CONTEXTS = 128  # PS3.8 9.3.2: presentation context IDs are odd numbers 1-255


class _Refused(Exception):
    """A retrieve that cannot start; `answer` is the failure status to send."""

    def __init__(self, answer: Dataset) -> None:
        super().__init__(str(answer.ErrorComment))
        self.answer = answer


class RetrieveService:
    """The C-GET and C-MOVE handlers of one DIMSE server."""

    def __init__(
        self, runtime: Runtime, archive_id: uuid.UUID, *, remote_aes: Mapping[str, tuple[str, int]]
    ) -> None:
        self._runtime = runtime
        self._archive_id = archive_id
        self._remote_aes = remote_aes

    def handle_get(self, event: Event) -> Iterator[Any]:
        try:
            instances = self._instances(event, "dimse.get")
        except _Refused as refused:
            yield from _refuse(event, refused.answer)
            return
        yield len(instances)
        accepted = accepted_syntaxes(event.assoc.accepted_contexts)
        yield from self._send(event, instances, accepted)

    def handle_move(self, event: Event) -> Iterator[Any]:
        destination = (event.move_destination or "").strip()
        address = self._remote_aes.get(destination)
        if address is None:
            logger.warning(
                "C-MOVE from %s to unknown destination AE %r refused; known: %s",
                Peer.of(event).calling_ae, destination, ", ".join(self._remote_aes) or "none",
            )  # fmt: skip
            yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
            return
        try:
            instances = self._instances(event, "dimse.move", destination=destination)
        except _Refused as refused:
            yield address  # not contacted: pynetdicom associates only for sub-operations
            yield from _refuse(event, refused.answer)
            return
        established: list[Collection[PresentationContext]] = []
        connected: list[bool] = []

        def capture(sub: Event) -> None:
            established.append(sub.assoc.accepted_contexts)

        def opened(_: Event) -> None:
            connected.append(True)

        handlers = [(evt.EVT_ESTABLISHED, capture), (evt.EVT_CONN_OPEN, opened)]
        options = {"contexts": _move_contexts(instances), "max_pdu": 0, "evt_handlers": handlers}
        explain = _unreachable_answer(event, destination, address, connected)
        try:
            yield (*address, options)
            yield len(instances)  # pynetdicom associates with the destination after this
        finally:
            event.assoc.unbind(evt.EVT_DIMSE_SENT, explain)
        accepted = accepted_syntaxes(established[0] if established else ())
        yield from self._send(event, instances, accepted)

    def _instances(self, event: Event, action: str, **detail: Any) -> list[Instance]:
        patient_root = str(event.request.AffectedSOPClassUID) in PATIENT_ROOT
        try:
            ident = parse_identifier(event.identifier, patient_root=patient_root)
            check_retrieve(ident)
            with session_scope(self._runtime.database_url) as db:
                instances = matching_instances(db, ident, self._archive_id)
                record(db, action, self._archive_id, Peer.of(event), level=ident.level,
                       instances=len(instances), **detail)  # fmt: skip
        except IdentifierError as err:
            answer = status(DATASET_DOES_NOT_MATCH, str(err), offending=err.offending)
            raise _Refused(answer) from err
        except VoxelhubError as err:
            raise _Refused(status(CANNOT_UNDERSTAND, err.message)) from err
        except Exception as err:  # an identifier pydicom cannot decode
            logger.warning("unreadable retrieve identifier", exc_info=True)
            raise _Refused(status(DATASET_DOES_NOT_MATCH, f"unreadable identifier: {err}")) from err
        return instances

    def _send(
        self, event: Event, instances: list[Instance], accepted: dict[str, set[str]]
    ) -> Iterator[tuple[int, Dataset | None]]:
        for instance in instances:
            if event.is_cancelled:
                yield CANCELLED, None
                return
            yield PENDING, self._dataset(instance, accepted.get(instance.sop_class_uid, set()))

    def _dataset(self, instance: Instance, accepted: Collection[str]) -> Dataset:
        syntax = target_syntax(instance, accepted)
        if syntax is None:
            logger.warning("the peer accepted no transfer syntax for %s (%s); stored as %s",
                           instance.sop_instance_uid, instance.sop_class_uid,
                           instance.frames_transfer_syntax_uid)  # fmt: skip
            return unsendable(instance)
        try:
            return instance_dataset(self._runtime.store, instance, syntax)
        except Exception:
            logger.error("instance %s could not be rebuilt as %s", instance.sop_instance_uid,
                         syntax, exc_info=True)  # fmt: skip
            return unsendable(instance)


def _refuse(event: Event, answer: Dataset) -> Iterator[int]:
    """The rest of a C-GET or C-MOVE handler that refuses the request with `answer`.

    pynetdicom takes a failure status (and its comment) only once it has counted the
    sub-operations, and for a C-MOVE associated with the destination; a count of none ends
    the request before that, with 0x0000 and every count 0. That success is turned into
    `answer`, so the peer hears what was wrong and the destination is not contacted.
    """
    logger.warning("C-%s from %s refused: %s", "GET" if event.event == evt.EVT_C_GET else "MOVE",
                   Peer.of(event).calling_ae, answer.ErrorComment)  # fmt: skip
    _answer_instead(event, replacing=SUCCESS, answer=lambda: answer)
    yield 0


def _answer_instead(
    event: Event, *, replacing: int, answer: Callable[[], Dataset]
) -> Callable[[Event], None]:
    """Bind an EVT_DIMSE_SENT handler that gives the final response to `event` pynetdicom
    sends with status `replacing` the status, comment and offending element of `answer()`
    instead; it unbinds itself once it has done so.

    The response is rewritten after it was built and before it is encoded, which is when
    pynetdicom reports it.
    """
    assoc, message_id = event.assoc, event.message_id

    def rewrite(sent: Event) -> None:
        command = sent.message.command_set
        if (
            not isinstance(sent.message, C_GET_RSP | C_MOVE_RSP)
            or command.MessageIDBeingRespondedTo != message_id
            or command.Status != replacing
        ):
            return
        assoc.unbind(evt.EVT_DIMSE_SENT, rewrite)
        replacement = answer()
        for keyword in ("Status", "ErrorComment", "OffendingElement"):
            if keyword in replacement:
                setattr(command, keyword, replacement[keyword].value)
        sent.message._set_command_group_length()

    assoc.bind(evt.EVT_DIMSE_SENT, rewrite)
    return rewrite


def _unreachable_answer(
    event: Event, destination: str, address: tuple[str, int], connected: list[bool]
) -> Callable[[Event], None]:
    """Turn pynetdicom's answer to a failed destination association into 0xA702 with a
    comment naming the destination (the handler returned is bound until unbound).

    pynetdicom answers 0xA801 (Move Destination unknown) both to an unknown destination and
    to a configured one it cannot associate with, and gives the handler no say; a PACS must
    tell "not configured" from "not answering".
    """

    def answer() -> Dataset:
        host, port = address
        why = "refused the association" if connected else "is not listening"
        unreachable = status(SUBOPERATIONS_IMPOSSIBLE, f"{destination} at {host}:{port} {why}")
        logger.warning("C-MOVE from %s: destination %s", Peer.of(event).calling_ae,
                       unreachable.ErrorComment)  # fmt: skip
        return unreachable

    return _answer_instead(event, replacing=MOVE_DESTINATION_UNKNOWN, answer=answer)


def _move_contexts(instances: list[Instance]) -> list[PresentationContext]:
    """Contexts for every SOP class to send, dropping compressed offers past the limit."""
    pairs = offers(instances)
    if len(pairs) > MAX_CONTEXTS:
        pairs = [(sop_class, syntax) for sop_class, syntax in pairs if syntax in UNCOMPRESSED]
    if len(pairs) > MAX_CONTEXTS:
        pairs = [(sop_class, syntax) for sop_class, syntax in pairs if syntax == UNCOMPRESSED[0]]
    if len(pairs) > MAX_CONTEXTS:
        logger.warning("C-MOVE of %d SOP classes: only the first %d can be proposed",
                       len(pairs), MAX_CONTEXTS)  # fmt: skip
    return proposed_contexts(pairs[:MAX_CONTEXTS])
