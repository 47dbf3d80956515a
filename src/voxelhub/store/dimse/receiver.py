"""The C-STORE receive path: instances read off the socket and answered by the reading thread.

pynetdicom hands every PDU through a state machine, a DIMSE decoder and two threads that poll
each other every millisecond, and builds each answer with pydicom: several milliseconds per
instance, most of the time the peer spends waiting for its answer. The reading thread here
takes the P-DATA-TF PDUs of a C-STORE-RQ itself (one `recv_into` per PDU, fragments kept as
views), calls the store handler, and writes the C-STORE-RSP straight to the socket. It only
takes a request it fully understands (a one-fragment command on an accepted storage context,
no partly decoded message in pynetdicom); everything else - negotiation, release, abort,
C-ECHO, C-FIND, C-GET, C-MOVE, the answers to our own C-STOREs - goes through pynetdicom
unchanged. The state machine stays in Sta6 (data transfer) throughout, as P-DATA leaves it.
Between PDUs the thread waits on the socket instead of sleeping, so it reads as soon as the
peer sends, and while instances come in the association's own polling loop is parked.

What the service sends goes the other way, through pynetdicom's queue of P-DATA primitives
to this thread. Handlers that send (C-FIND matches, C-GET and C-MOVE pending responses, the
PDUs of a C-GET's C-STORE sub-operations) wait while `MAX_UNSENT` primitives are queued, so a
fast index or destination never runs ahead of a slow peer: what the handler has not yet read
from the index or sent to a destination is not done when the peer's C-CANCEL comes.
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket, RequestHandler

from voxelhub.store.dimse.common import status
from voxelhub.store.dimse.contexts import STORAGE_SOP_CLASSES
from voxelhub.store.dimse.errors import DimseProtocolError
from voxelhub.store.dimse.wire import (
    P_DATA_TF,
    PDU_HEADER,
    Pdv,
    StoreRequest,
    decode_command,
    p_data_tf,
    part10_prefix,
    pdvs,
    store_request,
    store_response,
)

logger = logging.getLogger(__name__)


class Receiver(Protocol):
    """Answers one received instance (its Part-10 bytes) with a status, as an EVT_C_STORE
    handler does (`StoreService.receive`)."""

    def __call__(
        self, assoc: Association, data: bytes, *, requested_uid: str, requested_class: str
    ) -> int | Dataset:
        """The status for the C-STORE-RQ naming `requested_uid` of `requested_class`."""


DATA_TRANSFER = "Sta6"
# P-DATA primitives (a DIMSE message is one or more) that other threads may queue ahead of
# the socket; more wait until some are sent.
MAX_UNSENT = 64
HANDLER_FAILED = 0xC211  # what pynetdicom answers when a C-STORE handler raises
_STORAGE = frozenset(STORAGE_SOP_CLASSES)


@dataclass
class _Incoming:
    """A C-STORE-RQ whose dataset fragments are arriving."""

    context_id: int
    request: StoreRequest
    fragments: list[memoryview] = field(default_factory=list)


class StoreDUL(DULServiceProvider):
    """pynetdicom's upper-layer provider, taking C-STORE-RQs off the socket itself."""

    def __init__(self, assoc: Association, receiver: Receiver) -> None:
        super().__init__(assoc)
        self._receiver = receiver
        self._incoming: _Incoming | None = None
        self._parked = False
        self._sent = threading.Condition()  # notified when this thread took a primitive

    # --- reading -------------------------------------------------------------------------

    def _read_pdu_data(self) -> None:
        sock = self._plain_socket()
        header = self._peek_header(sock) if sock is not None else None
        if sock is None or header is None or not self._may_take(header[0]):
            super()._read_pdu_data()
            return
        data = _recv_exactly(sock, PDU_HEADER.size + header[1])
        if data is None:
            self.event_queue.put("Evt17")  # the connection broke mid-PDU
            return
        try:
            taken = self._take(memoryview(data)[PDU_HEADER.size :])
        except DimseProtocolError as err:
            # As for a PDU pynetdicom cannot decode: the state machine aborts (A-P-ABORT)
            # and closes the connection, so the store handler hears of it.
            logger.error("aborting the association with %s: %s",
                         self.assoc.requestor.ae_title, err.message)  # fmt: skip
            self._incoming = None
            self.event_queue.put("Evt19")
            return
        if not taken:
            self._hand_on(data)
        elif self._incoming is None:
            self._park()

    def _park(self) -> None:
        """Stop the association's loop while instances come in here, if it has nothing
        left to handle.

        That loop wakes every millisecond to look for decoded messages, release and abort
        requests and the network timeout: about a millisecond of CPU per received CT slice,
        taken from this thread and the indexing threads. All of those reach it through
        events that pass this thread first (`_next_event`), which restarts it. It waits at
        pynetdicom's own pause point, the reactor checkpoint.
        """
        assoc = self.assoc
        if self._parked or not assoc.dimse.msg_queue.empty() or not self.to_user_queue.empty():
            return
        self._parked = True
        assoc._reactor_checkpoint.clear()

    def _unpark(self) -> None:
        """Let the association's loop run again (only if this thread stopped it)."""
        if self._parked:
            self._parked = False
            self.assoc._reactor_checkpoint.set()

    def _plain_socket(self) -> socket.socket | None:
        wrapper = self.socket
        sock = wrapper.socket if isinstance(wrapper, AssociationSocket) else None
        # TLS records hide the PDU boundaries from a peek.
        return None if sock is None or isinstance(sock, ssl.SSLSocket) else sock

    @staticmethod
    def _peek_header(sock: socket.socket) -> tuple[int, int] | None:
        """The next PDU's type and length, left in the socket; None if the connection ends
        first (the base reader then reports it)."""
        try:
            # Waits for all six bytes: a header cut in two must not reach the base reader
            # in the middle of a dataset read here.
            head = sock.recv(PDU_HEADER.size, socket.MSG_PEEK | socket.MSG_WAITALL)
        except OSError:
            return None
        if len(head) < PDU_HEADER.size:
            return None
        kind, _, length = PDU_HEADER.unpack(head)
        return kind, length

    def _may_take(self, pdu_type: int) -> bool:
        """Whether a P-DATA-TF PDU may be ours: data transfer, no message half-decoded by
        pynetdicom, nothing queued for its state machine."""
        if pdu_type != P_DATA_TF or self.state_machine.current_state != DATA_TRANSFER:
            return False
        if self._incoming is not None:
            return True
        return self.assoc.dimse.message is None and self.event_queue.empty()

    def _hand_on(self, data: bytearray) -> None:
        """Give a PDU read here to pynetdicom, as its own reader would have."""
        try:
            pdu, event = self._decode_pdu(data)
        except Exception:
            logger.error("unable to decode a received PDU", exc_info=True)
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    # --- C-STORE -------------------------------------------------------------------------

    def _take(self, body: memoryview) -> bool:
        """Consume a P-DATA-TF body of a C-STORE-RQ; False (nothing consumed) if it starts
        another message."""
        items = list(pdvs(body))
        if self._incoming is None:
            if not items or (incoming := self._start(items[0])) is None:
                return False
            self._incoming = incoming
            items = items[1:]
        for index, pdv in enumerate(items):
            incoming = self._incoming
            if incoming is None or pdv.is_command or pdv.context_id != incoming.context_id:
                raise DimseProtocolError(
                    "a P-DATA-TF PDU mixes a C-STORE dataset with another message"
                )
            incoming.fragments.append(pdv.fragment)
            if pdv.is_last:
                if index != len(items) - 1:
                    raise DimseProtocolError("data follows the last fragment of a dataset")
                self._incoming = None
                self._answer(incoming)
        return True

    def _start(self, pdv: Pdv) -> _Incoming | None:
        if not (pdv.is_command and pdv.is_last) or self.assoc._sent_release:
            return None
        context = self.assoc._accepted_cx.get(pdv.context_id)
        request = store_request(decode_command(pdv.fragment))
        if context is None or request is None:
            return None
        if (
            request.sop_class_uid != context.abstract_syntax
            or request.sop_class_uid not in _STORAGE
        ):
            return None
        return _Incoming(pdv.context_id, request)

    def _answer(self, incoming: _Incoming) -> None:
        assoc = self.assoc
        context = assoc._accepted_cx[incoming.context_id]
        prefix = part10_prefix(
            incoming.request,
            str(context.transfer_syntax[0]),
            implementation_class_uid=str(assoc.acceptor.implementation_class_uid),
            implementation_version_name=str(assoc.acceptor.implementation_version_name or ""),
        )
        data = b"".join([prefix, *incoming.fragments])
        incoming.fragments.clear()
        try:
            answer = self._receiver(
                assoc,
                data,
                requested_uid=incoming.request.sop_instance_uid,
                requested_class=incoming.request.sop_class_uid,
            )
        except Exception as err:
            logger.error("the C-STORE handler failed", exc_info=True)
            answer = status(HANDLER_FAILED, f"{type(err).__name__}: {err}")
        code, comment = _status_of(answer)
        if not assoc.is_established or self.socket is None:
            return
        command = store_response(incoming.request, code, error_comment=comment)
        self.socket.send(
            p_data_tf(incoming.context_id, command, is_command=True,
                      max_pdu_length=int(assoc.requestor.maximum_length or 0))
        )  # fmt: skip

    # --- sending -------------------------------------------------------------------------

    def send_pdu(self, primitive: Any) -> None:
        """Queue a primitive to send; a P-DATA from another thread first waits for room."""
        if isinstance(primitive, P_DATA) and threading.current_thread() is not self:
            with self._sent:
                while self.to_provider_queue.qsize() >= MAX_UNSENT and self._sending():
                    self._sent.wait(0.05)  # the timeout notices an association that ended
        super().send_pdu(primitive)

    def _sending(self) -> bool:
        """Whether this thread still takes primitives off the queue to send them."""
        return (
            self.is_alive()
            and not self._kill_thread
            and self.state_machine.current_state == DATA_TRANSFER
        )

    # --- the loop ------------------------------------------------------------------------

    def run_reactor(self) -> None:
        """pynetdicom's DUL loop, waiting on the socket where it would sleep."""
        try:
            self._run_reactor()
        finally:
            self._unpark()  # the association's loop ends when it sees this one has

    def _run_reactor(self) -> None:
        self._idle_timer.start()
        pause = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                pause = True
            if pause:
                self._wait(self._run_loop_delay)
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                self._poll()
            except Exception:
                logger.error("the DICOM upper layer failed; aborting the association",
                             exc_info=True)  # fmt: skip
                self._abort_now()
                return
            event = self._next_event()
            if event is None:
                pause = True
                continue
            # Every queued event is handled before the next local primitive is looked at:
            # that look does not take the primitive off its queue, handling its event does.
            while event is not None:
                self.state_machine.do_action(event)
                event = None if self._kill_thread else self._next_event()
            with self._sent:
                self._sent.notify_all()
            pause = False

    def _poll(self) -> None:
        """Queue the events of one pass: our next PDU to send and what the peer sent."""
        if self._process_recv_primitive() and not self._may_read_while_sending():
            return
        if self._is_transport_event():
            self._idle_timer.restart()

    def _may_read_while_sending(self) -> bool:
        """Whether to read what the peer sent in a pass that sends our next PDU.

        pynetdicom reads only once everything queued is sent; a C-FIND, C-GET or C-MOVE
        would read the peer's C-CANCEL-RQ only after sending all it queued. Reading
        in the same pass is limited to data transfer with no C-STORE arriving here (whose
        answer goes straight to the socket, not between the fragments of a queued message),
        and to a peer that has sent something.
        """
        return (
            self.state_machine.current_state == DATA_TRANSFER
            and self._incoming is None
            and isinstance(self.socket, AssociationSocket)
            and self.socket.ready
        )

    def _next_event(self) -> str | None:
        """The next event for pynetdicom's state machine, None if there is none; either
        way the association's loop runs again when it may have something to do."""
        try:
            event = self.event_queue.get(block=False)
        except queue.Empty:
            if self._parked and self.idle_timer_expired():
                self._unpark()  # it applies the network timeout
            return None
        self._unpark()
        return event

    def _wait(self, timeout: float) -> None:
        """Until the peer sends something, or `timeout` (local primitives are polled)."""
        sock = self._plain_socket()
        if sock is None:
            time.sleep(timeout)
            return
        try:
            select.select([sock], [], [], timeout)
        except (OSError, ValueError):  # closed meanwhile: the next read says so
            time.sleep(timeout)

    def _abort_now(self) -> None:
        """Send an A-ABORT and stop both loops, bypassing the state machine (as pynetdicom
        does when its loop fails)."""
        abort = A_ABORT_RQ()
        abort.source = 0x02  # service provider
        abort.reason_diagnostic = 0x00
        if isinstance(self.socket, AssociationSocket):
            self.socket.send(abort.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


class StoreRequestHandler(RequestHandler):
    """The association server's per-connection handler, with a `StoreDUL` in its association."""

    def __init__(self, *args: Any, receiver: Receiver) -> None:
        self._receiver = receiver  # before the base class handles the request
        super().__init__(*args)

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        # The base DUL is replaced before it starts: it has only its settings and the
        # connection's first event (Evt5, queued by the socket) to hand over.
        base, dul = assoc.dul, StoreDUL(assoc, self._receiver)
        dul.socket = base.socket
        dul.artim_timer.timeout = base.artim_timer.timeout
        dul._idle_timer.timeout = base._idle_timer.timeout
        while not base.event_queue.empty():
            dul.event_queue.put(base.event_queue.get())
        assoc.dul = dul
        return assoc


def _status_of(answer: int | Dataset) -> tuple[int, str | None]:
    if isinstance(answer, Dataset):
        comment = answer.get("ErrorComment")
        return int(answer.Status), str(comment) if comment else None
    return int(answer), None


def _recv_exactly(sock: socket.socket, length: int) -> bytearray | None:
    """`length` bytes from `sock`, or None if the connection fails or closes first."""
    data = bytearray(length)
    view = memoryview(data)
    received = 0
    while received < length:
        try:
            count = sock.recv_into(view[received:], length - received)
        except OSError:  # timeouts included
            return None
        if count == 0:
            return None
        received += count
    return data
