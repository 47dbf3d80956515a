"""Splitting in worker processes: the same result as in-process, errors kept, deaths survived,
parts of any size, many at once and cancelled ones."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.store.conftest import to_bytes
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.model import HTJ2K_LOSSLESS
from voxelhub.dicom.synthetic import ct_phantom
from voxelhub.store.dicomweb import splitpool
from voxelhub.store.dicomweb.splitpool import SplitFailed, SplitPool
from voxelhub.store.dicomweb.splitting import content_hash, split_for_store


@pytest.fixture
def pool() -> Iterator[SplitPool]:
    made = SplitPool(1)
    yield made
    made.close()


def test_a_worker_splits_as_the_process_itself_does(pool: SplitPool) -> None:
    body = to_bytes(ct_phantom(slices=1, size=64)[0])
    split, digest = pool.split_blocking(bytearray(body))
    here = split_for_store(body)
    assert split == here
    assert digest == content_hash(here)
    assert split.frames_transfer_syntax == HTJ2K_LOSSLESS


def test_a_worker_reports_what_is_wrong_with_the_instance(pool: SplitPool) -> None:
    with pytest.raises(DicomError) as in_worker:
        pool.split_blocking(b"not dicom at all")
    with pytest.raises(DicomError) as here:
        split_for_store(b"not dicom at all")
    assert (in_worker.value.code, in_worker.value.message) == (here.value.code, here.value.message)


def test_a_dead_worker_fails_its_part_and_is_replaced(pool: SplitPool) -> None:
    body = to_bytes(ct_phantom(slices=1, size=32)[0])
    pool.split_blocking(body)
    worker = pool._idle[0]  # the only worker: kill it as a codec crash would
    worker.process.kill()
    worker.process.wait(timeout=30)
    with pytest.raises(SplitFailed, match="stopped"):
        pool.split_blocking(body)
    split, _ = pool.split_blocking(body)
    assert split.keys.rows == 32


def test_parts_larger_than_the_shared_memory_and_replies_that_do_not_fit_it(
    pool: SplitPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 4 KiB of shared memory, grown to a larger part's exact size: the 128 x 128 slice grows
    # it, and its reply, larger than the part (its header, its frame kept native since the
    # values do not fit Bits Stored, and its DICOM JSON), comes over the socket.
    monkeypatch.setattr(splitpool, "_MEMORY_BYTES", 4096)
    monkeypatch.setattr(splitpool, "_ROUND_BYTES", 1)
    small = to_bytes(ct_phantom(slices=1, size=16)[0])
    large_ds = ct_phantom(slices=1, size=128)[0]
    large_ds.BitsStored = 8  # values beyond 8 bits: kept native, not encoded
    large = to_bytes(large_ds)
    for body in (small, large, small, large):
        split, digest = pool.split_blocking(body)
        assert split == split_for_store(body)
        assert digest == content_hash(split)
    assert len(pool._idle[0].memory) == len(large)
    # Memory grown past what is kept goes back as soon as its part is done.
    monkeypatch.setattr(splitpool, "_KEEP_BYTES", len(large) - 1)
    for body in (large, small):
        split, _ = pool.split_blocking(body)
        assert split == split_for_store(body)
        assert len(pool._idle[0].memory) == 4096


def test_many_parts_at_once_share_the_workers() -> None:
    pool = SplitPool(2)
    bodies = [to_bytes(ds) for ds in ct_phantom(slices=12, size=48)]

    async def all_at_once() -> list[tuple[object, str]]:
        return await asyncio.gather(*(pool.split(body) for body in bodies))

    try:
        results = asyncio.run(all_at_once())
        assert [split for split, _ in results] == [split_for_store(b) for b in bodies]
        assert pool._started == 2
    finally:
        pool.close()


def test_a_cancelled_part_leaves_its_worker_usable(pool: SplitPool) -> None:
    body = to_bytes(ct_phantom(slices=1, size=256)[0])

    async def cancel_then_split() -> tuple[object, str]:
        first = asyncio.ensure_future(pool.split(body))
        waiting = asyncio.ensure_future(pool.split(body))  # waits for the only worker
        await asyncio.sleep(0.05)
        first.cancel()
        waiting.cancel()
        for task in (first, waiting):
            with pytest.raises(asyncio.CancelledError):
                await task
        return await pool.split(body)

    split, _ = asyncio.run(cancel_then_split())
    assert split == split_for_store(body)
    assert pool._started == 1


def test_a_loop_that_stops_mid_part_leaves_no_worker_out_of_step(pool: SplitPool) -> None:
    body = to_bytes(ct_phantom(slices=1, size=512)[0])

    async def leave_early() -> asyncio.Future[tuple[object, str]]:
        running = asyncio.ensure_future(pool.split(body))  # still running when the loop stops
        await asyncio.sleep(0.01)
        return running

    asyncio.run(leave_early())  # cancels the exchange: its worker cannot be trusted
    split, _ = pool.split_blocking(body)
    assert split == split_for_store(body)
    assert pool._started == 1
