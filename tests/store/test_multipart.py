"""multipart/related bodies: parts come out whole however the body is cut into chunks."""

from __future__ import annotations

import random

import pytest

from voxelhub.store.dicomweb.multipart import PartReader, write_parts


@pytest.mark.parametrize("chunk", [13, 4096, 1 << 20])
def test_written_parts_read_back_whatever_the_chunking(chunk: int) -> None:
    rng = random.Random(chunk)
    bodies = [rng.randbytes(n) for n in (0, 1, 3000, 70_000, 1_200_000, 5)]
    bodies.append(b"\r\n--almost-a-boundary\r\n" * 3)
    body = b"".join(write_parts((("application/dicom", b) for b in bodies), "b0und"))
    reader = PartReader("b0und", max_part_bytes=4 << 20)
    parts = []
    for at in range(0, len(body), chunk):
        parts.extend(reader.feed(body[at : at + chunk]))
    reader.close()
    assert [p.body for p in parts] == bodies
    assert {p.content_type for p in parts} == {"application/dicom"}
