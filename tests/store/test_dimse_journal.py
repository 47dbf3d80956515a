"""The C-STORE journal's segments: records written over prepared zeros read back as they
were written, and prepared segments nobody used leave nothing behind."""

from __future__ import annotations

import logging
import os
import struct
import time
from pathlib import Path

import pytest

from voxelhub.store.dimse.journal import Segment, Spares, leftovers, pending_records, read_segment

ORIGIN = b'{"calling_ae": "CT1"}'
PREPARED = 1 << 20


def _payloads(count: int) -> list[bytes]:
    return [os.urandom(1000 + 37 * index) for index in range(count)]


def test_records_over_prepared_zeros_read_back_and_the_zeros_end_the_segment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    segment = Segment.create(tmp_path, zeroed=PREPARED)
    payloads = _payloads(5)
    for payload in payloads:
        segment.append(ORIGIN, payload)
    segment.cancel_last()
    assert segment.path.stat().st_size == PREPARED  # written over the zeros, not appended
    with caplog.at_level(logging.WARNING):
        assert list(read_segment(segment.path)) == [
            *((ORIGIN, payload) for payload in payloads),
            (b"cancel", b""),
        ]
        data = segment.path.read_bytes()
        pending = [(o, data[start : start + n]) for o, start, n in pending_records(segment.path)]
        assert pending == [(ORIGIN, p) for p in payloads[:4]]
    assert "damaged" not in caplog.text


def test_a_record_torn_inside_a_prepared_segment_ends_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    segment = Segment.create(tmp_path, zeroed=PREPARED)
    first, torn = _payloads(2)
    segment.append(ORIGIN, first)
    end = segment.path.read_bytes().rstrip(b"\0")
    with segment.path.open("r+b") as file:  # the crash came while this one was written
        file.seek(len(end))
        file.write(struct.pack("<4sIQI", b"VXJ1", len(ORIGIN), len(torn), 0) + ORIGIN)
        file.write(torn[:100])
    with caplog.at_level(logging.WARNING):
        assert list(read_segment(segment.path)) == [(ORIGIN, first)]
    assert "damaged record" in caplog.text


def test_a_record_larger_than_the_prepared_zeros_grows_the_segment(tmp_path: Path) -> None:
    segment = Segment.create(tmp_path, zeroed=4096)
    big = os.urandom(10_000)
    segment.append(ORIGIN, b"small")
    segment.append(ORIGIN, big)
    assert segment.path.stat().st_size > 10_000
    assert list(read_segment(segment.path)) == [(ORIGIN, b"small"), (ORIGIN, big)]


def test_spares_are_prepared_ahead_and_removed_when_unused(tmp_path: Path) -> None:
    spares = Spares(tmp_path, ready=2, size=PREPARED)
    try:
        deadline = time.monotonic() + 30
        while spares.ready < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert spares.ready == 2
        taken = spares.take()
        assert taken.path.stat().st_size == PREPARED
        taken.append(ORIGIN, b"one")
        taken.seal()
        assert taken.path.exists()  # its record is not indexed yet
        taken.done()
        assert not taken.path.exists()
    finally:
        spares.close()
    assert leftovers(tmp_path) == []


def test_a_segment_is_taken_even_when_none_is_prepared_in_time(tmp_path: Path) -> None:
    spares = Spares(tmp_path, ready=1, size=PREPARED)
    try:
        segments = [spares.take() for _ in range(5)]  # faster than they are prepared
        for segment in segments:
            segment.append(ORIGIN, b"record")
            assert list(read_segment(segment.path)) == [(ORIGIN, b"record")]
    finally:
        spares.close()
    assert sorted(leftovers(tmp_path)) == sorted(s.path for s in segments)
