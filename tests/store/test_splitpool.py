"""Splitting in worker processes: the same result as in-process, errors kept, deaths survived."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.store.conftest import to_bytes
from voxelhub.dicom.errors import DicomError
from voxelhub.dicom.model import HTJ2K_LOSSLESS
from voxelhub.dicom.synthetic import ct_phantom
from voxelhub.store.dicomweb.splitpool import SplitFailed, SplitPool
from voxelhub.store.dicomweb.splitting import content_hash, split_for_store


@pytest.fixture
def pool() -> Iterator[SplitPool]:
    made = SplitPool(1)
    yield made
    made.close()


def test_a_worker_splits_as_the_process_itself_does(pool: SplitPool) -> None:
    body = to_bytes(ct_phantom(slices=1, size=64)[0])
    split, digest = pool.split(bytearray(body))
    here = split_for_store(body)
    assert split == here
    assert digest == content_hash(here)
    assert split.frames_transfer_syntax == HTJ2K_LOSSLESS


def test_a_worker_reports_what_is_wrong_with_the_instance(pool: SplitPool) -> None:
    with pytest.raises(DicomError) as in_worker:
        pool.split(b"not dicom at all")
    with pytest.raises(DicomError) as here:
        split_for_store(b"not dicom at all")
    assert (in_worker.value.code, in_worker.value.message) == (here.value.code, here.value.message)


def test_a_dead_worker_fails_its_part_and_is_replaced(pool: SplitPool) -> None:
    body = to_bytes(ct_phantom(slices=1, size=32)[0])
    pool.split(body)
    worker = pool._idle.get()  # the only worker: kill it as a codec crash would
    worker.process.kill()
    worker.process.wait(timeout=30)
    pool._idle.put(worker)
    with pytest.raises(SplitFailed, match="stopped"):
        pool.split(body)
    split, _ = pool.split(body)
    assert split.keys.rows == 32
