"""STOW-RS: storing the parts of a multipart/related request and the standard response."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from voxelhub.core.objects import ObjectStore
from voxelhub.dicom.deidentify import DeidReport
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.model import SplitInstance
from voxelhub.store.attributes import element
from voxelhub.store.deid import DeidSummary, Prepare
from voxelhub.store.dicomweb import splitpool, stow_json
from voxelhub.store.dicomweb.multipart import Part, parse_media_type
from voxelhub.store.dicomweb.splitting import content_hash, split_for_store
from voxelhub.store.errors import InvalidQuery
from voxelhub.store.ingest import Ingest, Stored

# PS3.4 Annex GG / PS3.18 §10.5.3 failure reasons.
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
CANNOT_UNDERSTAND = 0xC000
DATASET_DOES_NOT_MATCH = 0xA900
STUDY_UID_MISMATCH = 0xC409
# The whole reason for a failure goes in a private element of its Failed SOP Sequence item:
# Error Comment (0000,0902) is an LO of at most 64 characters, and the Store Instances
# Response Module (PS3.18 Annex I) has no attribute for a longer text.
PRIVATE_CREATOR = "VOXELHUB 1"
FAILURE_MESSAGE = "00091001"  # LT, in the block of PRIVATE_CREATOR at (0009,0010)

# Threads that split de-identified parts (the split workers do not have the policy); the
# window of parts in flight is twice their number, so that while a worker splits one part
# the next one is ready to be sent to it.
_pool = ThreadPoolExecutor(max_workers=2 * (os.cpu_count() or 1), thread_name_prefix="stow")
# A split part, its content hash, and what de-identification changed.
_Split = tuple[SplitInstance, str, DeidReport | None]


@dataclass
class StowResult:
    stored: list[Stored] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    deid: DeidSummary = field(default_factory=DeidSummary)

    def fail(self, reason: int, message: str, sop_class: str = "", sop_instance: str = "") -> None:
        self.failed.append(
            {
                "reason": reason,
                "message": message,
                "sop_class": sop_class,
                "sop_instance": sop_instance,
            }
        )

    def response(self, base_url: str, study_uid: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {}
        studies = {s.study_instance_uid for s in self.stored}
        if study_uid or len(studies) == 1:
            uid = study_uid or next(iter(studies))
            body["00081190"] = element("UR", f"{base_url}/studies/{uid}")
        if self.failed:
            body["00081198"] = {
                "vr": "SQ",
                "Value": [
                    {
                        "00081150": element("UI", f["sop_class"]),
                        "00081155": element("UI", f["sop_instance"]),
                        "00081197": element("US", f["reason"]),
                        "00000902": element("LO", f["message"][:64]),
                        "00090010": element("LO", PRIVATE_CREATOR),
                        FAILURE_MESSAGE: element("LT", f["message"]),
                    }
                    for f in self.failed
                ],
            }
        if self.stored:
            body["00081199"] = {
                "vr": "SQ",
                "Value": [
                    {
                        "00081150": element("UI", s.sop_class_uid),
                        "00081155": element("UI", s.sop_instance_uid),
                        "00081190": element(
                            "UR",
                            f"{base_url}/studies/{s.study_instance_uid}/series/"
                            f"{s.series_instance_uid}/instances/{s.sop_instance_uid}",
                        ),
                    }
                    for s in self.stored
                ],
            }
        return body

    @property
    def status_code(self) -> int:
        if not self.failed:
            return 200
        return 202 if self.stored else 409


def split_part(body: bytes, prepare: Prepare | None = None) -> SplitInstance:
    """Validate, de-identify if asked, and split one instance (CPU-bound: runs in a pool)."""
    return split_prepared(body, prepare)[0]


def split_prepared(
    body: bytes | bytearray | memoryview, prepare: Prepare | None = None
) -> tuple[SplitInstance, DeidReport | None]:
    """`split_part`, also returning what de-identification changed."""
    report = None
    if prepare is not None:
        body, report = prepare(bytes(body))
    return split_for_store(body), report


async def _split_in_worker(part: Part) -> _Split:
    # The pieces go to the worker's memory as they are, never joined here.
    split, digest = await splitpool.pool.split(part.pieces)
    return split, digest, None


def _split_here(body: bytes | bytearray, prepare: Prepare) -> _Split:
    # De-identification runs a policy object the workers do not have: it stays in-process.
    split, report = split_prepared(body, prepare)
    return split, content_hash(split), report


# Instances indexed per INSERT, and the most bytes of split instances held for one. Small
# enough that indexing overlaps the arrival of the next parts, leaving little to do at the end.
BATCH_INSTANCES = 16
BATCH_BYTES = 64 * 1024 * 1024


class _Batches:
    """Split instances indexed a batch at a time in a thread, while more parts arrive.

    One batch is indexed at a time (the request's session is not shared between threads)
    and its objects are made durable with it, so the request's end waits for the last only.
    """

    def __init__(self, ingest: Ingest, result: StowResult) -> None:
        self.ingest, self.result = ingest, result
        self.splits: list[SplitInstance] = []
        self.digests: list[str] = []
        self.held = 0
        self.running: asyncio.Future[None] | None = None

    async def add(self, split: SplitInstance, digest: str) -> None:
        self.splits.append(split)
        self.digests.append(digest)
        self.held += _size(split)
        if len(self.splits) >= BATCH_INSTANCES or self.held >= BATCH_BYTES:
            await self.flush()

    async def flush(self) -> None:
        """Start indexing what was gathered, once the batch before it is done."""
        await self.settle()
        taken, digests = self.splits, self.digests
        self.splits, self.digests, self.held = [], [], 0
        if taken:
            self.running = asyncio.ensure_future(
                asyncio.to_thread(_index, self.ingest, taken, digests, self.result)
            )

    async def settle(self) -> None:
        """Wait for the batch being indexed; raises what indexing raised.

        Shielded: cancelling the request must not stop waiting for a thread that still
        uses the session (it is forgotten only once done).
        """
        running = self.running
        if running is None:
            return
        try:
            await asyncio.shield(running)
        finally:
            if running.done():
                self.running = None


async def store_parts(
    parts: AsyncIterator[Part],
    *,
    db: Session,
    store: ObjectStore,
    archive_id: uuid.UUID,
    study_uid: str | None,
    prepare: Prepare | None = None,
    metadata_and_bulk: bool = False,
    max_bytes: int = 0,
) -> StowResult:
    """Split parts in parallel (bounded) and index them in batches as they come.

    With `metadata_and_bulk` the parts are DICOM JSON and the bulk data it refers to
    (`stow_json`): held until the request ends (at most `max_bytes`), then made into
    Part-10 files and stored as those are."""
    result = StowResult()
    ingest = Ingest(db, store, archive_id)
    batches = _Batches(ingest, result)
    if metadata_and_bulk:
        parts = await _as_part10(parts, result, max_bytes=max_bytes)
    try:
        await _split_and_index(parts, batches, result, study_uid=study_uid, prepare=prepare)
        await batches.flush()
        await batches.settle()
    finally:
        # Never leave a thread using the session while the request rolls back.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await batches.settle()
    await asyncio.to_thread(ingest.finish)
    return result


async def _split_and_index(
    parts: AsyncIterator[Part],
    batches: _Batches,
    result: StowResult,
    *,
    study_uid: str | None,
    prepare: Prepare | None,
) -> None:
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Future[_Split]] = []
    window = (_pool._max_workers or 1) * 2

    async def finish(future: asyncio.Future[_Split]) -> None:
        try:
            split, digest, report = await future
        except DicomError as err:
            result.fail(CANNOT_UNDERSTAND, f"{err.code}: {err.message}")
            return
        except Exception as err:  # a decoder crash must not lose the other parts
            why = (
                str(err)
                if isinstance(err, splitpool.SplitFailed)
                else f"{type(err).__name__}: {err}"
            )
            result.fail(PROCESSING_FAILURE, f"processing failed: {why}")
            return
        result.deid.add(report)
        # De-identification remaps UIDs: the study named in the URL is the original one.
        if not _mismatch(study_uid if prepare is None else None, split, result):
            await batches.add(split, digest)

    try:
        async for part in parts:
            media = parse_media_type(part.content_type or "application/dicom").type
            if media != "application/dicom":
                result.fail(
                    CANNOT_UNDERSTAND,
                    f"part of type {media!r} was skipped: send each "
                    "instance as an application/dicom part",
                )
                continue
            pending.append(_submit(loop, part, prepare))
            if len(pending) >= window:
                await finish(pending.pop(0))
        while pending:
            await finish(pending.pop(0))
    finally:
        for future in pending:  # the request failed or was cancelled: the rest is not needed
            future.cancel()


async def _as_part10(
    parts: AsyncIterator[Part], result: StowResult, *, max_bytes: int
) -> AsyncIterator[Part]:
    """The objects of a metadata-and-bulk request as Part-10 parts; the objects that cannot
    be made are failed in `result` with the reason."""
    metadata: list[Part] = []
    bulk: list[Part] = []
    held = 0
    async for part in parts:
        held += part.size
        if max_bytes and held > max_bytes:
            raise InvalidQuery(
                f"a metadata-and-bulk STOW-RS request is held whole and may hold at most "
                f"{max_bytes} bytes; send large instances as Part-10 files "
                '(type="application/dicom")'
            )
        (metadata if stow_json.is_metadata(part) else bulk).append(part)
    if not metadata:
        raise InvalidQuery(
            "a request of metadata and bulk data needs its metadata: a part of type "
            "application/dicom+json holding an array of DICOM JSON objects, or one part of "
            "type application/dicom+xml per object (the Native DICOM Model)"
        )
    built = await asyncio.to_thread(lambda: list(stow_json.build(metadata, bulk)))
    for location in stow_json.unreferenced(metadata, bulk):
        result.fail(CANNOT_UNDERSTAND, f"no object refers to the bulk data part {location}")
    return _part10_parts(built, result)


async def _part10_parts(built: list[stow_json.Built], result: StowResult) -> AsyncIterator[Part]:
    for one in built:
        if one.body is None:
            result.fail(CANNOT_UNDERSTAND, one.problem, one.sop_class, one.sop_instance)
            continue
        yield Part.whole({"content-type": "application/dicom"}, one.body)


def _submit(
    loop: asyncio.AbstractEventLoop, part: Part, prepare: Prepare | None
) -> asyncio.Future[_Split]:
    if prepare is None:
        return asyncio.ensure_future(_split_in_worker(part))
    return loop.run_in_executor(_pool, _split_here, part.body, prepare)


def _size(split: SplitInstance) -> int:
    return len(split.header) + sum(len(frame) for frame in split.frames)


def _mismatch(study_uid: str | None, split: SplitInstance, result: StowResult) -> bool:
    keys = split.keys
    if study_uid is None or keys.study_instance_uid == study_uid:
        return False
    result.fail(
        STUDY_UID_MISMATCH,
        f"the instance belongs to study {keys.study_instance_uid}"
        f", not to {study_uid} named in the URL",
        keys.sop_class_uid,
        keys.sop_instance_uid,
    )
    return True


def _index(
    ingest: Ingest, splits: list[SplitInstance], digests: list[str], result: StowResult
) -> None:
    outcomes = ingest.add_many(splits, digests=digests)
    ingest.sync()
    for split, outcome in zip(splits, outcomes, strict=True):
        if isinstance(outcome, Stored):
            result.stored.append(outcome)
            continue
        keys = split.keys
        reason = DUPLICATE_SOP_INSTANCE if outcome.code == "uid_conflict" else PROCESSING_FAILURE
        result.fail(reason, outcome.message, keys.sop_class_uid, keys.sop_instance_uid)
