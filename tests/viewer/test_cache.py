"""The viewer's volume cache: shared loads, the byte budget, eviction, failures."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from voxelhub.viewer.cache import LoadState, VolumeCache, VolumeNotReady, VolumeSource

SHAPE = (4, 8, 8)
VOLUME_BYTES = 4 * 8 * 8 * 2


@pytest.fixture
def cache() -> Iterator[VolumeCache]:
    made = VolumeCache(budget_bytes=2 * VOLUME_BYTES, threads=2)
    yield made
    made.close()


def source(
    value: int, reads: Counter[int] | None = None, gate: threading.Event | None = None
) -> VolumeSource:
    def read(k: int) -> npt.NDArray[np.int16]:
        if gate is not None:
            gate.wait(10)
        if reads is not None:
            reads[k] += 1
        return np.full(SHAPE[1:], value * 10 + k, dtype=np.int16)

    return VolumeSource(SHAPE, np.dtype(np.int16), read)


def test_a_load_fills_every_slice_once_and_is_shared(cache: VolumeCache) -> None:
    reads: Counter[int] = Counter()
    gate = threading.Event()
    first = cache.load("a", source(1, reads, gate))
    second = cache.load("a", source(1, reads, gate))
    assert first.state is second.state is LoadState.LOADING
    assert first.total == 4
    with pytest.raises(VolumeNotReady, match="still loading"):
        cache.wait("a", timeout=0.05)
    gate.set()
    volume = cache.wait("a", timeout=10)
    assert volume[:, 0, 0].tolist() == [10, 11, 12, 13]
    assert reads == Counter({0: 1, 1: 1, 2: 1, 3: 1})
    status = cache.status("a")
    assert (status.state, status.loaded, status.total) == (LoadState.READY, 4, 4)
    assert cache.status("other").state is LoadState.ABSENT


def test_least_recently_used_volumes_leave_first_within_the_budget(cache: VolumeCache) -> None:
    for key in ("a", "b"):
        cache.load(key, source(1))
        cache.wait(key, timeout=10)
    assert cache.usage().used_bytes == 2 * VOLUME_BYTES
    assert cache.get("a") is not None  # a is now more recent than b
    cache.load("c", source(3))
    cache.wait("c", timeout=10)
    assert cache.status("b").state is LoadState.ABSENT
    assert cache.get("a") is not None and cache.get("c") is not None
    usage = cache.usage()
    assert usage.used_bytes <= usage.budget_bytes and usage.ready == 2


def test_a_volume_larger_than_the_budget_is_refused_with_the_setting_to_change(
    cache: VolumeCache,
) -> None:
    big = VolumeSource((64, 8, 8), np.dtype(np.int16), lambda k: np.zeros((8, 8), np.int16))
    status = cache.load("big", big)
    assert status.state is LoadState.ERROR
    assert status.message is not None and "VOXELHUB_VIEWER_CACHE_MB" in status.message
    assert cache.usage().used_bytes == 0


def test_a_failed_load_reports_why_and_can_be_retried(cache: VolumeCache) -> None:
    def broken(k: int) -> npt.NDArray[np.int16]:
        raise ValueError(f"frame {k} is corrupt")

    cache.load("a", VolumeSource(SHAPE, np.dtype(np.int16), broken))
    with pytest.raises(VolumeNotReady, match="corrupt"):
        cache.wait("a", timeout=10)
    assert cache.status("a").state is LoadState.ERROR
    assert cache.usage().used_bytes == 0
    cache.load("a", source(2))
    assert cache.wait("a", timeout=10)[3, 0, 0] == 23
