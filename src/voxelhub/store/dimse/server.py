"""Starting and stopping the DIMSE service: verification, storage and query/retrieve SCPs."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial
from types import TracebackType
from typing import Any

from pynetdicom import AE, evt
from pynetdicom.events import Event, EventHandlerType
from pynetdicom.transport import ThreadedAssociationServer
from pynetdicom.utils import make_target
from sqlalchemy import select

from voxelhub.archives.models import Archive
from voxelhub.core.db import session_scope
from voxelhub.core.runtime import Runtime
from voxelhub.store.dimse.commit_scp import CommitmentService
from voxelhub.store.dimse.common import Peer
from voxelhub.store.dimse.config import DimseConfig
from voxelhub.store.dimse.contexts import add_supported_contexts, cheap_to_copy
from voxelhub.store.dimse.errors import DimseConfigError
from voxelhub.store.dimse.find_scp import FindService
from voxelhub.store.dimse.receiver import StoreRequestHandler
from voxelhub.store.dimse.retrieve_scp import RetrieveService
from voxelhub.store.dimse.store_scp import StoreService

logger = logging.getLogger(__name__)

MAX_ASSOCIATIONS = 32
# How long a query waits for acknowledged instances to be indexed (the database may be down).
FLUSH_TIMEOUT_S = 30.0
UNLIMITED_PDU = 0  # pynetdicom's default 16382-byte PDUs make large transfers slow


class DimseServer:
    """A running DIMSE service; `stop()` (or leaving a `with` block) shuts it down."""

    def __init__(
        self,
        config: DimseConfig,
        archive_id: uuid.UUID,
        ae: AE,
        server: ThreadedAssociationServer,
        *,
        store: StoreService,
        commitment: CommitmentService,
    ) -> None:
        self.config = config
        self._commitment = commitment
        self.archive_id = archive_id
        self._ae = ae
        self._server = server
        self._store = store
        self._stopped = False

    @property
    def port(self) -> int:
        """The port it listens on (the one the OS picked when the configured port is 0)."""
        return int(self._server.server_address[1])

    def stop(self, *, grace_seconds: float = 10.0) -> None:
        """Stop listening, let running associations finish for a while, then abort them.

        An aborted C-STORE was never acknowledged, so the peer knows to send it again.
        """
        if self._stopped:
            return
        self._stopped = True
        running = self._server.active_associations
        self._server.shutdown()
        deadline = time.monotonic() + grace_seconds
        for association in running:
            association.join(max(deadline - time.monotonic(), 0))
            if association.is_alive():
                association.abort()
        self._store.close()
        self._commitment.close()
        logger.info("DIMSE service %s stopped", self.config.ae_title)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every acknowledged C-STORE instance is indexed; False on timeout."""
        return self._store.flush(timeout)

    def __enter__(self) -> DimseServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _archive_id(runtime: Runtime, name: str) -> uuid.UUID:
    with session_scope(runtime.database_url) as db:
        found = db.scalar(select(Archive.id).where(Archive.name == name))
    if found is None:
        raise DimseConfigError(
            f"no archive named {name!r} to store C-STORE instances into; create it first or "
            "name an existing one (VOXELHUB_DEFAULT_ARCHIVE)"
        )
    return found


def _after_flush(
    store: StoreService, handler: Callable[[Event], Iterator[Any]]
) -> Callable[[Event], Iterator[Any]]:
    """`handler`, run once the instances acknowledged so far are indexed."""

    def handle(event: Event) -> Iterator[Any]:
        if not store.flush(FLUSH_TIMEOUT_S):
            logger.warning("answering before every acknowledged instance is indexed")
        yield from handler(event)

    return handle


def _log_rejection(event: Event) -> None:
    """Say who was turned away: the peer's address and the AE titles it used."""
    request = event.assoc.requestor.primitive
    if request is None:
        return
    called = str(request.called_ae_title).strip()
    logger.warning(
        "DIMSE association from %s (calling AE %s) rejected: called AE %s%s",
        Peer.of_association(event.assoc).address, str(request.calling_ae_title).strip(), called,
        "" if called == event.assoc.ae.ae_title else f", not {event.assoc.ae.ae_title}",
    )  # fmt: skip


def start_dimse(runtime: Runtime, config: DimseConfig) -> DimseServer:
    """Listen for DIMSE associations in background threads; returns the running server."""
    archive_id = _archive_id(runtime, config.archive)
    ae = AE(ae_title=config.ae_title)
    ae.maximum_pdu_size = UNLIMITED_PDU
    ae.maximum_associations = MAX_ASSOCIATIONS
    ae.network_timeout = config.idle_timeout_s
    # pynetdicom answers A-ASSOCIATE-RJ (1, 1, 7) to a called AE title other than its own.
    ae.require_called_aet = config.check_called_ae
    add_supported_contexts(ae)
    store = StoreService(runtime, archive_id)
    find = FindService(runtime, archive_id, ae_title=config.ae_title)
    retrieve = RetrieveService(runtime, archive_id, remote_aes=config.remote_aes)
    commitment = CommitmentService(
        runtime, archive_id, ae_title=config.ae_title, remote_aes=config.remote_aes,
        flush=store.flush, same_association=config.commitment_same_association,
    )  # fmt: skip
    handlers: list[EventHandlerType] = [
        (evt.EVT_C_STORE, store.handle),
        (evt.EVT_CONN_CLOSE, store.handle_close),
        # A peer that stored instances finds them at once, though they are indexed later.
        (evt.EVT_C_FIND, _after_flush(store, find.handle)),
        (evt.EVT_C_GET, _after_flush(store, retrieve.handle_get)),
        (evt.EVT_C_MOVE, _after_flush(store, retrieve.handle_move)),
        (evt.EVT_N_ACTION, commitment.handle_action),
        (evt.EVT_REJECTED, _log_rejection),
    ]
    try:
        server = ae.make_server(
            (config.host, config.port), evt_handlers=handlers,
            contexts=cheap_to_copy(ae.supported_contexts),
            server_class=ThreadedAssociationServer,
            request_handler=partial(StoreRequestHandler, receiver=store.receive),
        )  # fmt: skip
    except OSError as err:
        store.close()
        commitment.close()
        raise DimseConfigError(
            f"the DIMSE service cannot listen on {config.host}:{config.port} ({err}); pick a "
            "free port"
        ) from err
    ae._servers.append(server)  # as `start_server` does: the server's shutdown expects it
    threading.Thread(
        target=make_target(server.serve_forever), name="dimse-listen", daemon=True
    ).start()
    dimse = DimseServer(config, archive_id, ae, server, store=store, commitment=commitment)
    logger.info("DIMSE service %s listening on %s:%d, storing into archive %r",
                config.ae_title, config.host, dimse.port, config.archive)  # fmt: skip
    return dimse
